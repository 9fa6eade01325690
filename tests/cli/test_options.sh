#!/usr/bin/env bash
# test_options.sh — the conventions every command shares (getopt_long:
# --opt=value, --version, unknown and missing-value messages), the messages a
# new user meets first (whole numbers, open ranges, typos, token files), and
# `train --resume RUN` finding its own data.
set -u
build=${1:-build}
moe="$build/moe"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
ok()   { pass=$((pass + 1)); echo "ok   $1"; }
bad()  { fail=$((fail + 1)); echo "FAIL $1"; }

# expect_error NAME PATTERN COMMAND...: non-zero exit, one stderr line matching PATTERN
expect_error() {
  local name=$1 pat=$2; shift 2
  "$@" </dev/null >"$tmp/out" 2>"$tmp/err"; local rc=$?
  local lines; lines=$(grep -c . "$tmp/err")
  if [ $rc -ne 0 ] && [ "$lines" -eq 1 ] && grep -q -- "$pat" "$tmp/err"; then ok "$name"
  else bad "$name (rc $rc, $lines lines): $(head -3 "$tmp/err")"; fi
}

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

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
