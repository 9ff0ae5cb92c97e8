#!/usr/bin/env bash
# BLEU on Multi30k De->En: a plain Transformer against NODE variants of the
# same parameter count (3+3 layers, width 256: every variant has the same weights, only what a layer
# does with them changes), each trained with the same recipe and budget (scripts/train_multi30k.sh)
# and decoded with scripts/evaluate_multi30k.sh (beam 5, sacreBLEU on detokenized test_2016_flickr).
#
# Usage: bash benchmarks/multi30k_quality.sh DATA_DIR RUNS_DIR [--variants a,b,...] [--device cuda] [--quick]
#                                            [--speed UPDATES [--rounds N] [--out PREFIX]]
#                                            [--results FILE] [-- fairseq-train options shared by every variant]
#   --quick: 3 updates per variant (a smoke run of the pipeline, not a measurement)
#   --speed: instead of training and decoding, time UPDATES updates of each variant's recipe (nothing
#            saved), N rounds of all variants in turn, into RUNS_DIR/speed/<variant>/round-<k>.log;
#            benchmarks.quality_speed tabulates words/s and the ratio to the baseline of each round
#            (into PREFIX.{json,md} with --out). Run it on an otherwise idle machine.
#   --results: the JSON records file (default RUNS_DIR/quality.json; the project's is
#              benchmarks/results/multi30k_quality.json), one record per variant and seed, with the
#              paired bootstrap against RUNS_DIR/baseline when that has been decoded
#   DATA_DIR: prepared by scripts/prepare_multi30k.sh (holds bin/ and raw/test.en)
# On 2 CPU cores the baseline takes ~5 min per epoch and a midpoint variant twice that. A run that
# was cut resumes from its checkpoint_last.pt when started again (its train.log is appended to).
# Results: RUNS_DIR/<variant>/{train.log,generate-test.log,score-test.txt}, RUNS_DIR/quality.md and
# the records file.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage="usage: $0 DATA_DIR RUNS_DIR [--variants a,b,...] [--device cuda] [--quick] [--speed UPDATES [--rounds N] [--out PREFIX]] [--results FILE] [-- fairseq-train options]"
[ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
command="bash benchmarks/multi30k_quality.sh $*"
data="$1"; runs="$2"; shift 2

# name -> "sides method fairseq-train options". Plain layers are post-norm (--node-plain-norm post,
# fairseq's transformer: 0.8 BLEU above pre-norm at this size, p = 0.03); ODE blocks are pre-norm.
declare -A variants=(
  [baseline]="none - --no-node-encoder --no-node-decoder --node-plain-norm post"
  [baseline-prenorm]="none - --no-node-encoder --no-node-decoder"
  [node-midpoint]="both midpoint --node-method midpoint --node-steps 1"
  [node-encoder-midpoint]="encoder midpoint --no-node-decoder --node-plain-norm post --node-method midpoint --node-steps 1"
  [node-decoder-midpoint]="decoder midpoint --no-node-encoder --node-plain-norm post --node-method midpoint --node-steps 1"
  [node-encoder-rk2-gated]="encoder rk2_gated --no-node-decoder --node-plain-norm post --node-method rk2_gated --node-steps 1"
  [node-encoder-euler]="encoder euler --no-node-decoder --node-plain-norm post --node-method euler --node-steps 1"
  [node-encoder-rk4-classic]="encoder rk4_classic --no-node-decoder --node-plain-norm post --node-method rk4_classic --node-steps 1"
  [node-encoder-pc]="encoder pc --no-node-decoder --node-plain-norm post --node-method pc --node-steps 1"
  [node-dopri5]="both dopri5 --node-method dopri5 --node-rtol 1e-2 --node-gradient adjoint --node-seminorm"
)
order=(baseline baseline-prenorm node-midpoint node-encoder-midpoint node-decoder-midpoint node-encoder-rk2-gated
       node-encoder-euler node-encoder-rk4-classic node-encoder-pc node-dopri5)
selected=("${order[@]}")
device_args=(--cpu)
quick_args=()
results="$runs/quality.json"
speed_updates=""
rounds=1
speed_out=()
while [ $# -gt 0 ]; do
  case "$1" in
    --variants) IFS=, read -r -a selected <<< "$2"; shift 2 ;;
    --device)
      case "$2" in cpu) device_args=(--cpu) ;; cuda) device_args=() ;;
        *) echo "--device: '$2' is not one of: cpu, cuda" >&2; exit 2 ;; esac
      shift 2 ;;
    --quick) quick_args=(--max-update 3); shift ;;
    --results) results="$2"; shift 2 ;;
    --speed)
      [[ "${2:-}" =~ ^[0-9]+$ ]] && [ "$2" -ge 20 ] || { echo "--speed: '${2:-}' is not a number of updates >= 20" >&2; exit 2; }
      speed_updates="$2"; shift 2 ;;
    --rounds)
      [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds: '${2:-}' is not a number of rounds >= 1" >&2; exit 2; }
      rounds="$2"; shift 2 ;;
    --out) speed_out=(--out "$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
for name in "${selected[@]}"; do
  [ -n "${variants[$name]+set}" ] || { echo "--variants: '$name' is not one of: ${order[*]}" >&2; exit 2; }
done
[ -d "$data/bin" ] || { echo "DATA_DIR: $data/bin not found (run scripts/prepare_multi30k.sh)" >&2; exit 2; }

mkdir -p "$runs"
if [ -n "$speed_updates" ]; then
  for ((round = 1; round <= rounds; round++)); do
    for name in "${selected[@]}"; do
      mkdir -p "$runs/speed/$name"
      read -r sides method options <<< "${variants[$name]}"
      # shellcheck disable=SC2086
      bash "$root/scripts/train_multi30k.sh" "$data" "$runs/speed/$name/save" $options "${device_args[@]}" \
        --max-update "$speed_updates" --log-interval 10 --no-save --disable-validation "$@" \
        > "$runs/speed/$name/round-$round.log" 2>&1
    done
  done
  "$root/.venv/bin/python" -m benchmarks.quality_speed "$runs/speed" "${selected[@]}" "${speed_out[@]}" --command "$command"
  exit 0
fi
for name in "${selected[@]}"; do
  mkdir -p "$runs/$name"
  read -r sides method options <<< "${variants[$name]}"
  # shellcheck disable=SC2086
  bash "$root/scripts/train_multi30k.sh" "$data" "$runs/$name" $options "${device_args[@]}" "${quick_args[@]}" "$@" \
    >> "$runs/$name/train.log" 2>&1
  bash "$root/scripts/evaluate_multi30k.sh" "$data" "$runs/$name" "${device_args[@]}" > /dev/null
  baseline_args=()
  if [ "$name" != baseline ] && [ -f "$runs/baseline/generate-test.log" ]; then baseline_args=(--baseline "$runs/baseline"); fi
  method_args=()
  [ "$method" = - ] || method_args=(--method "$method")
  "$root/.venv/bin/python" -m benchmarks.quality_records "$runs/$name" --variant "$name" --sides "$sides" \
    "${method_args[@]}" --references "$data/raw/test.en" "${baseline_args[@]}" --results "$results" > /dev/null
done
"$root/.venv/bin/python" -m benchmarks.quality_report "$runs" "${selected[@]}" | tee "$runs/quality.md"
