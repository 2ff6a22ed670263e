"""LossLab's stacked-seeds Hydra launcher (Hydra accepts launchers only from the hydra_plugins package)."""
