"""Stage 1's segmenters: candidate region masks of one image (SAM or a classical over-segmentation) and the label maps
painted from them; `utils/get_mask.py` is the stage's entry point."""
