#!/usr/bin/env bash
# `tandem privacy epsilon|sigma` end to end: Opacus's published figures in both output forms, a
# calibrated sigma that meets its target, and bad input -> one "tandem: error:" line and exit 2.
# Usage: privacy_cli_test.sh TANDEM_BINARY
set -uo pipefail
TANDEM="$1"
failures=0
pass() { echo "ok: $1"; }
fail() { echo "FAIL: $1"; failures=$((failures + 1)); }

# expect_bad DESCRIPTION PATTERN ARGS...: exit status 2 and stderr matching PATTERN.
expect_bad() {
  local what="$1" pattern="$2"; shift 2
  local err rc
  err="$("$TANDEM" privacy "$@" 2>&1 >/dev/null)"; rc=$?
  if [ $rc -eq 2 ] && grep -qE "tandem: error: .*$pattern" <<<"$err"; then pass "$what"; else
    fail "$what (exit $rc, stderr: $err)"; fi
}

# json_check JSON PYTHON_EXPR: the expression over the parsed object `j` is true.
json_check() {
  python3 -c "import json,sys; j=json.loads(sys.argv[1]); sys.exit(0 if ($2) else 1)" "$1"
}

for sub in "" epsilon sigma; do
  # shellcheck disable=SC2086
  if "$TANDEM" privacy $sub --help >/dev/null 2>&1; then pass "privacy $sub --help"; else
    fail "privacy $sub --help"; fi
done

# opacus/tests/accountants_test.py: q = 0.04, sigma = 1.5, 2250 steps, delta = 1e-5 -> 7.32911117143.
out="$("$TANDEM" privacy epsilon --q 0.04 --sigma 1.5 --steps 2250 --delta 1e-5)"
if grep -qE '^epsilon 7\.32911 at order 3\.9 ' <<<"$out"; then pass "epsilon line"; else
  fail "epsilon line: $out"; fi
out="$("$TANDEM" privacy epsilon --q 0.04 --sigma 1.5 --steps 2250 --delta 1e-5 --json)"
if json_check "$out" "abs(j['epsilon'] - 7.32911117143) < 7.33e-6 and j['best_order'] == 3.9 and j['steps'] == 2250"; then
  pass "epsilon --json matches Opacus"; else fail "epsilon --json: $out"; fi
out="$("$TANDEM" privacy epsilon --q 0.04 --sigma 0 --steps 10 --delta 1e-5 --json)"
if json_check "$out" "j['epsilon'] is None"; then pass "no noise: epsilon null in JSON"; else
  fail "no noise: $out"; fi
err="$("$TANDEM" privacy epsilon --q 0.04 --sigma 1.5 --steps 2250 --delta 1e-5 --orders 2,3 2>&1 >/dev/null)"
if grep -q "largest of the orders" <<<"$err"; then pass "edge-order warning"; else
  fail "edge-order warning: $err"; fi

# sigma for eps = 8 over 2000 steps: Opacus's search gives 1.3562 (it stops up to 0.01 below the
# target); the smallest sigma is a little lower, and its epsilon must not pass 8.
out="$("$TANDEM" privacy sigma --q 0.04 --steps 2000 --delta 1e-5 --target-epsilon 8 --json)"
if json_check "$out" "1.35 < j['sigma'] <= 1.35625 and j['epsilon'] <= 8"; then pass "sigma --json"; else
  fail "sigma --json: $out"; fi
sigma="$(python3 -c "import json,sys; print(repr(json.loads(sys.argv[1])['sigma']))" "$out")"
back="$("$TANDEM" privacy epsilon --q 0.04 --sigma "$sigma" --steps 2000 --delta 1e-5 --json)"
if json_check "$back" "7.99 < j['epsilon'] <= 8"; then pass "sigma round-trips through epsilon"; else
  fail "round trip: $back"; fi
out="$("$TANDEM" privacy sigma --q 0.04 --steps 2000 --delta 1e-5 --target-epsilon 8)"
if grep -qE '^sigma 1\.356' <<<"$out"; then pass "sigma line"; else fail "sigma line: $out"; fi

expect_bad "no subcommand" "epsilon or sigma"
expect_bad "q not a number" "--q must be a finite number" epsilon --q abc --sigma 1 --steps 10 --delta 1e-5
expect_bad "q out of range" "q must be in \[0, 1\]" epsilon --q 1.5 --sigma 1 --steps 10 --delta 1e-5
expect_bad "negative sigma" "sigma" epsilon --q 0.1 --sigma -1 --steps 10 --delta 1e-5
expect_bad "missing flag" "--delta is required" epsilon --q 0.1 --sigma 1 --steps 10
expect_bad "fractional steps" "--steps must be a whole number" epsilon --q 0.1 --sigma 1 --steps 2.5 --delta 1e-5
expect_bad "delta out of range" "--delta must be in \(0, 1\)" epsilon --q 0.1 --sigma 1 --steps 10 --delta 0
expect_bad "bad orders" "--orders" epsilon --q 0.1 --sigma 1 --steps 10 --delta 1e-5 --orders 2,x
expect_bad "order <= 1" "> 1" epsilon --q 0.1 --sigma 1 --steps 10 --delta 1e-5 --orders 0.5,2
expect_bad "unknown flag" "unexpected argument" epsilon --q 0.1 --sigma 1 --steps 10 --delta 1e-5 --bogus 3
expect_bad "unreachable target" "out of reach" sigma --q 0.04 --steps 2000 --delta 1e-5 --target-epsilon 0.001
expect_bad "target <= 0" "target epsilon" sigma --q 0.04 --steps 2000 --delta 1e-5 --target-epsilon 0

if [ "$failures" -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
echo "all privacy CLI checks passed"
