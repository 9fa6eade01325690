#!/usr/bin/env bash
# test_cli.sh — the command line as a user meets it: --help everywhere, a
# small init / train / score round, and every kind of bad input refused with
# a non-zero exit and one clear line naming the problem.
set -u
build=${1:-build}
moe="$build/moe"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
. "$(dirname "$0")/lib.sh"

for c in init train score generate serve prepare tokenizer; do
  if "$moe" $c --help | grep -q usage; then ok "help_$c"; else bad "help_$c"; fi
done
expect_error unknown_command "unknown command" "$moe" frobnicate

cat >"$tmp/cfg.json" <<'JSON'
{"vocab_size": 40, "hidden": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1,
 "max_seq_len": 16, "seq_len": 16, "batch_size": 2, "steps": 3}
JSON
/usr/bin/python3 - "$tmp" <<'PY'
import sys; sys.path.insert(0, "tools")
import moe_files
moe_files.write_tokens(sys.argv[1] + "/data.tok", [i * 7 % 40 for i in range(500)], 40)
PY

# the happy path
if "$moe" init --config "$tmp/cfg.json" --out "$tmp/m" >/dev/null && [ -f "$tmp/m/model.safetensors" ]; then ok init; else bad init; fi
if "$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out "$tmp/run" 2>/dev/null \
   && [ "$(wc -l <"$tmp/run/metrics.jsonl")" -eq 3 ]; then ok train_writes_metrics; else bad train_writes_metrics; fi
echo "1 2 3 4 5" >"$tmp/ids.txt"
if "$moe" score --model "$tmp/run" --tokens "$tmp/ids.txt" | /usr/bin/python3 -c '
import json, sys; d = json.load(sys.stdin)
assert d["tokens"] == 5 and len(d["logprobs"]) == 4 and all(x < 0 for x in d["logprobs"])
assert abs(d["mean_loss"] + sum(d["logprobs"]) / 4) < 1e-9'; then ok score_json; else bad score_json; fi
if "$moe" train --resume "$tmp/run" --data "$tmp/data.tok" --steps 5 2>/dev/null \
   && [ "$(wc -l <"$tmp/run/metrics.jsonl")" -eq 5 ]; then ok resume_extends_run; else bad resume_extends_run; fi
# --model DIR: fresh optimiser, but ReMoE's lambda goes on from the checkpoint's
sed 's/"steps": 3/"steps": 6, "ffn": "moe", "router": "relu", "n_experts": 4, "top_k": 1/' \
  "$tmp/cfg.json" >"$tmp/relu.json"
if "$moe" train --config "$tmp/relu.json" --data "$tmp/data.tok" --out "$tmp/relu" 2>/dev/null \
   && "$moe" train --model "$tmp/relu" --data "$tmp/data.tok" --out "$tmp/relu2" --steps 1 2>/dev/null \
   && /usr/bin/python3 - "$tmp" <<'PY'
import glob, json, sys
t = sys.argv[1]
saved = json.load(open(sorted(glob.glob(t + "/relu/checkpoints/step-*"))[-1] + "/trainer_state.json"))["lambda"]
used = json.loads(open(t + "/relu2/metrics.jsonl").readline())["lambda"]
assert saved > 1e-8 * 1.1 and abs(used - saved) <= 1e-6 * saved, (saved, used)
PY
then ok model_keeps_lambda; else bad model_keeps_lambda; fi

# bad input: missing files
expect_error missing_config "nope.json" "$moe" train --config "$tmp/nope.json" --data "$tmp/data.tok" --out "$tmp/x"
expect_error missing_data "nope.tok" "$moe" train --config "$tmp/cfg.json" --data "$tmp/nope.tok" --out "$tmp/x"
expect_error missing_model "not a model directory" "$moe" score --model "$tmp/nope" --tokens "$tmp/ids.txt"
# malformed JSON, unknown key, out of range, wrong type
echo '{"hidden": 16,' >"$tmp/bad.json"
expect_error malformed_json "bad.json:2:1: expected" "$moe" init --config "$tmp/bad.json" --out "$tmp/x"
echo '{"hiden": 16}' >"$tmp/bad.json"
expect_error unknown_key "'hiden'" "$moe" init --config "$tmp/bad.json" --out "$tmp/x"
echo '{"n_layers": 0}' >"$tmp/bad.json"
expect_error out_of_range "'n_layers'" "$moe" init --config "$tmp/bad.json" --out "$tmp/x"
echo '{"lr": "fast"}' >"$tmp/bad.json"
expect_error wrong_type "'lr'" "$moe" init --config "$tmp/bad.json" --out "$tmp/x"
expect_error bad_flag_value "--steps" "$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out "$tmp/x" --steps many
expect_error flag_out_of_range "'steps'" "$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out "$tmp/x" --steps 0
expect_error bad_precision "--precision: expected auto, fp32 or bf16, found 'fp16'" "$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out "$tmp/x" --precision fp16
echo '{"precision": "fp16"}' >"$tmp/bad_prec.json"
expect_error bad_precision_key "'precision'" "$moe" train --config "$tmp/bad_prec.json" --data "$tmp/data.tok" --out "$tmp/x"
# precision bf16 where the CPU cannot (forced): scores like fp32, says so once
"$moe" score --model "$tmp/run" --tokens "$tmp/ids.txt" --precision fp32 >"$tmp/s32.json" 2>/dev/null
MOE_NO_BF16=1 "$moe" score --model "$tmp/run" --tokens "$tmp/ids.txt" --precision bf16 >"$tmp/s16.json" 2>"$tmp/err"
if cmp -s "$tmp/s32.json" "$tmp/s16.json" && grep -q "running fp32" "$tmp/err"; then ok bf16_fallback_score
else bad "bf16_fallback_score: $(head -2 "$tmp/err")"; fi
# the default precision, auto: train says what it chose and why, and the
# checkpoint records the choice (bf16 where the CPU has bf16 dot products:
# unit/test_bf16 checks the choice against the CPU); MOE_NO_BF16=1 makes it
# fp32; an explicit fp32 is fp32
prec_of() { /usr/bin/python3 -c 'import glob, json, sys
print(json.load(open(sorted(glob.glob(sys.argv[1] + "/checkpoints/step-*"))[-1] + "/config.json"))["precision"])' "$1"; }
"$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out "$tmp/pa" --steps 1 >/dev/null 2>"$tmp/err"
said=$(sed -n 's/^moe train: precision \(bf16\|fp32\) (auto: .*)$/\1/p' "$tmp/err")
if [ -n "$said" ] && [ "$(prec_of "$tmp/pa")" = "$said" ]; then ok precision_auto_recorded
else bad "precision_auto_recorded: said '$said', recorded '$(prec_of "$tmp/pa")': $(head -2 "$tmp/err")"; fi
MOE_NO_BF16=1 "$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out "$tmp/pn" --steps 1 >/dev/null 2>"$tmp/err"
if grep -q "^moe train: precision fp32 (auto: MOE_NO_BF16 is set)$" "$tmp/err" && [ "$(prec_of "$tmp/pn")" = fp32 ]
then ok precision_auto_no_bf16; else bad "precision_auto_no_bf16: $(head -2 "$tmp/err")"; fi
"$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out "$tmp/pf" --steps 1 --precision fp32 >/dev/null 2>"$tmp/err"
if grep -q "^moe train: precision fp32 (asked for by --precision)$" "$tmp/err" && [ "$(prec_of "$tmp/pf")" = fp32 ]
then ok precision_fp32_stays; else bad "precision_fp32_stays: $(head -2 "$tmp/err")"; fi
# a truncated token file
head -c 100 "$tmp/data.tok" >"$tmp/trunc.tok"
expect_error truncated_tokens "trunc.tok: truncated" "$moe" train --config "$tmp/cfg.json" --data "$tmp/trunc.tok" --out "$tmp/x"
# token ids outside the model's vocabulary
echo "1 2 99" >"$tmp/big.txt"
expect_error score_bad_id "outside the model's vocabulary" "$moe" score --model "$tmp/run" --tokens "$tmp/big.txt"
echo "1 two 3" >"$tmp/word.txt"
expect_error score_not_id "word.txt: token 2" "$moe" score --model "$tmp/run" --tokens "$tmp/word.txt"
# a corrupt checkpoint
head -c 1000 "$tmp/m/model.safetensors" >"$tmp/m/cut" && mv "$tmp/m/cut" "$tmp/m/model.safetensors"
expect_error truncated_model "model.safetensors" "$moe" score --model "$tmp/m" --tokens "$tmp/ids.txt"

# the data side: prepare and tokenizer refuse bad input with the file and line
printf '{"text": "a b c", "domain": "x"}\n{"text": "d e f" "domain": "y"}\n' >"$tmp/bad.jsonl"
expect_error prepare_bad_jsonl "bad.jsonl:2" "$moe" prepare --input "$tmp/bad.jsonl" --out "$tmp/p.tok"
printf '{"txt": "a"}\n' >"$tmp/notext.jsonl"
expect_error prepare_missing_text "notext.jsonl:1: missing \"text\"" "$moe" prepare --input "$tmp/notext.jsonl" --out "$tmp/p.tok"
expect_error prepare_missing_input "nothere.jsonl" "$moe" prepare --input "$tmp/nothere.jsonl" --out "$tmp/p.tok"
expect_error prepare_missing_tokenizer "no.tok" "$moe" prepare --input "$tmp/notext.jsonl" --tokenizer "$tmp/no.tok" --out "$tmp/p.tok"
expect_error tokenizer_vocab_range "--vocab" "$moe" tokenizer train --input "$tmp/bad.jsonl" --vocab 100 --out "$tmp/t.tok"
printf 'moe-tokenizer 1 bpe 300\npattern gpt2\neot 299\nmerges 43\n32 32\n' >"$tmp/broken.tokenizer"
expect_error tokenizer_file_truncated "broken.tokenizer" "$moe" tokenizer encode --tokenizer "$tmp/broken.tokenizer" --input "$tmp/ids.txt"
expect_error tokenizer_bad_pattern "--pattern: expected gpt2, r50k, cl100k, o200k or llama3, found 'cl200k'" \
  "$moe" tokenizer encode --tokenizer bytes --pattern cl200k --input "$tmp/bad.jsonl"
expect_error tokenizer_pattern_not_ranks "only a rank table takes another pattern" "$moe" tokenizer info --tokenizer bytes --pattern o200k
# a rank file that is no known table splits with gpt2 unless --pattern / convert say otherwise
/usr/bin/python3 -c 'import base64; print("".join("%s %d\n" % (base64.b64encode(bytes([i])).decode(), i) for i in range(256)), end="")' >"$tmp/bytes.tiktoken"
if "$moe" tokenizer info --tokenizer "$tmp/bytes.tiktoken" | grep -qx 'pattern gpt2' &&
   "$moe" tokenizer convert --tokenizer "$tmp/bytes.tiktoken" --pattern o200k --out "$tmp/o.tok" >/dev/null &&
   "$moe" tokenizer info --tokenizer "$tmp/o.tok" | grep -qx 'pattern o200k'; then ok tokenizer_convert_pattern
else bad tokenizer_convert_pattern; fi
printf '{"text": "one two", "domain": "a"}\n{"text": "three", "domain": "b"}\n' >"$tmp/good.jsonl"
if "$moe" prepare --input "$tmp/good.jsonl" --out "$tmp/good.tok" >/dev/null 2>&1 && /usr/bin/python3 - "$tmp/good.tok" <<'PY'
import sys; sys.path.insert(0, "tools"); import moe_files
t = moe_files.read_tokens(sys.argv[1])
assert t["domains"] == ["a", "b"] and list(t["doc_start"]) == [0, 8] and t["vocab_size"] == 257
assert bytes(int(i) for i in t["ids"][:7]) == b"one two" and t["ids"][7] == 256
PY
then ok prepare_bytes_with_domains; else bad prepare_bytes_with_domains; fi

# resource errors: an output path that cannot be a directory, a run too big
# for memory (refused before it starts), and a full disk while checkpointing
expect_error unwritable_out "cannot create directory /dev/null" "$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out /dev/null/run
expect_error memory_refused "GiB are available" "$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out "$tmp/big" --batch 1000000
( trap '' XFSZ; ulimit -f 24; exec "$moe" train --resume "$tmp/run" --data "$tmp/data.tok" --steps 8 ) >/dev/null 2>"$tmp/err"
rc=$?
if [ $rc -ne 0 ] && grep -q "not written (earlier ones are intact)" "$tmp/err" \
   && "$moe" score --model "$tmp/run" --tokens "$tmp/ids.txt" >/dev/null 2>&1 \
   && [ -d "$tmp/run/checkpoints/step-00000005" ] && [ ! -e "$tmp/run/checkpoints/step-00000008" ]; then
  ok disk_full_keeps_last_checkpoint
else bad "disk_full_keeps_last_checkpoint (rc $rc): $(tail -1 "$tmp/err")"; fi

# the docs stay true: docs/CONFIG.md's table is what the code documents
if "$moe" config --doc | diff -q - <(sed -n '/^| key |/,$p' docs/CONFIG.md) >/dev/null; then ok config_doc_current
else bad "config_doc_current (regenerate the table of docs/CONFIG.md with 'moe config --doc')"; fi
scripts/gen-cli-doc.sh "$build" "$tmp/CLI.md"
if cmp -s "$tmp/CLI.md" docs/CLI.md; then ok cli_doc_current
else bad "cli_doc_current (regenerate docs/CLI.md with scripts/gen-cli-doc.sh)"; fi
if "$moe" config --defaults | "$moe" config --check /dev/stdin >/dev/null; then ok config_defaults_valid; else bad config_defaults_valid; fi
# every model config shown in README.md and docs/ (a JSON block with model
# keys) passes moe config --check, as the SWEEP.md grid passes test_sweep
/usr/bin/python3 - "$tmp/doc-configs" <<'PY'
import glob, json, os, re, sys
os.makedirs(sys.argv[1])
n = 0
for f in ["README.md"] + sorted(glob.glob("docs/*.md")):
    for m in re.finditer(r"```json\n(.*?)```", open(f).read(), re.S):
        try:
            j = json.loads(m.group(1))
        except ValueError:
            continue
        if isinstance(j, dict) and {"vocab_size", "ffn", "router"} & set(j):
            n += 1
            open(os.path.join(sys.argv[1], f"{os.path.basename(f)}-{n}.json"), "w").write(m.group(1))
PY
doc_ok=1; doc_n=0
for c in "$tmp"/doc-configs/*.json; do
  doc_n=$((doc_n + 1)); "$moe" config --check "$c" >/dev/null 2>&1 || { doc_ok=0; echo "  $c: $("$moe" config --check "$c" 2>&1 | tail -1)"; }
done
if [ $doc_ok -eq 1 ] && [ $doc_n -ge 1 ]; then ok "doc_configs_valid ($doc_n)"; else bad doc_configs_valid; fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
