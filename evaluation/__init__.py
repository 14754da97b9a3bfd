"""Evaluation and export of the twin (stage 5's library): metrics against the ground truth, TSDF fusion of rendered
depth into meshes, mesh I/O and decimation, and the simulator exports (URDF, MJCF)."""
