#!/usr/bin/env bash
# Stage 3: dynamic voxel components of the two coarse models, matched across states; initial part motions.
#   NUM_PARTS    K including the static part, or auto (default)
#   JOINT_TYPES  auto (arguments/joint_types.json if it lists the scene, else guessed) or e.g. s,r,p
#   VOXEL_SIZE   voxel edge in scene units (default 0.01); METHOD refined (default) or plane (the paper's estimate)
# e.g. SCENES="cabinet fridge" bash scripts/3_voxelize.sh --save_ply --overwrite
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
NUM_PARTS=${NUM_PARTS:-auto}
JOINT_TYPES=${JOINT_TYPES:-auto}
VOXEL_SIZE=${VOXEL_SIZE:-0.01}
METHOD=${METHOD:-refined}

# shellcheck disable=SC2086  # SCENES is a space-separated list
$PYTHON voxelize.py --dataset "$DATASET" --subset "$SUBSET" --scenes $SCENES --output_root "$OUTPUT_ROOT" \
  --coarse_name "$COARSE_NAME" --iteration "$COARSE_ITER" --voxel_size "$VOXEL_SIZE" --dilation_radius 1 \
  --num_parts "$NUM_PARTS" --joint_types "$JOINT_TYPES" --method "$METHOD" "$@"
