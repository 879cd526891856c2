#!/usr/bin/env bash
# docs/config.md is the output of `tandem config-reference`, which reads the keys from the code:
# this fails when the checked-in page differs from what the code now says (a key added, renamed,
# given a new default or range), or when a key has no description.
# Usage: config_reference_test.sh TANDEM_BINARY SOURCE_DIR
set -uo pipefail
TANDEM="$1"
SOURCE_DIR="$2"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
if ! "$TANDEM" config-reference > "$out"; then
  echo "FAIL: tandem config-reference failed (a key without a description?)"
  exit 1
fi
if ! diff -u "$SOURCE_DIR/docs/config.md" "$out"; then
  echo "FAIL: docs/config.md is out of date; regenerate it with"
  echo "  $TANDEM config-reference > $SOURCE_DIR/docs/config.md"
  exit 1
fi
# Pages that quote rows of the reference quote them as they are now.
for page in "$SOURCE_DIR"/docs/*.md; do
  [ "$page" = "$SOURCE_DIR/docs/config.md" ] && continue
  while IFS= read -r row; do
    if ! grep -qxF -- "$row" "$out"; then
      echo "FAIL: $(basename "$page") quotes a key row that docs/config.md no longer has:"
      echo "  $row"
      echo "  copy the key's row from docs/config.md"
      exit 1
    fi
  done < <(grep -E '^\| `[a-z_-]+\.[a-z_.-]+` \| (string|number|integer|boolean|list|table)' "$page" || true)
done
echo "ok: docs/config.md matches the code, and the pages that quote it agree"
