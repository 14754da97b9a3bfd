#!/usr/bin/env bash
# Stage 5: renders, part images, orbit video, per-part meshes, metrics, joint export and URDF of each scene
# (written to <output_root>/<dataset>/<subset>/<scene>/<model_name>/eval/, swapped in whole at the end of a run).
#   ITERATION  stage-4 iteration to read (default final = the highest saved)
#   MODE       eval (default: with metrics.json) or render (no metrics)
# e.g. SCENES="cabinet fridge" bash scripts/5_render.sh --skip_train --orbit_frames 0
# then: python benchmarks/collect_results.py --root "$OUTPUT_ROOT" for the table over all scenes.
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ITERATION=${ITERATION:-final}
MODE=${MODE:-eval}

for SCENE in $SCENES; do
  $PYTHON render.py --source_path "$DATA_ROOT" --output_root "$OUTPUT_ROOT" --dataset "$DATASET" --subset "$SUBSET" \
    --scene_name "$SCENE" --resolution "$RESOLUTION" --model_name "$MODEL_NAME" --iteration "$ITERATION" \
    --mode "$MODE" "$@"
done
