#!/usr/bin/env bash
# Stage 1: SAM part priors (label maps) for every training image of both states of each scene
# (written to <output_root>/<dataset>/<subset>/<scene>/masks/).
#   SAM_CHECKPOINT  ViT-H weights (default submodules/sam_vit_h_4b8939.pth; see submodules/README.md)
#   SEGMENTER       sam (default) or classic (a classical over-segmentation: a weaker prior, no weights needed)
# e.g. SCENES="cabinet fridge" bash scripts/1_get_mask.sh --save_visualization
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
SAM_CHECKPOINT=${SAM_CHECKPOINT:-submodules/sam_vit_h_4b8939.pth}
SEGMENTER=${SEGMENTER:-sam}

for SCENE in $SCENES; do
  $PYTHON utils/get_mask.py --source_path "$DATA_ROOT" --output_root "$OUTPUT_ROOT" --dataset "$DATASET" \
    --subset "$SUBSET" --scene_name "$SCENE" --segmenter "$SEGMENTER" --sam_checkpoint "$SAM_CHECKPOINT" "$@"
done
