"""Lightning callbacks LossLab adds to every Trainer."""
