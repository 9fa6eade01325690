#!/usr/bin/env bash
# test_export_onnx.sh — `moe export --format onnx` as a user meets it (and,
# run again against the sanitizer build, the exporter under ASan/UBSan): a
# folder with model.onnx, config.json and tokenizer.json for a model of every
# router and FFN kind, in f32 and f16 (Lory in f32); bf16
# refused in one line naming it (and the aux-loss-free bias, by every
# format). tests/ref/test_onnx.py checks the graphs'
# numbers in onnxruntime.
set -u
build=${1:-build}
moe="$build/moe"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
. "$(dirname "$0")/lib.sh"

base='"vocab_size": 257, "hidden": 16, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 32,
 "max_seq_len": 16, "seq_len": 8, "batch_size": 2, "steps": 2, "n_experts": 4'
cases="dense:topk moe:topk moe:relu moe:hash moe:learned_hash moe:topp moe:sparsemixer
       moe:expert_choice cartesian:topk"
for c in $cases; do
  ffn=${c%%:*} router=${c#*:} name=${c/:/_}
  extra=', "top_k": 2'
  [ "$router" = topp ] && extra=', "top_k": 2, "n_shared_experts": 1'
  [ "$router" = hash ] && extra=', "top_k": 1'
  echo "{$base, \"ffn\": \"$ffn\", \"router\": \"$router\"$extra}" >"$tmp/$name.json"
  "$moe" init --config "$tmp/$name.json" --out "$tmp/$name" >/dev/null 2>"$tmp/err" || { bad "init_$name: $(head -2 "$tmp/err")"; continue; }
  for t in f32 f16; do
    out="$tmp/$name.$t.onnx"
    if "$moe" export --format onnx --type $t --out "$out" "$tmp/$name" >"$tmp/out" 2>"$tmp/err" &&
       [ -s "$out/model.onnx" ] && [ -s "$out/config.json" ] && [ -s "$out/tokenizer.json" ] &&
       grep -q '"num_hidden_layers": 2' "$out/config.json" && grep -q "present.1.value" "$out/model.onnx"; then
      ok "export_${name}_$t"
    else
      bad "export_${name}_$t: $(head -2 "$tmp/err")"
    fi
  done
  # ModelProto starts with ir_version 8 (field 1, varint)
  check "ir_version_$name" [ "$(head -c 2 "$tmp/$name.f32.onnx/model.onnx" | od -An -tx1 | tr -d ' ')" = 0808 ]
done
s32=$(stat -c %s "$tmp/moe_topk.f32.onnx/model.onnx") s16=$(stat -c %s "$tmp/moe_topk.f16.onnx/model.onnx")
check f16_smaller [ "$s16" -lt "$s32" ]

echo "{$base, \"ffn\": \"lory\", \"lory_segment\": 4}" >"$tmp/lory.json"
"$moe" init --config "$tmp/lory.json" --out "$tmp/lory" >/dev/null || bad init_lory
if "$moe" export --format onnx --out "$tmp/l.onnx" "$tmp/lory" >/dev/null; then ok export_lory; else bad export_lory; fi
expect_error bf16_refused "expected type f32 or f16, found bf16" \
  "$moe" export --format onnx --type bf16 --out "$tmp/b.onnx" "$tmp/moe_topk"
# the aux-loss-free selection bias and sigmoid scores have no slot in GGUF or HF
echo "{$base, \"ffn\": \"moe\", \"router\": \"topk\", \"top_k\": 2, \"aux_free_bias\": true}" >"$tmp/aux_free.json"
"$moe" init --config "$tmp/aux_free.json" --out "$tmp/aux_free" >/dev/null || bad init_aux_free
echo "{$base, \"ffn\": \"moe\", \"router\": \"topk\", \"top_k\": 2, \"scoring_func\": \"sigmoid\"}" >"$tmp/sigmoid.json"
"$moe" init --config "$tmp/sigmoid.json" --out "$tmp/sigmoid" >/dev/null || bad init_sigmoid
echo "{$base, \"ffn\": \"moe\", \"router\": \"topk\", \"top_k\": 2, \"n_copy_experts\": 1}" >"$tmp/zc.json"
"$moe" init --config "$tmp/zc.json" --out "$tmp/zc" >/dev/null || bad init_zc
for f in gguf hf; do
  expect_error "aux_free_refused_$f" "aux_free_bias" "$moe" export --format $f --out "$tmp/af.$f" "$tmp/aux_free"
  expect_error "sigmoid_refused_$f" "sigmoid" "$moe" export --format $f --out "$tmp/sg.$f" "$tmp/sigmoid"
done
for f in gguf hf; do
  expect_error "zero_computation_refused_$f" "zero-computation experts" "$moe" export --format $f --out "$tmp/zc.$f" "$tmp/zc"
done
# the ONNX graph computes the selection bias, sigmoid scores and MoE++'s
# zero-computation experts (tests/ref/test_onnx.py: their numbers)
for m in aux_free sigmoid zc; do
  if "$moe" export --format onnx --out "$tmp/$m.onnx" "$tmp/$m" >/dev/null; then ok "export_onnx_$m"; else bad "export_onnx_$m"; fi
done
expect_error bad_format "expected gguf, hf or onnx" "$moe" export --format onx --out "$tmp/x" "$tmp/moe_topk"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
