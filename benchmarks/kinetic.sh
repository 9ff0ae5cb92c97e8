#!/usr/bin/env bash
# What kinetic-energy regularisation (--node-kinetic-weight) does to NFE and BLEU on the
# embedded numbers->words task: the same adaptive model (1+1 layers, width 64, dopri5 at rtol 1e-2)
# trained with each weight, decoded with beam 4 (fixed-grid-free, so each token re-solves its prefix)
# and scored on the 1000 held-out numbers.
#
# Usage: bash benchmarks/kinetic.sh RUNS_DIR [--weights 0,0.01,0.1] [--epochs 6] [--data PREPARED_DIR] [--quick]
#   PREPARED_DIR: what scripts/demo.sh prepares (OUT/data, with bin/ and raw/); made here if absent.
#   --quick: 3 updates per weight, outputs of at most 12 tokens (a smoke run, not a measurement)
# Results: RUNS_DIR/w<weight>/{train.log,generate-test.log,score-test.txt} and RUNS_DIR/kinetic.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage="usage: $0 RUNS_DIR [--weights W1,W2,...] [--epochs N] [--data PREPARED_DIR] [--quick]"
[ $# -ge 1 ] || { echo "$usage" >&2; exit 2; }
runs="$(realpath -m "$1")"; shift
weights=0,0.01,0.1; epochs=6; data=""; quick_args=(); quick_generate=()
while [ $# -gt 0 ]; do
  case "$1" in
    --weights) weights="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --data) data="$(realpath "$2")"; shift 2 ;;
    --quick) quick_args=(--max-update 3); quick_generate=(--max-len-a 0 --max-len-b 12); shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
IFS=, read -r -a weight_list <<< "$weights"
for w in "${weight_list[@]}"; do
  [[ "$w" =~ ^[0-9]+(\.[0-9]+)?([eE]-?[0-9]+)?$ ]] || { echo "--weights: '$w' is not a number >= 0" >&2; exit 2; }
done
[[ "$epochs" =~ ^[1-9][0-9]*$ ]] || { echo "--epochs: '$epochs' is not an integer >= 1" >&2; exit 2; }
cd "$root"
export PATH="$root/.venv/bin:$PATH" PYTHONWARNINGS=ignore
mkdir -p "$runs"
if [ -z "$data" ]; then
  data="$runs/data"
  if [ ! -d "$data/bin" ]; then
    python -m node_seq.text.numbers "$runs/raw_task" > /dev/null
    python -m node_seq.text.prepare "$runs/raw_task" "$data" --src src --tgt tgt --vocab-size 128 > "$runs/prepare.log" 2>&1
  fi
fi
variants=()
for w in "${weight_list[@]}"; do
  name="w$w"; variants+=("$name"); mkdir -p "$runs/$name"
  fairseq-train "$data/bin" --user-dir user_dir --task node_translation --arch node_transformer_tiny \
    --encoder-layers 1 --decoder-layers 1 --node-method dopri5 --node-rtol 1e-2 --node-atol 1e-3 \
    --node-kinetic-weight "$w" --share-all-embeddings --dropout 0.1 --optimizer adam --adam-betas '(0.9, 0.98)' \
    --lr 3e-3 --lr-scheduler inverse_sqrt --warmup-updates 100 --clip-norm 1.0 \
    --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens 4096 --max-epoch "$epochs" \
    --seed 1 --num-workers 0 --log-format simple --log-interval 25 --save-dir "$runs/$name" \
    --no-epoch-checkpoints --no-last-checkpoints "${quick_args[@]}" > "$runs/$name/train.log" 2>&1
  fairseq-generate "$data/bin" --user-dir user_dir --path "$runs/$name/checkpoint_best.pt" --gen-subset test \
    --beam 4 --max-tokens 8000 --post-process sentencepiece --num-workers 0 --required-batch-size-multiple 1 \
    "${quick_generate[@]}" > "$runs/$name/generate-test.log" 2>&1
  python -m node_seq.text.score "$runs/$name/generate-test.log" "$data/raw/test.tgt" > "$runs/$name/score-test.txt"
done
python -m benchmarks.quality_report "$runs" "${variants[@]}" | tee "$runs/kinetic.md"
