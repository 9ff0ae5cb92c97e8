#!/usr/bin/env bash
# Train on prepared Multi30k (see prepare_multi30k.sh) with the reference recipe; extra arguments go
# to fairseq-train and override it, e.g.
#   bash scripts/train_multi30k.sh runs/multi30k runs/m30k-base --no-node-encoder --no-node-decoder --node-plain-norm post
#   bash scripts/train_multi30k.sh runs/multi30k runs/m30k-node --node-rtol 0.01
# The reference recipe (fairseq's `transformer` with it: 35.8 sacreBLEU on test_2016_flickr here):
# 3+3 layers, width 256, FFN 1024, 4 heads (node_transformer_small), shared embeddings, dropout 0.3,
# attention dropout 0.1, weight decay 1e-4, Adam (0.9, 0.98), lr 1e-3, inverse_sqrt with 300 warm-up
# updates, label smoothing 0.1, 4096 tokens per batch, 10 epochs, seed 1.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 2 ] || { echo "usage: $0 DATA_DIR SAVE_DIR [fairseq-train options...]" >&2; exit 2; }
data="$(realpath "$1")"; save="$(realpath -m "$2")"; shift 2
cd "$root"
.venv/bin/fairseq-train "$data/bin" --user-dir user_dir --arch node_transformer_small \
  --share-all-embeddings --dropout 0.3 --attention-dropout 0.1 --weight-decay 0.0001 \
  --optimizer adam --adam-betas '(0.9, 0.98)' --lr 1e-3 --lr-scheduler inverse_sqrt \
  --warmup-updates 300 --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
  --max-tokens 4096 --max-epoch 10 --seed 1 --num-workers 0 --log-format simple --log-interval 50 \
  --save-dir "$save" --no-epoch-checkpoints "$@"
