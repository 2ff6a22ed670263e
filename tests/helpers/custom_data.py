"""A user's data builder for tests: breast_cancer with every test label flipped.

Used through `data._target_=helpers.custom_data.breast_cancer_test_flipped` to prove that the test
split takes no part in selection (the val split and the training rows are unchanged).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from losslab.data.datasets import TensorData, sklearn_dataset


def breast_cancer_test_flipped(**kwargs: Any) -> TensorData:
    data = sklearn_dataset(**kwargs)
    return replace(data, y_test=-data.y_test)  # stored as {-1,+1}: negation flips every label
