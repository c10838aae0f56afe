#!/usr/bin/env bash
# Reproduces models/default: the project's small Mamba-1 base, pretrained from scratch with the
# project's own trainer (`statetune-engine train --methods full`) on English text from Debian packages
# plus the training splits of ../shared/datasets (scripts/pretrain/prepare_corpus.sh).
#
# Usage: scripts/pretrain/pretrain_default_model.sh [--seconds S] [--out DIR] [--from DIR]
#                                                   [--max-length N] [--lr LR] [--build-dir DIR]
#   --seconds S     wall-clock budget of the training run (default 3600); the cosine schedule is fitted
#                   to it from the measured step time, so the run ends at its floor learning rate
#   --out DIR       where the model folder goes (default models/default)
#   --from DIR      continue from this model folder instead of a fresh initialisation (a second stage:
#                   new warm-up and cosine, optimizer state starts empty); its training_output.txt is
#                   kept at the top of the new one, so the folder records every stage
#   --max-length N  tokens per training window (default 128)     --lr LR  peak learning rate (default 3e-3)
# Environment: STATETUNE_CORPUS_DIR (default /tmp/statetune-corpus), STATETUNE_THREADS,
# STATETUNE_PRETRAIN_DEVICE (cpu, or cuda with a CUDA LibTorch build; default cpu).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SECONDS_BUDGET=3600
OUT=$ROOT/models/default
BUILD_DIR=$ROOT/build
FROM=
MAX_LENGTH=128
LR=3e-3
while (($#)); do
  case $1 in
    --seconds) SECONDS_BUDGET=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --from) FROM=$2; shift 2 ;;
    --max-length) MAX_LENGTH=$2; shift 2 ;;
    --lr) LR=$2; shift 2 ;;
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
ENGINE=$BUILD_DIR/server/engine/tools/statetune-engine
CORPUS=${STATETUNE_CORPUS_DIR:-/tmp/statetune-corpus}
WORK=$(mktemp -d /tmp/statetune-pretrain.XXXXXX)
[[ -x $ENGINE ]] || { echo "build first: scripts/setup.sh" >&2; exit 1; }
[[ -f $CORPUS/train.jsonl ]] || "$ROOT/scripts/pretrain/prepare_corpus.sh" "$CORPUS"

# The shape: d_model 256, 8 layers, d_state 16, expand 2, d_conv 4, dt_rank 16, the GPT-NeoX
# vocabulary (50277 tokens, padded to 50280), tied embeddings. 16.4M parameters, of which 12.9M are
# the embedding; bf16 on disk is about 33 MB.
if [[ -n $FROM ]]; then
  # Copied first: --out may be the --from folder itself, and the trainer rewrites --out as it goes.
  cp -r "$FROM" "$WORK/init"
else
  "$ENGINE" init-model --out "$WORK/init" --d-model 256 --n-layer 8 --vocab 50280 --d-state 16 \
    --expand 2 --d-conv 4 --seed 0 --tokenizer "$ROOT/../shared/models/gpt-neox-20b-tokenizer.json"
fi

# Windows of 128 tokens, 8 per step; peak learning rate 3e-3 after 100 warm-up steps, cosine to 10%.
"$ENGINE" train --methods full --model "$WORK/init" \
  --data "$CORPUS/train.jsonl" --heldout-data "$CORPUS/heldout.jsonl" --out "$OUT" \
  --max-length "$MAX_LENGTH" --batch-size 8 --max-steps 100000 --max-seconds "$SECONDS_BUDGET" \
  --lr "$LR" --warmup-steps 100 --min-lr-ratio 0.1 --weight-decay 0.1 --eval-every 200 \
  --eval-windows 128 --log-every 20 --seed 0 --save-dtype bf16 --device "${STATETUNE_PRETRAIN_DEVICE:-cpu}" \
  --threads "${STATETUNE_THREADS:-$(nproc)}" 2>&1 | tee "$WORK/train.log"
if [[ -f $WORK/init/training_output.txt ]]; then
  { cat "$WORK/init/training_output.txt"
    echo
    echo "# continued from that model: max length $MAX_LENGTH, peak lr $LR, $SECONDS_BUDGET s"
    cat "$WORK/train.log"; } > "$OUT/training_output.txt"
  if [[ -f $WORK/init/training_log.json ]]; then
    cp "$WORK/init/training_log.json" "$OUT/training_log.previous_stage.json"
  fi
else
  cp "$WORK/train.log" "$OUT/training_output.txt"
fi
echo "pretrain: model in $OUT (log $OUT/training_log.json)"
