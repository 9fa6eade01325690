#!/usr/bin/env bash
# run.sh — runs every test program, prints one line per program (ok, FAIL or
# SKIP) and the closing line "N passed, N failed, N skipped".
#   tests/run.sh BUILD [ASAN_BUILD [FUZZ_BUILD]]
# BUILD: the C unit tests (unit/NAME), every tests/DIR/test_*.sh (DIR/NAME) and
# tests/DIR/test_*.py (DIR/NAME) against BUILD/moe. ASAN_BUILD: the same suite
# again (asan/...) against a build with AddressSanitizer + UBSan (pure-Python
# tests that run no moe code are not repeated). FUZZ_BUILD: every libFuzzer
# harness (fuzz/NAME) for MOE_FUZZ_SECONDS (default 7; two harnesses at a time) from its seed corpus.
#
# A test program that cannot run because something it needs is missing exits
# 77 after printing why as its last line: the runner prints SKIP NAME (why).
# Under CI=true every dependency is installed, so a skip is a failure unless
# tests/skips-allowed lists the test (a pattern and the reason, one a line).
# The output of every failed or skipped program is kept in BUILD/test-logs/.
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
[ $# -ge 1 ] || { echo "usage: tests/run.sh BUILD [ASAN_BUILD [FUZZ_BUILD]]" >&2; exit 2; }
passed=0; failed=0; skipped=0; failed_names=(); skipped_names=()
log_dir=$1/test-logs
rm -rf "$log_dir"; mkdir -p "$log_dir"

skip_allowed() {  # skip_allowed NAME: tests/skips-allowed lists it
  local pat _
  [ -f tests/skips-allowed ] || return 1
  while read -r pat _; do
    case $pat in ''|'#'*) continue ;; esac
    # shellcheck disable=SC2053
    [[ $1 == $pat ]] && return 0
  done < tests/skips-allowed
  return 1
}

run() {  # run NAME COMMAND...
  local name=$1; shift
  local t0=$SECONDS log="$log_dir/${name//\//_}.log" rc why
  "$@" >"$log" 2>&1
  rc=$?
  if [ $rc -eq 77 ]; then
    why=$(grep -v '^[[:space:]]*$' "$log" | tail -1 | cut -c1-200)
    if [ "${CI:-}" = true ] && ! skip_allowed "$name"; then
      failed=$((failed + 1)); failed_names+=("$name")
      printf 'FAIL %-40s (%ds) skipped under CI=true, where every dependency is installed: %s\n' \
        "$name" $((SECONDS - t0)) "$why"
    else
      skipped=$((skipped + 1)); skipped_names+=("$name")
      printf 'SKIP %s (%s)\n' "$name" "$why"
    fi
  elif [ $rc -eq 0 ]; then
    passed=$((passed + 1)); printf 'ok   %-40s (%ds)\n' "$name" $((SECONDS - t0))
    rm -f "$log"
  else
    failed=$((failed + 1)); failed_names+=("$name")
    printf 'FAIL %-40s (%ds, exit %d, log %s)\n' "$name" $((SECONDS - t0)) $rc "$log"
    sed 's/^/    /' "$log" | tail -40
  fi
}

# once FILE: the test is not repeated under the sanitizers. Its file says
# why on a line "# once: REASON" (e.g. it runs no moe code, or it is a long
# statistical or cross-program check whose moe code paths the sanitized suite
# already runs through lighter tests); docs/TESTING.md lists them.
once() { grep -q "^# once: " "$1"; }

suite() {  # suite BUILD LABEL
  local build=$1 label=$2 t dir
  for t in "$build"/tests/test_*; do
    [ -x "$t" ] && run "${label}unit/$(basename "$t")" "$t"
  done
  for t in tests/*/test_*.sh; do
    [ -f "$t" ] || continue
    [ -n "$label" ] && once "$t" && continue
    dir=$(basename "$(dirname "$t")")
    run "$label$dir/$(basename "$t" .sh)" bash "$t" "$build"
  done
  for t in tests/*/test_*.py; do
    [ -f "$t" ] || continue
    [ -n "$label" ] && once "$t" && continue
    dir=$(basename "$(dirname "$t")")
    run "$label$dir/$(basename "$t" .py)" /usr/bin/python3 "$t" "$build"
  done
}

suite "$1" ""
if [ -n "${2:-}" ]; then
  echo "-- the same suite under AddressSanitizer + UndefinedBehaviorSanitizer"
  suite "$2" "asan/"
fi
if [ -n "${3:-}" ]; then
  # Each harness is one thread: two run at once, each for the full time,
  # writing its output and exit code to files; then each is reported as a
  # test (its output replayed) in the usual way.
  echo "-- libFuzzer, ${MOE_FUZZ_SECONDS:-7}s per parser, two at a time"
  fuzz_out=$(mktemp -d)
  mkdir -p "$3/crashes"
  # shellcheck disable=SC2016
  for bin in "$3"/fuzz_*; do [ -x "$bin" ] && echo "$bin"; done |
    xargs -P 2 -I{} bash -c 'bin=$1; name=$(basename "$bin"); work=$(mktemp -d); t0=$SECONDS
      "$bin" -max_total_time="$2" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$3/crashes/$name-" \
        "$work" "tests/fuzz/seeds/$name" >"$4/$name.log" 2>&1; echo "$? $((SECONDS - t0))" >"$4/$name.rc"
      rm -rf "$work"' _ {} "${MOE_FUZZ_SECONDS:-7}" "$3" "$fuzz_out"
  for bin in "$3"/fuzz_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin")
    run "fuzz/$name" bash -c "cat '$fuzz_out/$name.log'; read -r rc secs < '$fuzz_out/$name.rc' || rc=1;
      echo \"(fuzzed for \$secs s)\"; exit \$rc"
  done
  rm -rf "$fuzz_out"
fi
echo
[ $failed -gt 0 ] && echo "failed: ${failed_names[*]}"
[ $skipped -gt 0 ] && echo "skipped: ${skipped_names[*]}"
[ $((failed + skipped)) -gt 0 ] && echo "logs: $log_dir/"
echo "$passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
