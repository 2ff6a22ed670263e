"""LossLab's Hydra launcher plugin (Hydra accepts launchers only from the hydra_plugins package)."""
