#!/usr/bin/env bash
# An adaptive NODE translation model on Multi30k De->En and what it does per sentence (issue #29, item 4).
#
# Usage: bash benchmarks/adaptive_multi30k.sh DATA_DIR RUNS_DIR [--epochs N]
#
# The model: the reference recipe's node-encoder-euler variant (benchmarks/multi30k_quality.sh: 3+3
# layers, width 256, encoder layers one Euler step of an ODE block, decoder plain, 10 epochs, seed 1),
# then trained N more epochs (default 3) with dopri5 at rtol 1e-2, atol 1e-3 on the encoder (per-sentence
# step control, the default) from its last checkpoint: the optimizer and the learning-rate schedule go
# on where they were (a fine-tuned model, reported as such, not one trained adaptive from the start).
# The encoder's field is the same weights throughout; only how it is integrated changes.
#
# Then:
#   * BLEU/chrF2 on test_2016_flickr (beam 5, detokenized sacreBLEU), recorded in
#     benchmarks/results/multi30k_quality.json with sacreBLEU's paired bootstrap against the reproduced
#     baseline's kept seed-1 hypotheses, and in RUNS_DIR/vs_start.json against the model it started from;
#   * BLEU against NFE over inference tolerances 1e-1 ... 1e-4 and fixed grids of the same weights, added
#     to benchmarks/results/elastic_depth_multi30k.json (the fixed-grid models' elastic-depth plot);
#   * NFE per sentence, its correlations, alone and batch-wide: benchmarks.adaptive_sentences.
# A run that was cut resumes: a finished step is not redone (delete its output to redo it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage="usage: $0 DATA_DIR RUNS_DIR [--epochs N]"
[ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
command="bash benchmarks/adaptive_multi30k.sh $*"
data="$(realpath "$1")"; runs="$(realpath -m "$2")"; shift 2
epochs=3
while [ $# -gt 0 ]; do
  case "$1" in
    --epochs)
      [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || { echo "--epochs: '${2:-}' is not a number of epochs >= 1" >&2; exit 2; }
      epochs="$2"; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
[ -d "$data/bin" ] || { echo "DATA_DIR: $data/bin not found (run scripts/prepare_multi30k.sh)" >&2; exit 2; }
cd "$root"
python=.venv/bin/python
results=benchmarks/results
start="$runs/node-encoder-euler"
tuned="$runs/node-encoder-dopri5-ft"
note="fine-tuned: node-encoder-euler (seed 1, 10 epochs) trained $epochs more epochs with dopri5 rtol 1e-2 atol 1e-3 on the encoder, per-sentence step control"

[ -f "$start/score-test.txt" ] || bash benchmarks/multi30k_quality.sh "$data" "$runs" --variants node-encoder-euler
mkdir -p "$tuned"
if [ ! -f "$tuned/score-test.txt" ]; then
  restore=()
  # the first launch starts from the Euler model; a cut run resumes from its own checkpoint_last.pt
  [ -f "$tuned/checkpoint_last.pt" ] || restore=(--restore-file "$start/checkpoint_last.pt" --reset-meters)
  bash scripts/train_multi30k.sh "$data" "$tuned" --no-node-decoder --node-plain-norm post --node-method dopri5 \
    --node-rtol 1e-2 --node-atol 1e-3 --max-epoch $((10 + epochs)) --cpu "${restore[@]}" >> "$tuned/train.log" 2>&1
  bash scripts/evaluate_multi30k.sh "$data" "$tuned" --cpu > /dev/null
fi
$python -m benchmarks.quality_records "$tuned" --variant node-encoder-dopri5-ft --method dopri5 --sides encoder \
  --references "$data/raw/test.en" --baseline "$results/multi30k_quality_hypotheses/baseline-seed1.txt" \
  --note "$note" > /dev/null
$python -m benchmarks.quality_records "$tuned" --variant node-encoder-dopri5-ft --method dopri5 --sides encoder \
  --references "$data/raw/test.en" --baseline "$start" --results "$runs/vs_start.json" --note "$note" > /dev/null

mkdir -p "$runs/elastic"
cp "$results/elastic_depth_multi30k.json" "$runs/elastic/elastic_depth.json"
$python -m benchmarks.elastic_depth "$data" "$runs/elastic" --model "dopri5-ft=$tuned/checkpoint_best.pt" \
  --settings trained,dopri5@0.1,dopri5@0.001,dopri5@0.0001,euler:1,euler:2,rk4:1 -- --cpu
cp "$runs/elastic/elastic_depth.json" "$results/elastic_depth_multi30k.json"
cp "$runs/elastic/elastic_depth.png" "$results/elastic_depth_multi30k.png"

$python -m benchmarks.adaptive_sentences "$tuned/checkpoint_best.pt" "$data" --out "$results/adaptive_sentences" \
  --note "$note (command: $command)"
