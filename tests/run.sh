#!/usr/bin/env bash
# run.sh — runs every test: the C unit tests, the CLI tests and the PyTorch
# reference tests; prints one line per test program and a closing
# "N passed, N failed" line. Usage: tests/run.sh BUILD_DIR
set -u
build=${1:-build}
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
passed=0; failed=0; failed_names=()
log_dir=$(mktemp -d)

run() {  # run NAME COMMAND...
  local name=$1; shift
  local t0=$SECONDS
  if "$@" >"$log_dir/$name.log" 2>&1; then
    passed=$((passed + 1)); printf 'ok   %-28s (%ds)\n' "$name" $((SECONDS - t0))
  else
    failed=$((failed + 1)); failed_names+=("$name")
    printf 'FAIL %-28s (%ds)\n' "$name" $((SECONDS - t0))
    sed 's/^/    /' "$log_dir/$name.log" | tail -40
  fi
}

for t in "$build"/tests/test_*; do
  [ -x "$t" ] && run "$(basename "$t")" "$t"
done
for t in tests/cli/test_*.sh; do
  [ -f "$t" ] && run "$(basename "$t" .sh)" bash "$t" "$build"
done
for t in tests/ref/test_*.py; do
  [ -f "$t" ] && run "$(basename "$t" .py)" /usr/bin/python3 "$t" "$build"
done
for t in tests/ref/test_*.sh; do
  [ -f "$t" ] && run "$(basename "$t" .sh)" bash "$t" "$build"
done
rm -rf "$log_dir"
echo
[ $failed -gt 0 ] && echo "failed: ${failed_names[*]}"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
