#!/usr/bin/env bash
# An adaptive NODE translation model on Multi30k De->En and what it does per sentence (issue #29, item 4).
#
# Usage: bash benchmarks/adaptive_multi30k.sh DATA_DIR RUNS_DIR [--switch-epoch N]
#
# The model, at the reference budget (10 epochs, seed 1, the recipe of scripts/train_multi30k.sh): the
# node-encoder-euler variant of benchmarks/multi30k_quality.sh (3+3 layers, width 256, each encoder layer
# one Euler step of an ODE block, plain post-norm decoder) for the first N epochs (default 8), then the
# last 10 - N with dopri5 at rtol 1e-2, atol 1e-3 on the same encoder (per-sentence step control, the
# default), resumed from epoch N's checkpoint: optimizer and learning-rate schedule go on where they
# were. A fine-tuned model, reported as such, not one trained adaptive from the start: dopri5 costs
# about 7 evaluations per block where Euler costs one. The weights are the same throughout; only how
# the encoder's field is integrated changes.
#
# Then:
#   * BLEU/chrF2 on test_2016_flickr (beam 5, detokenized sacreBLEU), recorded in
#     benchmarks/results/multi30k_quality.json with sacreBLEU's paired bootstrap against the reproduced
#     baseline's kept seed-1 hypotheses, and in benchmarks/results/adaptive_vs_euler.json against the
#     10-epoch Euler model's kept seed-1 hypotheses (same recipe, Euler to the end);
#   * BLEU against NFE over inference tolerances 1e-1 ... 1e-4 and fixed grids of the same weights, added
#     to benchmarks/results/elastic_depth_multi30k.json (the fixed-grid models' elastic-depth plot);
#   * NFE per sentence, its correlations, alone and batch-wide, at inference tolerances 1e-1 ... 1e-5
#     (this model takes one dopri5 step per block down to 1e-4): benchmarks.adaptive_sentences.
# A run that was cut resumes: a finished step is not redone (delete its output to redo it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage="usage: $0 DATA_DIR RUNS_DIR [--switch-epoch N]"
[ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
command="bash benchmarks/adaptive_multi30k.sh $*"
data="$(realpath "$1")"; runs="$(realpath -m "$2")"; shift 2
switch=8
while [ $# -gt 0 ]; do
  case "$1" in
    --switch-epoch)
      [[ "${2:-}" =~ ^[1-9]$ ]] || { echo "--switch-epoch: '${2:-}' is not an epoch from 1 to 9" >&2; exit 2; }
      switch="$2"; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
[ -d "$data/bin" ] || { echo "DATA_DIR: $data/bin not found (run scripts/prepare_multi30k.sh)" >&2; exit 2; }
cd "$root"
python=.venv/bin/python
results=benchmarks/results
start="$runs/node-encoder-euler-$switch"
tuned="$runs/node-encoder-dopri5-ft"
note="10 epochs, seed 1: epochs 1-$switch node-encoder-euler, epochs $((switch + 1))-10 dopri5 rtol 1e-2 atol 1e-3 on the same encoder (per-sentence step control)"
encoder=(--no-node-decoder --node-plain-norm post --cpu)

mkdir -p "$start" "$tuned"
if [ ! -f "$tuned/score-test.txt" ]; then
  if [ ! -f "$tuned/checkpoint_last.pt" ]; then
    bash scripts/train_multi30k.sh "$data" "$start" "${encoder[@]}" --node-method euler --node-steps 1 \
      --max-epoch "$switch" >> "$start/train.log" 2>&1
    restore=(--restore-file "$start/checkpoint_last.pt" --reset-meters)  # the best so far is the new solver's
  else
    restore=()  # a cut run resumes from its own checkpoint_last.pt
  fi
  bash scripts/train_multi30k.sh "$data" "$tuned" "${encoder[@]}" --node-method dopri5 --node-rtol 1e-2 \
    --node-atol 1e-3 "${restore[@]}" >> "$tuned/train.log" 2>&1
  bash scripts/evaluate_multi30k.sh "$data" "$tuned" --cpu > /dev/null
fi
$python -m benchmarks.quality_records "$tuned" --variant node-encoder-dopri5-ft --method dopri5 --sides encoder \
  --references "$data/raw/test.en" --baseline "$results/multi30k_quality_hypotheses/baseline-seed1.txt" \
  --note "$note" > /dev/null
$python -m benchmarks.quality_records "$tuned" --variant node-encoder-dopri5-ft --method dopri5 --sides encoder \
  --references "$data/raw/test.en" --baseline "$results/multi30k_quality_hypotheses/node-encoder-euler-seed1.txt" \
  --results "$results/adaptive_vs_euler.json" --note "$note" > /dev/null

mkdir -p "$runs/elastic"
cp "$results/elastic_depth_multi30k.json" "$runs/elastic/elastic_depth.json"
$python -m benchmarks.elastic_depth "$data" "$runs/elastic" --model "dopri5-ft=$tuned/checkpoint_best.pt" \
  --settings trained,dopri5@0.1,dopri5@0.001,dopri5@0.0001,euler:1,euler:2,rk4:1 -- --cpu
cp "$runs/elastic/elastic_depth.json" "$results/elastic_depth_multi30k.json"
cp "$runs/elastic/elastic_depth.png" "$results/elastic_depth_multi30k.png"

$python -m benchmarks.adaptive_sentences "$tuned/checkpoint_best.pt" "$data" --out "$results/adaptive_sentences" \
  --note "$note (command: $command)"
