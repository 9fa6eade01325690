#!/usr/bin/env bash
# test_options.sh — the conventions every command shares (getopt_long:
# --opt=value, --version, unknown and missing-value messages), the messages a
# new user meets first (whole numbers, open ranges, typos, token files), and
# `train --resume RUN` finding its own data.
set -u
build=${1:-build}
moe="$(realpath "$build")/moe"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
. "$(dirname "$0")/lib.sh"

# ---- config messages: open ends, whole numbers, did you mean
echo '{"beta2": 1}' >"$tmp/c.json"
expect_error config_open_range "key 'beta2': expected a number in \[0, 1), found 1$" "$moe" config --check "$tmp/c.json"
echo '{"beta2": 0.9999999999}' >"$tmp/c.json"
if "$moe" config --check "$tmp/c.json" >/dev/null 2>&1; then ok config_open_range_inside; else bad config_open_range_inside; fi
echo '{"n_layers": 2.5}' >"$tmp/c.json"
expect_error config_whole_number "key 'n_layers': expected a whole number in \[1, 1024\], found 2.5" "$moe" config --check "$tmp/c.json"
echo '{"n_expert": 4}' >"$tmp/c.json"
expect_error config_did_you_mean "unknown config key 'n_expert': did you mean 'n_experts'?" "$moe" config --check "$tmp/c.json"
echo '{"zzzz": 4}' >"$tmp/c.json"
expect_error config_no_guess "unknown config key 'zzzz' (see docs/CONFIG.md)" "$moe" config --check "$tmp/c.json"
# written JSON: shortest exact numbers
if "$moe" config --defaults | grep -q '"beta1": 0.9,' && ! "$moe" config --defaults | grep -q '0000000'; then
  ok config_json_shortest; else bad "config_json_shortest: $("$moe" config --defaults | grep beta1)"; fi

# ---- one option mechanism everywhere (getopt_long)
want=$(sed -n 's/^#define MOE_VERSION "\(.*\)"/\1/p' include/moe/util/version.h)
if [ -n "$want" ] && [ "$("$moe" --version)" = "moe $want" ] && [ "$("$moe" version)" = "moe $want" ]; then
  ok version; else bad "version: $("$moe" --version 2>&1)"; fi
for c in config init train score generate prepare "tokenizer train" "tokenizer encode" "tokenizer decode" sweep \
         "tokenizer info" "tokenizer convert" eval analyze report export import serve; do
  n=${c// /_}
  expect_error "unknown_long_$n" "^moe $c: unknown option '--bogus-flag'" "$moe" $c --bogus-flag
  expect_error "unknown_short_$n" "^moe $c: unknown option '-x'" "$moe" $c -x
done
for c in "init --out" "train --data" "score --model" "generate --model" "prepare --out" "tokenizer train --out" \
         "tokenizer encode --tokenizer" "tokenizer info --pattern" "eval --model" "analyze --data" "report --out" \
         "config --check" "config --params" "export --format" "import --out" "init --upcycle" "sweep --grid" \
         "serve --port"; do
  set -- $c; opt=${!#}; n=${c// /_}
  expect_error "missing_value_$n" "^moe ${c% *}: option $opt needs a value$" "$moe" $c
done
expect_error flag_takes_no_value "option --profile takes no value" "$moe" train --profile=yes
expect_error ambiguous_prefix "option '--t' is ambiguous: --tokenizer, --threads" "$moe" train --t 3
# a unique prefix is no abbreviation of the option (glibc took --st as --steps)
expect_error abbreviation_refused "unknown option '--st' (did you mean --steps?)" "$moe" train --st 3 --config x
expect_error abbreviation_with_equals_refused "unknown option '--mod' (did you mean --model?)" "$moe" eval --mod=x --data y
expect_error unexpected_positional "unexpected argument 'stray'" "$moe" score --model x stray
expect_error serve_port_range "option --port: expected a whole number in .0, 65535., found .70000." "$moe" serve --model x --port 70000
expect_error serve_host_ipv4 "option --host: expected an IPv4 address such as 127.0.0.1, found 'nowhere'" \
  "$moe" serve --model x --host nowhere
expect_error did_you_mean_option "unknown option '--temprature' (did you mean --temperature?)" "$moe" generate --temprature 1

cat >"$tmp/cfg.json" <<'JSON'
{"vocab_size": 40, "hidden": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1,
 "max_seq_len": 16, "seq_len": 16, "batch_size": 2, "steps": 3}
JSON
/usr/bin/python3 - "$tmp" <<'PY'
import sys; sys.path.insert(0, "tools")
import moe_files
moe_files.write_tokens(sys.argv[1] + "/data.tok", [i * 7 % 40 for i in range(500)], 40)
PY
# --opt=value, and "--" before a positional argument
if "$moe" init --config="$tmp/cfg.json" --out="$tmp/m" --seed=3 >/dev/null && [ -f "$tmp/m/model.safetensors" ]; then
  ok equals_value_init; else bad equals_value_init; fi
echo "1 2 3 4" >"$tmp/ids.txt"
if "$moe" score --model="$tmp/m" --tokens="$tmp/ids.txt" | grep -q '"tokens": 4'; then ok equals_value_score; else bad equals_value_score; fi
expect_error steps_not_a_number "moe train: option --steps: expected a whole number, found 'abc'$" \
  "$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out "$tmp/x" --steps abc
expect_error steps_out_of_range "moe train: option --steps: key 'steps': expected a whole number in \[1, 1000000000\], found 0$" \
  "$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out "$tmp/x" --steps=0
expect_error lr_not_a_number "option --lr: expected a number, found 'fast'" \
  "$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out "$tmp/x" --lr fast
if "$moe" train --config="$tmp/cfg.json" --data="$tmp/data.tok" --out="$tmp/run" --steps=2 --steps=4 2>/dev/null \
   && [ "$(wc -l <"$tmp/run/metrics.jsonl")" -eq 4 ]; then ok train_equals_last_wins; else bad train_equals_last_wins; fi
printf 'ab' >"$tmp/a.txt"; printf 'cd' >"$tmp/b.txt"
if "$moe" prepare --input "$tmp/a.txt" "$tmp/b.txt" --out="$tmp/ab.tok" >/dev/null 2>&1 && /usr/bin/python3 - "$tmp/ab.tok" <<'PY'
import sys; sys.path.insert(0, "tools"); import moe_files
t = moe_files.read_tokens(sys.argv[1])
assert bytes(int(i) for i in t["ids"] if i < 256) == b"abcd", t["ids"]
PY
then ok prepare_inputs_in_order; else bad prepare_inputs_in_order; fi

# ---- token-file errors in train name the file
/usr/bin/python3 - "$tmp" <<'PY'
import sys; sys.path.insert(0, "tools")
import moe_files
t = sys.argv[1]
moe_files.write_tokens(t + "/short.tok", list(range(10)), 40)
moe_files.write_tokens(t + "/wide.tok", [i % 60 for i in range(500)], 60)
moe_files.write_tokens(t + "/other.tok", [i * 3 % 40 for i in range(500)], 40)
PY
expect_error short_tokens_named "short.tok: 10 tokens, fewer than one sequence of 16 + 1" \
  "$moe" train --config "$tmp/cfg.json" --data "$tmp/short.tok" --out "$tmp/x"
expect_error wide_tokens_named "wide.tok: its vocabulary (60 ids) is larger than the model's vocab_size (40)" \
  "$moe" train --config "$tmp/cfg.json" --data "$tmp/wide.tok" --out "$tmp/x"

# ---- --resume RUN finds the data it recorded, and knows it again
cp "$tmp/data.tok" "$tmp/d2.tok"
"$moe" train --config "$tmp/cfg.json" --data "$tmp/d2.tok" --out "$tmp/r" 2>/dev/null || bad resume_setup
if (cd / && "$moe" train --resume "$tmp/r" --steps 5 2>"$tmp/err") && [ "$(wc -l <"$tmp/r/metrics.jsonl")" -eq 5 ] \
   && grep -q "resuming on the run's data, .*d2.tok" "$tmp/err"; then ok resume_without_data
else bad "resume_without_data: $(tail -1 "$tmp/err")"; fi
expect_error resume_other_data "other.tok is not the data this run was trained on: the run recorded .*d2.tok (1064 bytes, CRC-32 [0-9a-f]*), this file has 1064 bytes" \
  "$moe" train --resume "$tmp/r" --steps 6 --data "$tmp/other.tok"
cp "$tmp/other.tok" "$tmp/d2.tok"   # same size, other tokens, same place
expect_error resume_changed_data "d2.tok is not the data this run was trained on" "$moe" train --resume "$tmp/r" --steps 6
cp "$tmp/data.tok" "$tmp/d2.tok" && mv "$tmp/d2.tok" "$tmp/moved.tok"
expect_error resume_moved_data "the run was trained on .*d2.tok, which is no longer there (No such file or directory): give --data FILE" \
  "$moe" train --resume "$tmp/r" --steps 6
if "$moe" train --resume "$tmp/r" --steps 6 --data="$tmp/moved.tok" 2>/dev/null \
   && [ "$(wc -l <"$tmp/r/metrics.jsonl")" -eq 6 ]; then ok resume_moved_explicit; else bad resume_moved_explicit; fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
