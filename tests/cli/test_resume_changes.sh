#!/usr/bin/env bash
# test_resume_changes.sh — `moe train --resume` with settings that differ
# from the run's (issue 26.7): each difference is named on stderr with what it
# does (the schedule recomputed, with the lr it gives; more rows a step;
# another thread count); a changed --seq, --seed or --no-shuffle, which would
# point the data position at other tokens, is refused with one line naming
# --model; the same settings say nothing.
set -u
build=${1:-build}
moe="$build/moe"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
. "$(dirname "$0")/lib.sh"

cat >"$tmp/cfg.json" <<'JSON'
{"vocab_size": 40, "hidden": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1,
 "max_seq_len": 16, "seq_len": 16, "batch_size": 2, "steps": 40, "lr": 3e-4, "warmup": 4,
 "threads": 1, "checkpoint_every": 20}
JSON
/usr/bin/python3 - "$tmp" <<'PY'
import sys; sys.path.insert(0, "tools")
import moe_files
moe_files.write_tokens(sys.argv[1] + "/data.tok", [i * 7 % 40 for i in range(3000)], 40)
PY
"$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out "$tmp/run" >/dev/null 2>&1 || bad "setup: train"
cp -r "$tmp/run" "$tmp/same"
"$moe" train --resume "$tmp/same" --steps 40 >/dev/null 2>"$tmp/err"
check same_settings_say_nothing bash -c "! grep -q 'resuming with' '$tmp/err'"

# the issue's case: 40 steps done, --steps 60 restarts the cosine from a higher lr
lr41=$(/usr/bin/python3 -c "
import math
lr, w, S, s = 3e-4, 4, 60, 40
print('%.3e' % (lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - w) / (S - w))))))")
cp -r "$tmp/run" "$tmp/longer"
"$moe" train --resume "$tmp/longer" --steps 60 >/dev/null 2>"$tmp/err" || bad "resume --steps 60"
check steps_named grep -q "resuming with steps 60, .*(the run: 40, .*learning-rate schedule is recomputed.*lr of step 41 is $lr41.*ended at step 40" "$tmp/err"
cp -r "$tmp/run" "$tmp/batch"
"$moe" train --resume "$tmp/batch" --steps 41 --batch 4 --threads 2 >/dev/null 2>"$tmp/err" || bad "resume --batch 4"
check batch_named grep -q "batch_size 4 x grad_accum 1 (the run: 2 x 1): each step now reads 4 rows; the data goes on from row 80 " "$tmp/err"
check threads_named grep -q "threads 2 (the run: 1.*not be bit-identical" "$tmp/err"
check schedule_named_for_steps grep -q "resuming with steps 41" "$tmp/err"

expect_error seq_refused "\-\-seq 8, but the run has seq_len 16.*--model RUN --out NEWDIR" \
  "$moe" train --resume "$tmp/run" --steps 60 --seq 8
expect_error seed_refused "\-\-seed 3, but the run has seed 1" "$moe" train --resume "$tmp/run" --steps 60 --seed 3
expect_error no_shuffle_refused "\-\-no-shuffle, but the run shuffles" "$moe" train --resume "$tmp/run" --steps 60 --no-shuffle
check refused_left_run_at_40 test -d "$tmp/run/checkpoints/step-00000040" -a ! -d "$tmp/run/checkpoints/step-00000060"

echo "# $pass passed, $fail failed"
[ $fail -eq 0 ]
