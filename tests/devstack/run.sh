#!/usr/bin/env bash
# Runs the DevStack plugin's bats suite (make test-devstack) and checks that
# it really ran: the TAP plan must announce at least MIN_TESTS tests and
# every one of them must report "ok".
set -euo pipefail
cd "$(dirname "$0")/../.."
MIN_TESTS=${MIN_TESTS:-61}
tap=$(bats --tap tests/devstack) && rc=0 || rc=$?
echo "$tap" | grep -v '^ok ' || true
plan=$(sed -n 's/^1\.\.\([0-9]*\)$/\1/p' <<< "$tap" | head -n1)
passed=$(grep -c '^ok ' <<< "$tap" || true)
echo "bats: $passed of ${plan:-?} tests passed"
if ((rc != 0)) || [[ -z $plan ]] || ((plan < MIN_TESTS || passed != plan)); then
  echo "FAIL: the DevStack plugin suite did not pass (exit $rc, plan ${plan:-none}, expected at least $MIN_TESTS)" >&2
  exit 1
fi
