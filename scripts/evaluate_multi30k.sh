#!/usr/bin/env bash
# Decode test_2016_flickr with fairseq-generate and score detokenized output with sacreBLEU.
# Usage: bash scripts/evaluate_multi30k.sh DATA_DIR SAVE_DIR [fairseq-generate options...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 2 ] || { echo "usage: $0 DATA_DIR SAVE_DIR [fairseq-generate options...]" >&2; exit 2; }
data="$(realpath "$1")"; save="$(realpath "$2")"; shift 2
cd "$root"
.venv/bin/fairseq-generate "$data/bin" --user-dir user_dir --path "$save/checkpoint_best.pt" \
  --gen-subset test --beam 5 --max-tokens 8000 --post-process sentencepiece --num-workers 0 \
  --required-batch-size-multiple 1 "$@" \
  > "$save/generate-test.log" 2>&1
.venv/bin/python -m node_seq.text.score "$save/generate-test.log" "$data/raw/test.en" | tee "$save/score-test.txt"
