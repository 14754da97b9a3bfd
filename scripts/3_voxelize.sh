#!/usr/bin/env bash
# Stage 3: the movable parts of the two coarse models, their initial motions and joint types (parts/ finds them).
#   NUM_PARTS      K including the static part, or auto (default: chosen by model selection)
#   JOINT_TYPES    auto (default: arguments/joint_types.json if it lists the scene, else found from the evidence)
#                  or a multiset such as s,p,p,r,r (static first); stage 4 uses the types stage 3 writes
#   VOXEL_SIZE     voxel edge in scene units (default 0.01)
#   MIN_PART_AREA  moved surface (scene units^2) one more part must explain (default 0.015)
# e.g. SCENES="cabinet fridge" bash scripts/3_voxelize.sh --save_ply --overwrite
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
NUM_PARTS=${NUM_PARTS:-auto}
JOINT_TYPES=${JOINT_TYPES:-auto}
VOXEL_SIZE=${VOXEL_SIZE:-0.01}
MIN_PART_AREA=${MIN_PART_AREA:-0.015}

for SCENE in $SCENES; do
  $PYTHON voxelize.py --source_path "$DATA_ROOT" --output_root "$OUTPUT_ROOT" --dataset "$DATASET" \
    --subset "$SUBSET" --scene_name "$SCENE" --coarse_name "$COARSE_NAME" --coarse_iter "$COARSE_ITER" \
    --voxel_size "$VOXEL_SIZE" --min_part_area "$MIN_PART_AREA" --num_parts "$NUM_PARTS" \
    --joint_types "$JOINT_TYPES" "$@"
done
