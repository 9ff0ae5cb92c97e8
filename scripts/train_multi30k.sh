#!/usr/bin/env bash
# Train on prepared Multi30k (see prepare_multi30k.sh). Extra arguments go to fairseq-train, e.g.
#   bash scripts/train_multi30k.sh runs/multi30k runs/m30k-node --node-rtol 0.01
#   bash scripts/train_multi30k.sh runs/multi30k runs/m30k-base --no-node-encoder --no-node-decoder
# The recipe: 3+3 layers, width 256 (node_transformer_small), shared embeddings, 10 epochs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 2 ] || { echo "usage: $0 DATA_DIR SAVE_DIR [fairseq-train options...]" >&2; exit 2; }
data="$(realpath "$1")"; save="$(realpath -m "$2")"; shift 2
cd "$root"
.venv/bin/fairseq-train "$data/bin" --user-dir user_dir --arch node_transformer_small \
  --share-all-embeddings --dropout 0.3 --weight-decay 0.0001 \
  --optimizer adam --adam-betas '(0.9, 0.98)' --clip-norm 1.0 --lr 1e-3 --lr-scheduler inverse_sqrt \
  --warmup-updates 1000 --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
  --max-tokens 4096 --max-epoch 10 --seed 1 --num-workers 0 --log-format simple --log-interval 50 \
  --save-dir "$save" --no-epoch-checkpoints "$@"
