#!/usr/bin/env bash
# Stage 2: one coarse 2D Gaussian surfel model per joint state, and which state has the larger motion
# (written to <output_root>/<dataset>/<subset>/<scene>/<coarse_name>/).
#   ITERATIONS   training iterations (default COARSE_ITER from common.sh)
#   RESOLUTION   (scripts/common.sh) -1 native, 2/4/8 downscale, or a target width in pixels
# Resumes from the latest checkpoint; pass --overwrite to retrain. e.g.
#   SCENES="cabinet fridge" RESOLUTION=400 bash scripts/2_coarse.sh --no-random_bg_color
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ITERATIONS=${ITERATIONS:-$COARSE_ITER}

for SCENE in $SCENES; do
  $PYTHON coarse.py --source_path "$DATA_ROOT" --output_root "$OUTPUT_ROOT" --dataset "$DATASET" --subset "$SUBSET" \
    --scene_name "$SCENE" --coarse_name "$COARSE_NAME" --iterations "$ITERATIONS" --resolution "$RESOLUTION" "$@"
done
