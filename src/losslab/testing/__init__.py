"""Tools for tests and the bench: a synthetic store, the chaos round."""
