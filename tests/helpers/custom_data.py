"""A user's data builders for tests.

`breast_cancer_test_flipped`: breast_cancer with every test label flipped, used through
`data._target_=helpers.custom_data.breast_cancer_test_flipped` to prove that the test split takes no part
in selection (the val split and the training rows are unchanged).

`with_non_finite`: the regression teacher with `count` values of one split's feature `column` (or, with
`column=-1`, its labels) set to `value` (nan, inf, -inf), as a user's data with missing values would be.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from losslab.data.datasets import TensorData, sklearn_dataset, teacher_regression


def breast_cancer_test_flipped(**kwargs: Any) -> TensorData:
    data = sklearn_dataset(**kwargs)
    return replace(data, y_test=-data.y_test)  # stored as {-1,+1}: negation flips every label


def with_non_finite(
    split: str = "train", column: int = 3, count: int = 2, value: float = float("nan"), **kwargs: Any
) -> TensorData:
    data = teacher_regression(**kwargs)
    key = f"y_{split}" if column < 0 else f"x_{split}"
    t = getattr(data, key).clone()
    if column < 0:
        t.view(-1)[:count] = float(value)
    else:
        t[:count, column] = float(value)
    return replace(data, **{key: t})
