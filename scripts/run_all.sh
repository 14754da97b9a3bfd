#!/usr/bin/env bash
# Stages 1-5 for every scene of SCENES (see scripts/common.sh); a stage whose outputs exist is skipped.
#   bash scripts/run_all.sh           run what is missing
#   bash scripts/run_all.sh --force   redo every stage
# Per-stage settings come from the numbered scripts' variables (SEGMENTER, ITERATIONS, JOINT_TYPES, ...).
# --force passes --overwrite on: each stage checks its inputs first and deletes only its own outputs.
# The file names below are scene/contract.py's (LARGER_MOTION_NAME, JOINT_VOXEL_INFO_JSON, EVAL_DIR).
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

for SCENE in $SCENES; do
  SCENE_OUT="$OUTPUT_ROOT/$DATASET/$SUBSET/$SCENE"
  COARSE_DIR="$SCENE_OUT/$COARSE_NAME/point_cloud/iteration_$COARSE_ITER"
  OVERWRITE=()
  [ "$FORCE" = 1 ] && OVERWRITE=(--overwrite)
  echo "== $SCENE"
  SCENES=$SCENE bash scripts/1_get_mask.sh "${OVERWRITE[@]}"
  if [ "$FORCE" = 1 ] || [ ! -f "$COARSE_DIR/larger_motion_state.txt" ]; then
    SCENES=$SCENE ITERATIONS=$COARSE_ITER bash scripts/2_coarse.sh "${OVERWRITE[@]}"
  else echo "stage 2: $COARSE_DIR exists, skipped"; fi
  if [ "$FORCE" = 1 ] || [ ! -f "$COARSE_DIR/joint_voxel_info.json" ]; then
    SCENES=$SCENE bash scripts/3_voxelize.sh "${OVERWRITE[@]}"
  else echo "stage 3: $COARSE_DIR/joint_voxel_info.json exists, skipped"; fi
  SCENES=$SCENE bash scripts/4_train.sh "${OVERWRITE[@]}"
  if [ "$FORCE" = 1 ] || [ ! -f "$SCENE_OUT/$MODEL_NAME/eval/metrics.json" ]; then
    SCENES=$SCENE bash scripts/5_render.sh
  else echo "stage 5: $SCENE_OUT/$MODEL_NAME/eval/metrics.json exists, skipped"; fi
done
