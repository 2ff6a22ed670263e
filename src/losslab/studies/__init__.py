"""LossLab's studies: `experiment/NAME.yaml`, found through `hydra.searchpath` (pkg://losslab.studies)."""
