"""Checks on a built data set, before any run exists: every value finite, every split big enough.

A NaN or inf in the features does not fail where it is: the first training step's loss is NaN, so the
run is tagged `diverged` and counts against the loss design, and an inf in the val features gives NaN
val metrics in a FINISHED run. A split of one row fails only inside the metrics (r2 needs two), after
the run exists. Both are said here in one paragraph naming the split, and for values the column and
the count, for LossLab's builders and a user's (`data._target_=mypkg.mydata`) alike.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from losslab.data.datasets import TensorData
from losslab.data.splits import DataConfigError, check_split_sizes

#: columns named one by one in a message; the rest are counted
SHOWN = 4


def non_finite(t: Tensor, what: str) -> str | None:
    """'features: 2 NaN in column 3, 1 inf in column 7' for the non-finite values of `t`, or None.

    Columns are positions in a row (the feature index of (N, F) features; an index tuple for
    features of more dimensions, such as (N, C, L) signals); labels of one column are named
    `labels` alone."""
    if not t.is_floating_point() or t.numel() == 0:
        return None
    rows = t.detach().reshape(t.shape[0], -1) if t.dim() > 0 else t.detach().reshape(1, 1)
    nan, inf = torch.isnan(rows), torch.isinf(rows)
    if not bool((nan | inf).any()):
        return None
    shape = tuple(t.shape[1:]) or (1,)
    parts: list[str] = []
    columns = (nan | inf).any(dim=0).nonzero().reshape(-1).tolist()
    for col in columns[:SHOWN]:
        counts = []
        n_nan, n_pos, n_neg = (
            int(nan[:, col].sum()),
            int((inf[:, col] & (rows[:, col] > 0)).sum()),
            int((inf[:, col] & (rows[:, col] < 0)).sum()),
        )
        counts += [f"{n_nan} NaN"] if n_nan else []
        counts += [f"{n_pos} inf"] if n_pos else []
        counts += [f"{n_neg} -inf"] if n_neg else []
        if rows.shape[1] == 1 and what == "labels":
            place = ""
        elif len(shape) > 1:
            place = f" in column {tuple(int(i) for i in np.unravel_index(col, shape))}"
        else:
            place = f" in column {col}"
        parts.append(f"{' and '.join(counts)}{place}")
    if len(columns) > SHOWN:
        rest = int((nan | inf)[:, columns[SHOWN:]].sum())
        parts.append(f"{rest} more in {len(columns) - SHOWN} other columns")
    total = int((nan | inf).sum())
    rows_hit = int((nan | inf).any(dim=1).sum())
    return (
        f"{what}: {total} non-finite value{'s' if total != 1 else ''} in {rows_hit} of {rows.shape[0]} "
        f"rows ({', '.join(parts)})"
    )


def _splits(data: TensorData) -> list[tuple[str, Tensor, Tensor, Tensor | None]]:
    if not data.heldout:  # val and test are the train set: said once
        return [("train", data.x_train, data.y_train, data.w_train)]
    return [
        ("train", data.x_train, data.y_train, data.w_train),
        ("val", data.x_val, data.y_val, None),
        ("test", data.x_test, data.y_test, None),
    ]


def check_finite(data: TensorData) -> None:
    """Raise DataConfigError naming each split, column and count of NaN or inf features or labels."""
    found = []
    for split, x, y, w in _splits(data):
        said = [non_finite(x, "features"), non_finite(y, "labels")]
        if w is not None:
            said.append(non_finite(w, "weights"))
        said = [s for s in said if s]
        if said:
            found.append(f"the {split} split's {'; its '.join(said)}")
    if found:
        raise DataConfigError(
            f"data={data.name} holds values that are not finite: {'; '.join(found)}. Accepted: finite "
            "features and labels in every split (NaN or inf would make the first loss NaN, and the run "
            "would read as the loss diverging). Drop or impute those rows in the data builder."
        )


def check_sizes(data: TensorData) -> None:
    """Raise DataConfigError naming a split of fewer than MIN_ROWS rows (a user's builder too)."""
    check_split_sizes(
        data.name,
        int(data.x_train.shape[0]),
        int(data.x_val.shape[0]),
        int(data.x_test.shape[0]),
        data.heldout,
    )


def check_data(data: TensorData) -> None:
    """Every split big enough and every value finite: what fails only once training has started."""
    check_sizes(data)
    check_finite(data)
