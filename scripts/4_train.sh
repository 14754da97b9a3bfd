#!/usr/bin/env bash
# Stage 4: geometry-motion alternating refinement (part logits + joints + surfels) from stages 1-3
# (written to <output_root>/<dataset>/<subset>/<scene>/<model_name>/).
#   ITERATIONS   refinement iterations (default: train.py's, 30000; E/M phases alternate every 4000)
# Joint types are stage 3's (JOINT_TYPES goes to scripts/3_voxelize.sh, which assigns them to the parts).
# e.g. SCENES="cabinet fridge" bash scripts/4_train.sh --random_bg_color
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ITERATIONS_ARGS=()
[ -n "${ITERATIONS:-}" ] && ITERATIONS_ARGS=(--iterations "$ITERATIONS")

for SCENE in $SCENES; do
  $PYTHON train.py --source_path "$DATA_ROOT" --output_root "$OUTPUT_ROOT" --dataset "$DATASET" --subset "$SUBSET" \
    --scene_name "$SCENE" --resolution "$RESOLUTION" --model_name "$MODEL_NAME" --coarse_name "$COARSE_NAME" \
    --coarse_iter "$COARSE_ITER" "${ITERATIONS_ARGS[@]}" "$@"
done
