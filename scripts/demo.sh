#!/usr/bin/env bash
# Demo: installs the project (scripts/install.sh), renders a synthetic two-state cabinet, and runs stages 1-5 on it.
# With CUDA: 400 px, 48 views per state, the default schedules. Without: a small, fast CPU preset (64 px, short
# schedules) that still writes every output. Stage 1 uses SAM when submodules/sam_vit_h_4b8939.pth exists, otherwise
# the classical segmenter (a weaker prior; see submodules/README.md for the weights).
#   CATEGORY=fridge bash scripts/demo.sh      another synthetic category (cabinet drawers fridge storage laptop oven)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/install.sh
source scripts/install.sh
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

CATEGORY=${CATEGORY:-cabinet}
DATA_ROOT=${DATA_ROOT:-data}
OUTPUT_ROOT=${OUTPUT_ROOT:-outputs}
SCENE_ARGS=(--source_path "$DATA_ROOT" --output_root "$OUTPUT_ROOT" --dataset gear --subset demo --scene_name "$CATEGORY")
if python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "[demo] CUDA found: full preset (400 px, 48 views per state, default schedules)"
  RES=400; VIEWS=48; TEST_VIEWS=8; COARSE_ITER=30000
  COARSE_ARGS=(); VOXEL_ARGS=(); TRAIN_ARGS=(); RENDER_ARGS=()
else
  echo "[demo] no CUDA: small CPU preset (64 px, 16 views per state, short schedules; a few minutes)"
  RES=64; VIEWS=16; TEST_VIEWS=4; COARSE_ITER=600
  COARSE_ARGS=(--iterations 600 --densify_from_iter 100 --densify_until_iter 400 --opacity_reset_interval 10000
               --normal_from_iter 300 --dist_from_iter 200 --opacity_from_iter 400 --opacity_lr 0.1
               --save_iterations 600 --data_device cpu)
  VOXEL_ARGS=(--voxel_size 0.04 --opacity_threshold 0.2)
  TRAIN_ARGS=(--iterations 300 --em_interval 100 --densify_from_iter 50 --densify_until_iter 250
              --densification_interval 50 --prismatic_switch_iter 150 --checkpoint_iterations 300 --log_interval 50
              --data_device cpu)
  RENDER_ARGS=(--data_device cpu)
fi

SCENE_DIR="$DATA_ROOT/gear/demo/$CATEGORY"
if [ ! -f "$SCENE_DIR/transforms_test_end.json" ]; then
  python -m data_tools.synthetic --category "$CATEGORY" --seed 0 --out "$SCENE_DIR" --res "$RES" --views "$VIEWS" \
    --test_views "$TEST_VIEWS"
fi
SEGMENTER=sam
if [ ! -f submodules/sam_vit_h_4b8939.pth ]; then
  SEGMENTER=classic
  echo "[demo] no SAM weights in submodules/sam_vit_h_4b8939.pth: stage 1 uses the classical segmenter (weaker prior)"
fi
python utils/get_mask.py "${SCENE_ARGS[@]}" --segmenter "$SEGMENTER"
python coarse.py "${SCENE_ARGS[@]}" --random_bg_color "${COARSE_ARGS[@]}"
# Stage 3 finds the part count and the joint types itself (nothing of the generated object is given to it).
python voxelize.py "${SCENE_ARGS[@]}" --coarse_iter "$COARSE_ITER" "${VOXEL_ARGS[@]}"
python train.py "${SCENE_ARGS[@]}" --coarse_iter "$COARSE_ITER" --random_bg_color "${TRAIN_ARGS[@]}"
python render.py "${SCENE_ARGS[@]}" "${RENDER_ARGS[@]}"

EVAL="$OUTPUT_ROOT/gear/demo/$CATEGORY/gear/eval"
echo "[demo] results in $EVAL: joint_info.json, metrics.json, meshes/, urdf/, renders and orbit video"
python - "$EVAL/metrics.json" <<'PY'
import json, sys
from evaluation.metrics import HEADLINE_KEYS
summary = json.load(open(sys.argv[1]))["summary"]
print("[demo] metrics:", ", ".join(f"{k} {summary[k]:.4g}" for k in HEADLINE_KEYS if summary.get(k) is not None))
PY
