#!/usr/bin/env bash
# canary_test.sh CANARY MODE PATTERN: the canary's defect MODE must be reported (PATTERN in its
# output) and must end the process with a failure before it prints "canary survived".
set -uo pipefail
canary=$1 mode=$2 pattern=$3
out=$("$canary" "$mode" 2>&1)
rc=$?
echo "$out" | tail -n 30
if [ "$rc" -eq 0 ]; then
  echo "FAIL: $mode exited 0: the sanitizer's report was not fatal"; exit 1
fi
if ! grep -q -- "$pattern" <<<"$out"; then
  echo "FAIL: $mode exited $rc without a report matching '$pattern'"; exit 1
fi
if grep -q "canary survived" <<<"$out"; then
  echo "FAIL: $mode ran on after its report"; exit 1
fi
echo "ok: $mode reported and fatal (exit $rc)"
