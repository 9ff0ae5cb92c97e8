#!/usr/bin/env bash
# Create .venv/ at the repo root and install node-seq with everything it needs, at the exact versions
# of constraints.txt (so every machine, on every day, gets the same environment).
# Idempotent: a stamp file records what was installed, so a second run costs seconds.
#
#   VENV=DIR         install into DIR instead of .venv/
#   CONSTRAINTS=F    pin with F instead of constraints.txt; CONSTRAINTS=none resolves the newest
#                    releases setup.py allows (scripts/refresh_constraints.sh uses it)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
constraints="${CONSTRAINTS:-$root/constraints.txt}"
py="${PYTHON:-python3}"
pin=()
if [ "$constraints" != none ]; then
  [ -f "$constraints" ] || { echo "[setup] constraints file not found: $constraints" >&2; exit 2; }
  pin=(-c "$constraints")
fi
# pip, minus this machine's index-location warnings and setuptools' editable-install banner.
pip() {
  "$venv/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 \
    | { grep -vE "^WARNING: Location|BuildBackendWarning|^ +(!!|\*+|Please be careful|name as your package|with strategy|\*)? *$|^ +(Please be careful|name as your package|with strategy)" || true; }
}

[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"

# The stamp covers every file that decides what gets installed.
stamp="$venv/.node-seq-installed"
want="$({ cat "$root/setup.py" "$root/scripts/setup_venv.sh"; [ "$constraints" = none ] || cat "$constraints"; } \
  | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

# About 6 GB land in the venv (torch's CUDA build); say so before pip fails half-way for want of disk.
free_kb="$(df -Pk "$(dirname "$venv")" | awk 'NR==2 {print $4}')"
if [ "${free_kb:-0}" -lt $((8 * 1024 * 1024)) ]; then
  echo "[setup] $(dirname "$venv") has $((free_kb / 1024)) MB free; installing needs about 8 GB" >&2
  exit 1
fi
# Nothing worth caching: the wheels come from this machine's disk or once from the registry.
export PIP_NO_CACHE_DIR=1
echo "[setup] installing into $venv (first run: about 10 minutes)" >&2
pip install "${pin[@]}" --upgrade pip wheel "setuptools<81"
# torch and torchvision come from this machine's disk (a local package index pip is set up to read).
pip install "${pin[@]}" "torch==2.14.1" "torchvision==0.29.1"
# fairseq-fixed only ships an sdist whose C++ extensions must match the runtime torch,
# and whose install_requires pulls torchaudio (which would downgrade torch): build it
# against the installed torch, without isolation, and install its real needs ourselves.
pip install "${pin[@]}" "numpy<2.5" cython "hydra-core==1.3.2" "omegaconf==2.3.0" bitarray regex cffi \
  "sacrebleu>=2.4" tqdm packaging scikit-learn
if ! "$venv/bin/python" -c "import fairseq" 2>/dev/null; then
  pip install "${pin[@]}" --no-build-isolation --no-deps "fairseq-fixed==0.12.3.1"
fi
pip install "${pin[@]}" --no-build-isolation -e "$root[hf,vision,dev,docs]"
echo "$want" > "$stamp"
echo "[setup] done" >&2
