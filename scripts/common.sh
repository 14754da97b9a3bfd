# Shared settings of the numbered scripts. Edit the defaults here or override them per run, e.g.
#   DATASET=paris SUBSET=sapien SCENES="fridge oven" bash scripts/2_coarse.sh
# Extra arguments given to a numbered script are passed on to its Python entry point. The folder and file names
# the stages pass to each other are scene/contract.py's.
DATA_ROOT=${DATA_ROOT:-data}          # holds <dataset>/<subset>/<scene>
OUTPUT_ROOT=${OUTPUT_ROOT:-outputs}   # results go to <output_root>/<dataset>/<subset>/<scene>/
DATASET=${DATASET:-gear}
SUBSET=${SUBSET:-synthetic}
SCENES=${SCENES:-cabinet}             # space-separated scene names
COARSE_NAME=${COARSE_NAME:-coarse_gs} # folder of the stage-2 model inside the scene's output folder
COARSE_ITER=${COARSE_ITER:-30000}
RESOLUTION=${RESOLUTION:--1}        # image size for stages 2, 4, 5: -1 native, 2/4/8 downscale, >8 width
MODEL_NAME=${MODEL_NAME:-gear}        # folder of the stage-4 model inside the scene's output folder
PYTHON=${PYTHON:-python}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
