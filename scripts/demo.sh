#!/usr/bin/env bash
# The main job on the embedded task (numbers -> English words), end to end on CPU:
# generate data, train a BPE + fairseq binaries, fairseq-train a NODE-Transformer,
# fairseq-generate the test set, and score it (sacreBLEU, exact match, NFE).
# Then convert the model to HF Transformers, reload it with from_pretrained and translate a few
# test inputs with generate, next to fairseq's outputs for them.
# Usage: bash scripts/demo.sh [OUT_DIR]   (default runs/demo; about 10 minutes on 2 cores)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(realpath -m "${1:-$root/runs/demo}")"
bash "$root/scripts/setup_venv.sh"
cd "$root"
export PATH="$root/.venv/bin:$PATH" PYTHONWARNINGS=ignore OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
step() { printf '\n== %s\n' "$*"; }

step "data: numbers -> words (generated, seed 1)"
python -m node_seq.text.numbers "$out/raw_task"
python -m node_seq.text.prepare "$out/raw_task" "$out/data" --src src --tgt tgt --vocab-size 128 \
  > "$out/prepare.log" 2>&1

step "fairseq-train --arch node_transformer_tiny (ODE encoder + decoder, rk4)"
rm -rf "$out/checkpoints"
fairseq-train "$out/data/bin" --user-dir user_dir --arch node_transformer_tiny \
  --encoder-layers 1 --decoder-layers 1 --node-method rk4 --node-steps 1 --node-gradient backprop \
  --share-all-embeddings --dropout 0.1 --optimizer adam --adam-betas '(0.9, 0.98)' --lr 3e-3 \
  --lr-scheduler inverse_sqrt --warmup-updates 100 --clip-norm 1.0 \
  --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens 4096 \
  --max-epoch "${DEMO_EPOCHS:-16}" --seed 1 --num-workers 0 --log-format simple --log-interval 25 \
  --save-dir "$out/checkpoints" --no-epoch-checkpoints --no-last-checkpoints --patience 3 \
  > "$out/train.log" 2>&1
grep -E "\| (train|valid) \|" "$out/train.log" | tail -2 | sed 's/.*| INFO | //'

step "fairseq-generate (beam 4) on the 1000 held-out numbers"
fairseq-generate "$out/data/bin" --user-dir user_dir --path "$out/checkpoints/checkpoint_best.pt" \
  --gen-subset test --beam 4 --max-tokens 8000 --post-process sentencepiece --num-workers 0 \
  --required-batch-size-multiple 1 \
  > "$out/generate.log" 2>&1
awk -F'\t' '/^S-[0-2]\t/ {src[$1]=$2} /^D-[0-2]\t/ {id="S-" substr($1, 3); printf "%14s -> %s\n", src[id], $3}' \
  "$out/generate.log"
step "score"
python -m node_seq.text.score "$out/generate.log" "$out/data/raw/test.tgt" | tee "$out/score.txt"

step "HF Transformers: convert, reload with from_pretrained, translate with generate (beam 4)"
python -m node_seq.hf.cli.convert --checkpoint "$out/checkpoints/checkpoint_best.pt" \
  --data-bin "$out/data/bin" --out "$out/hf" > "$out/convert.log" 2>&1
head -n 5 "$out/data/raw/test.src" > "$out/hf_inputs.txt"
python -m node_seq.hf.cli.translate --model "$out/hf" --beam 4 < "$out/hf_inputs.txt" > "$out/hf_outputs.txt" \
  2> "$out/hf_translate.log"
python - "$out" <<'PY'
import sys
from pathlib import Path
out = Path(sys.argv[1])
fairseq = {int(line.split("\t")[0][2:]): line.split("\t")[2] for line in
           (out / "generate.log").read_text().splitlines() if line.startswith("D-")}
sources = (out / "hf_inputs.txt").read_text().splitlines()
for i, (src, hf) in enumerate(zip(sources, (out / "hf_outputs.txt").read_text().splitlines())):
    print(f"{src:>12} -> HF: {hf}  [{'same as fairseq' if hf == fairseq[i] else 'fairseq: ' + fairseq[i]}]")
PY
