#!/usr/bin/env bash
# install-deps.sh — installs (idempotently) the Debian packages that building,
# testing and the demo need. Does nothing when everything is present.
set -euo pipefail
pkgs=(build-essential libdnnl-dev libopenblas-openmp-dev libpcre2-dev zlib1g-dev python3-torch python3-numpy clang libclang-rt-14-dev chromium
      openmpi-bin libopenmpi-dev libmicrohttpd-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm may come from another apt source (nodesource ships npm inside
# nodejs): only ask Debian for them when the commands are missing.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
