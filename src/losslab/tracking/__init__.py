"""MLflow: the store, runs and their lifecycle, names, liveness, fingerprints."""
