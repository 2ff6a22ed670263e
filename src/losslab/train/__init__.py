"""One training job: the LightningModule, the Trainer and the task metrics."""
