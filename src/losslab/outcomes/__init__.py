"""What happened to a run, read off its curves (numpy only, no torch)."""
