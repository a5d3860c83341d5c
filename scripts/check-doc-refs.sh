#!/usr/bin/env bash
# Fails when the repository's code or docs point at something it does not
# contain (make lint): numbered sections of an ARCHITECTURE.md (the repo's
# docs/ARCHITECTURE.md has named sections only), tracker issue numbers,
# notes kept outside the repository, and relative Markdown links to files
# that do not exist. Test data (captured messages, vectors) is not checked.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
pattern='ARCHITECTURE\.md ?§|ARCHITECTURE\.md [0-9]|\b[Ii]ssues? #?[0-9]+|shared/(reference|design)|\.\./shared|-anchors\b|TRUSTED-LAUNCH\.md'
if hits=$(git grep -nEI "$pattern" -- ':!*/testdata/*' ':!scripts/check-doc-refs.sh'); then
  echo "references to things outside the repository:" >&2
  echo "$hits" >&2
  fail=1
fi

# [text](relative/path) in Markdown files must name an existing file.
while IFS= read -r md; do
  dir=$(dirname "$md")
  while IFS= read -r link; do
    target=${link%%#*}
    [[ -z $target || $target == *://* || $target == mailto:* ]] && continue
    if [[ ! -e $dir/$target ]]; then
      echo "$md: broken link ($link)" >&2
      fail=1
    fi
  done < <(grep -oE '\]\([^) ]+\)' "$md" | sed -E 's/^\]\((.*)\)$/\1/')
done < <(git ls-files '*.md')
exit "$fail"
