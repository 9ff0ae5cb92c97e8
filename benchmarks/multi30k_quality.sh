#!/usr/bin/env bash
# Issue 6, item 5: BLEU on Multi30k De->En, a plain pre-norm Transformer against NODE variants, each
# trained with the same recipe and budget (scripts/train_multi30k.sh: width 256, 3+3 layers, 10 epochs)
# and decoded with scripts/evaluate_multi30k.sh (beam 5, sacreBLEU on detokenized test_2016_flickr).
#
# Usage: bash benchmarks/multi30k_quality.sh DATA_DIR RUNS_DIR [--device cuda]
#   DATA_DIR: prepared by scripts/prepare_multi30k.sh (holds bin/ and raw/test.en)
# Each model takes ~45 min on an uncontended CPU core set; on a GPU, minutes. Scores are collected
# into RUNS_DIR/quality.md (one line per variant: name, BLEU line from node_seq.score).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 2 ] || { echo "usage: $0 DATA_DIR RUNS_DIR [--device cuda]" >&2; exit 2; }
data="$1"; runs="$2"; shift 2
device_args=(--cpu)
if [ "${1:-}" = "--device" ] && [ "${2:-}" = "cuda" ]; then device_args=(); fi

declare -A variants=(
  [baseline]="--no-node-encoder --no-node-decoder"
  [node-euler3-tied]="--encoder-layers 1 --decoder-layers 1 --node-method euler --node-steps 3"
  [node-rk4-1step]="--encoder-layers 1 --decoder-layers 1 --node-method rk4 --node-steps 1"
  [node-dopri5]="--encoder-layers 1 --decoder-layers 1 --node-method dopri5 --node-rtol 1e-2 --node-gradient adjoint --node-seminorm"
)
mkdir -p "$runs"
echo "| variant | options | score |" > "$runs/quality.md"
echo "|---|---|---|" >> "$runs/quality.md"
for name in baseline node-euler3-tied node-rk4-1step node-dopri5; do
  # shellcheck disable=SC2086
  bash "$root/scripts/train_multi30k.sh" "$data" "$runs/$name" ${variants[$name]} "${device_args[@]}"
  bash "$root/scripts/evaluate_multi30k.sh" "$data" "$runs/$name" "${device_args[@]}"
  echo "| $name | \`${variants[$name]}\` | $(tail -n 1 "$runs/$name/score-test.txt") |" >> "$runs/quality.md"
done
cat "$runs/quality.md"
