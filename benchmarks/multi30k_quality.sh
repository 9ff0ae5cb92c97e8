#!/usr/bin/env bash
# BLEU on Multi30k De->En: a plain pre-norm Transformer against NODE variants of the
# same parameter count (3+3 layers, width 256: every variant has the same weights, only what a layer
# does with them changes), each trained with the same recipe and budget (scripts/train_multi30k.sh)
# and decoded with scripts/evaluate_multi30k.sh (beam 5, sacreBLEU on detokenized test_2016_flickr).
#
# Usage: bash benchmarks/multi30k_quality.sh DATA_DIR RUNS_DIR [--variants a,b,...] [--device cuda] [--quick]
#                                            [-- fairseq-train options shared by every variant]
#   --quick: 3 updates per variant (a smoke run of the pipeline, not a measurement)
#   DATA_DIR: prepared by scripts/prepare_multi30k.sh (holds bin/ and raw/test.en)
# On 2 CPU cores the baseline takes ~5 min per epoch and a midpoint variant twice that.
# Results: RUNS_DIR/<variant>/{train.log,generate-test.log,score-test.txt} and RUNS_DIR/quality.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage="usage: $0 DATA_DIR RUNS_DIR [--variants a,b,...] [--device cuda] [--quick] [-- fairseq-train options]"
[ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
data="$1"; runs="$2"; shift 2

declare -A variants=(
  [baseline]="--no-node-encoder --no-node-decoder"
  [node-midpoint]="--node-method midpoint --node-steps 1"
  [node-encoder-midpoint]="--no-node-decoder --node-method midpoint --node-steps 1"
  [node-decoder-midpoint]="--no-node-encoder --node-method midpoint --node-steps 1"
  [node-dopri5]="--node-method dopri5 --node-rtol 1e-2 --node-gradient adjoint --node-seminorm"
)
order=(baseline node-midpoint node-encoder-midpoint node-decoder-midpoint node-dopri5)
selected=("${order[@]}")
device_args=(--cpu)
quick_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --variants) IFS=, read -r -a selected <<< "$2"; shift 2 ;;
    --device)
      case "$2" in cpu) device_args=(--cpu) ;; cuda) device_args=() ;;
        *) echo "--device: '$2' is not one of: cpu, cuda" >&2; exit 2 ;; esac
      shift 2 ;;
    --quick) quick_args=(--max-update 3); shift ;;
    --) shift; break ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
for name in "${selected[@]}"; do
  [ -n "${variants[$name]+set}" ] || { echo "--variants: '$name' is not one of: ${order[*]}" >&2; exit 2; }
done
[ -d "$data/bin" ] || { echo "DATA_DIR: $data/bin not found (run scripts/prepare_multi30k.sh)" >&2; exit 2; }

mkdir -p "$runs"
for name in "${selected[@]}"; do
  mkdir -p "$runs/$name"
  # shellcheck disable=SC2086
  bash "$root/scripts/train_multi30k.sh" "$data" "$runs/$name" ${variants[$name]} "${device_args[@]}" "${quick_args[@]}" "$@" \
    > "$runs/$name/train.log" 2>&1
  bash "$root/scripts/evaluate_multi30k.sh" "$data" "$runs/$name" "${device_args[@]}" > /dev/null
done
"$root/.venv/bin/python" -m benchmarks.quality_report "$runs" "${selected[@]}" | tee "$runs/quality.md"
