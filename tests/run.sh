#!/usr/bin/env bash
# run.sh — runs every test and prints one line per test program and a closing
# "N passed, N failed" line.
#   tests/run.sh BUILD [ASAN_BUILD [FUZZ_BUILD]]
# BUILD: the C unit tests, the CLI tests and the Python (PyTorch reference,
# corpus, end-to-end) tests against BUILD/moe. ASAN_BUILD: the same suite
# again against a build with AddressSanitizer + UBSan (pure-Python tests that
# run no moe code are not repeated). FUZZ_BUILD: every libFuzzer harness for
# MOE_FUZZ_SECONDS (default 10) from its seed corpus.
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
passed=0; failed=0; failed_names=()
log_dir=$(mktemp -d); trap 'rm -rf "$log_dir"' EXIT

run() {  # run NAME COMMAND...
  local name=$1; shift
  local t0=$SECONDS log="$log_dir/${name//\//_}.log"
  if "$@" >"$log" 2>&1; then
    passed=$((passed + 1)); printf 'ok   %-40s (%ds)\n' "$name" $((SECONDS - t0))
  else
    failed=$((failed + 1)); failed_names+=("$name")
    printf 'FAIL %-40s (%ds)\n' "$name" $((SECONDS - t0))
    sed 's/^/    /' "$log" | tail -40
  fi
}

suite() {  # suite BUILD LABEL
  local build=$1 label=$2 t
  for t in "$build"/tests/test_*; do
    [ -x "$t" ] && run "$label$(basename "$t")" "$t"
  done
  for t in tests/cli/test_*.sh tests/ref/test_*.sh; do
    [ -f "$t" ] && run "$label$(basename "$t" .sh)" bash "$t" "$build"
  done
  for t in tests/ref/test_*.py; do
    [ -f "$t" ] || continue
    # pure-Python checks run no moe code: once is enough
    [ -n "$label" ] && grep -q "^# runs no moe code" "$t" && continue
    run "$label$(basename "$t" .py)" /usr/bin/python3 "$t" "$build"
  done
}

suite "$1" ""
if [ -n "${2:-}" ]; then
  echo "-- the same suite under AddressSanitizer + UndefinedBehaviorSanitizer"
  suite "$2" "asan/"
fi
if [ -n "${3:-}" ]; then
  echo "-- libFuzzer, ${MOE_FUZZ_SECONDS:-10}s per parser"
  for bin in "$3"/fuzz_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin")
    run "fuzz/$name" bash -c "work=\$(mktemp -d); mkdir -p '$3/crashes'; '$bin' -max_total_time=${MOE_FUZZ_SECONDS:-10} -timeout=10 -rss_limit_mb=2048 -artifact_prefix='$3/crashes/$name-' \"\$work\" 'tests/fuzz/seeds/$name'; rc=\$?; rm -rf \"\$work\"; exit \$rc"
  done
fi
echo
[ $failed -gt 0 ] && echo "failed: ${failed_names[*]}"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
