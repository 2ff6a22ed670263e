"""What `build` refuses about the inputs before any run exists (issue 26, items 5, 8, 12): non-finite
features or labels, a loss that returns the wrong kind of value, splits too small for the metrics, an
absurd metric buffer. Each is a user error (one `Error:` paragraph, exit 2 on the command line)."""

from __future__ import annotations

import pytest

from conftest import compose
from losslab.config.build import ConfigError, build, user_error
from losslab.data.datasets import DataConfigError

NON_FINITE = "data._target_=helpers.custom_data.with_non_finite"


def test_nan_features_are_refused_naming_the_split_the_column_and_the_count():
    """Before: the run trained, its first loss was NaN and it was tagged `diverged` (the loss blamed)."""
    with pytest.raises(DataConfigError) as err:
        build(compose([NON_FINITE, "+data.split=train", "+data.column=3", "+data.count=2"]))
    msg = str(err.value)
    assert "the train split's features: 2 non-finite values in 2 of 600 rows (2 NaN in column 3)" in msg, msg
    assert "data=regression" in msg and "finite" in msg and user_error(err.value) is err.value


def test_inf_in_the_val_features_is_refused():
    """Before: a FINISHED run with NaN val metrics and no warning."""
    with pytest.raises(
        DataConfigError, match=r"the val split's features: 1 non-finite value .*1 inf in column 7"
    ):
        build(compose([NON_FINITE, "+data.split=val", "+data.column=7", "+data.count=1", "+data.value=inf"]))


def test_a_nan_label_is_refused_with_its_count():
    with pytest.raises(
        DataConfigError, match=r"the test split's labels: 3 non-finite values in 3 of 200 rows \(3 NaN\)"
    ):
        build(compose([NON_FINITE, "+data.split=test", "+data.column=-1", "+data.count=3"]))


def test_non_finite_values_in_several_columns_and_splits_are_all_counted():
    from losslab.data.checks import non_finite

    x = __import__("torch").zeros(10, 2, 3)
    x[0, 1, 2] = float("nan")
    x[1, 1, 2] = -float("inf")
    x[4, 0, 0] = float("inf")
    said = non_finite(x, "features")
    assert said == (
        "features: 3 non-finite values in 3 of 10 rows "
        "(1 inf in column (0, 0), 1 NaN and 1 -inf in column (1, 2))"
    )


@pytest.mark.parametrize(
    ("loss", "says"),
    [
        # before: AttributeError: 'float' object has no attribute 'dim' in LossLab's own probe
        ("ReturnsFloat", ["returned a value of type float (", "not a torch tensor"]),
        # before: passed the probe (no_grad), then failed the run with an autograd traceback
        ("ReturnsDetached", ["dtype torch.float32", "requires_grad=False", "detached from y_pred"]),
        ("ReturnsInteger", ["dtype torch.int64", "requires_grad=False", "an integer or boolean loss"]),
        ("ReturnsComplex", ["dtype torch.complex64", "requires_grad=True", "a complex loss"]),
    ],
)
def test_a_loss_returning_the_wrong_kind_of_value_is_refused_by_the_probe(loss, says):
    with pytest.raises(ConfigError) as err:
        build(compose([f"loss._target_=helpers.custom_losses.{loss}", "data=regression"]))
    msg = str(err.value)
    for text in [f"loss {loss} returned", *says, "0-dim floating-point torch tensor", "requires grad"]:
        assert text in msg, msg


def test_a_loss_that_works_in_place_on_its_prediction_still_passes_the_probe():
    """The probe's prediction is no leaf tensor, as in training: in-place arithmetic on it is allowed."""
    job = build(compose(["loss._target_=helpers.custom_losses.UnreshapedWeights", "data=regression"]))
    assert job.loss is not None


def test_a_split_too_small_for_the_metrics_is_refused():
    """Before: data.n_samples=3 failed inside torchmetrics (r2 needs two samples) after the run existed."""
    with pytest.raises(DataConfigError) as err:
        build(compose(["data.n_samples=3"]))
    msg = str(err.value)
    for text in (
        "the val split has 1 row",
        "the test split has 1 row",
        "train 1, val 1, test 1",
        "at least 2",
    ):
        assert text in msg, msg


def test_an_absurd_metric_buffer_is_refused_with_the_accepted_range():
    """Before: tracking.flush_every=100000000 allocated a 1.2 GB buffer once the run existed."""
    with pytest.raises(ConfigError, match=r"tracking.flush_every=100000000 .* an integer in \[1, 100000\]"):
        build(compose(["tracking.flush_every=100000000"]))
    build(compose(["tracking.flush_every=100000", "trainer.max_steps=2"]))  # the largest accepted value
