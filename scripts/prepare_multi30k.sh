#!/usr/bin/env bash
# Multi30k De->En: one joint BPE (8k) for fairseq and HF, fairseq binaries, raw references.
# Usage: bash scripts/prepare_multi30k.sh RAW_DIR [OUT_DIR]
#   RAW_DIR holds train.{de,en}[.gz], val.{de,en}[.gz], test_2016_flickr.{de,en}[.gz]
#   OUT_DIR defaults to runs/multi30k; fairseq data lands in OUT_DIR/bin.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 1 ] || { echo "usage: $0 RAW_DIR [OUT_DIR]" >&2; exit 2; }
raw="$(realpath "$1")"; out="$(realpath -m "${2:-$root/runs/multi30k}")"
bash "$root/scripts/setup_venv.sh"
cd "$root"
.venv/bin/python -m node_seq.text.prepare "$raw" "$out" --src de --tgt en \
  --splits train=train,valid=val,test=test_2016_flickr --vocab-size "${VOCAB_SIZE:-8000}" --workers 2
