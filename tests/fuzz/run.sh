#!/usr/bin/env bash
# run.sh — runs every libFuzzer harness for SECONDS from its seed corpus
# (tests/fuzz/seeds/NAME/); a crash, leak or sanitizer finding fails it and
# leaves the reproducer in build/fuzz/crashes/. Usage: run.sh FUZZ_BUILD SECONDS
set -u
dir=${1:-build/fuzz}; secs=${2:-10}
cd "$(dirname "$0")/../.."
pass=0; fail=0
mkdir -p "$dir/crashes"
for bin in "$dir"/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin"); work=$(mktemp -d)
  if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$dir/crashes/$name-" "$work" "tests/fuzz/seeds/$name" >"$work.log" 2>&1; then
    pass=$((pass + 1))
    echo "ok   $name ($(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work.log" | grep -o '[0-9]*$') runs in ${secs}s)"
  else
    fail=$((fail + 1)); echo "FAIL $name"; grep -E "ERROR|SUMMARY|Test unit written" "$work.log" | head -5 | sed 's/^/    /'
  fi
  rm -rf "$work" "$work.log"
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
