"""The optimisation loop's shared pieces for stage 2 (coarse.py) and stage 4 (train.py): image losses, the divergence
guard, learning rates, backgrounds and resumable checkpoints."""
