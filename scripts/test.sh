#!/usr/bin/env bash
# Create/refresh .venv/ and run the whole test suite (the README's test command; CI runs it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_venv.sh"
cd "$root"
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
