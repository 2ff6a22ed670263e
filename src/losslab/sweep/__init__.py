"""Sweeps: the Hydra callback, the parent run, launchers' workers, interrupts."""
