#!/usr/bin/env bash
# Re-resolve constraints.txt: install everything, unpinned, into a throw-away venv (the newest
# releases setup.py allows), and write what it got. Review the diff, run the README's two
# commands, then commit. About 10 minutes (fairseq is built from source).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
VENV="$tmp/venv" CONSTRAINTS=none bash "$root/scripts/setup_venv.sh"
{
  sed -n '/^#/p;/^#/!q' "$root/constraints.txt"   # keep the header
  "$tmp/venv/bin/python" -m pip freeze --all --exclude-editable | grep -v '^#' | sort -f
} > "$tmp/constraints.txt"
mv "$tmp/constraints.txt" "$root/constraints.txt"
git -C "$root" diff --stat -- constraints.txt
