"""Data sets as tensors, their splits, and the LightningDataModule that serves them.

The builders are exported here because configs name them as `losslab.data.<builder>`
(`_target_` in conf/data/*.yaml and in users' own data configs).
"""

from losslab.data.datasets import seed_noise, sklearn_dataset, teacher_binary, teacher_regression
from losslab.data.multiclass import digits, mnist1d

__all__ = ["digits", "mnist1d", "seed_noise", "sklearn_dataset", "teacher_binary", "teacher_regression"]
