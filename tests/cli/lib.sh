# lib.sh — the helpers the shell tests share: sourced after the test sets
# $tmp (a scratch directory) and pass=0 fail=0. Not a test itself.
ok()   { pass=$((pass + 1)); echo "ok   $1"; }
bad()  { fail=$((fail + 1)); echo "FAIL $1"; }
# check NAME COMMAND...: ok when COMMAND succeeds
check() { local name=$1; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }
# expect_error NAME PATTERN COMMAND...: non-zero exit, one stderr line matching PATTERN
expect_error() {
  local name=$1 pat=$2; shift 2
  "$@" </dev/null >"$tmp/out" 2>"$tmp/err"; local rc=$?
  local lines; lines=$(grep -c . "$tmp/err")
  if [ $rc -ne 0 ] && [ "$lines" -eq 1 ] && grep -q -- "$pat" "$tmp/err"; then ok "$name"
  else bad "$name (rc $rc, $lines lines): $(head -3 "$tmp/err")"; fi
}
# tiny_tokens ROOT: train.tok (20,000 tokens) and valid.tok (3,000) of a
# 64-id vocabulary, seeded, in the current folder (the sweep tests' data)
tiny_tokens() {
  /usr/bin/python3 - "$1" <<'PY'
import sys
sys.path.insert(0, sys.argv[1] + "/tools")
import moe_files, numpy as np
moe_files.write_tokens("train.tok", np.random.default_rng(1).integers(0, 64, 20000), 64)
moe_files.write_tokens("valid.tok", np.random.default_rng(2).integers(0, 64, 3000), 64)
PY
}
