#!/usr/bin/env bash
# Runs every native Go fuzz target (func FuzzXxx) in the module for FUZZ_TIME
# each (default 30s). The seed corpora already run in plain `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_TIME=${FUZZ_TIME:-30s}
status=0
while read -r file; do
  pkg=./$(dirname "$file")
  while read -r target; do
    echo "==> $pkg $target ($FUZZ_TIME)"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZ_TIME" "$pkg" </dev/null || status=1
  done < <(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$file" | sed 's/^func //')
done < <(grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./.git/' | sed 's|^\./||' | sort)
exit $status
