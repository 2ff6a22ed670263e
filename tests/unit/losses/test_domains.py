"""Label domains of losses that are not LossLab's: stock torch losses, `loss.domain`, a user's class.

A binary label in the wrong domain trains silently (torch's BCEWithLogitsLoss on {-1,+1} labels
goes negative at chance accuracy and still reads `converged`); a declared domain that the data
cannot meet must be one `Error:` paragraph before any run exists. Real Lightning fits into a real
sqlite store, the real CLI in a subprocess.
"""

from __future__ import annotations

import logging

import pytest

from conftest import ROOT, all_runs, compose, run_train
from losslab import gradcheck
from losslab.config.build import ConfigError, build
from losslab.losses import LossInputError
from losslab.losses.domains import LabelDomainError
from losslab.train import job as task

UNDECLARED = "declares no label domain"


@pytest.mark.parametrize(
    ("target", "data", "domain"),
    [
        ("torch.nn.BCEWithLogitsLoss", "binary", "01"),  # data stored as {-1,+1}
        ("torch.nn.SoftMarginLoss", "binary01", "pm1"),  # data stored as {0,1}
    ],
)
def test_a_stock_torch_loss_gets_the_labels_its_docs_state_and_learns(store, client, target, data, domain):
    """Before: {-1,+1} to BCEWithLogitsLoss (val/loss < 0, accuracy ~0.5, tagged converged), and {0,1}
    to SoftMarginLoss (label 0 pushes nothing)."""
    result = task.train(compose([f"loss._target_={target}", f"data={data}", "trainer.max_steps=60"]))
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    val_loss = [m.value for m in client.get_metric_history(result.run_id, "val/loss")]
    assert val_loss and min(val_loss) >= 0.0  # both losses are >= 0 on labels in their domain
    assert run.data.metrics["best/val_accuracy"] > 0.75  # learnable data, well above chance
    assert run.data.tags["labels"] == domain and run.data.tags["labels_from"] == "torch docs"


def test_a_loss_with_no_domain_on_binary_data_says_which_labels_it_got(caplog):
    with caplog.at_level(logging.WARNING, logger="losslab"):
        job = build(compose(["loss._target_=torch.nn.L1Loss", "data=binary"]))
    assert job.data.labels == "pm1" and job.labels_from == "undeclared"  # today's behaviour, kept
    said = [r.getMessage() for r in caplog.records if UNDECLARED in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0]
    assert "{-1, +1}" in said[0] and "data.labels=pm1" in said[0] and "+loss.domain=" in said[0]


def test_loss_domain_in_the_config_declares_any_callables_domain(caplog):
    with caplog.at_level(logging.WARNING, logger="losslab"):
        job = build(compose(["loss._target_=torch.nn.L1Loss", "data=binary", "+loss.domain=01"]))
        real = build(compose(["loss._target_=torch.nn.L1Loss", "data=binary", "+loss.domain=real"]))
        build(compose(["loss._target_=torch.nn.L1Loss", "data=regression"]))
    assert job.data.labels == "01" and job.labels_from == "config" and job.loss.domain == "01"
    assert real.data.labels == "pm1" and real.labels_from == "config"  # stored labels, on purpose
    assert not [r for r in caplog.records if UNDECLARED in r.getMessage()]


def test_a_declared_domain_that_is_wrong_or_contradicts_the_loss_is_refused():
    with pytest.raises(LabelDomainError, match=r"loss.domain=01 contradicts loss Hinge.*'pm1'"):
        build(compose(["loss=hinge", "+loss.domain=01"]))
    with pytest.raises(LabelDomainError, match=r"loss.domain='binary'.*accepted: real .*pm1 .*01 "):
        build(compose(["loss._target_=torch.nn.L1Loss", "data=binary", "+loss.domain=binary"]))


def test_a_stock_binary_loss_on_regression_data_is_refused_with_the_override():
    with pytest.raises(LossInputError) as info:
        build(compose(["loss._target_=torch.nn.BCEWithLogitsLoss", "data=regression"]))
    text = str(info.value)
    assert "BCEWithLogitsLoss" in text and "data=regression" in text and "data=binary" in text
    assert "+loss.domain=real overrides it" in text
    real = build(compose(["loss._target_=torch.nn.BCEWithLogitsLoss", "+loss.domain=real"]))
    assert real.loss.domain == "real" and real.labels_from == "config"


def test_a_loss_that_cannot_be_called_on_a_prediction_and_a_target_is_a_config_error():
    with pytest.raises(ConfigError, match=r"MarginRankingLoss takes 3 inputs \(input1, input2, target\)"):
        build(compose(["loss._target_=torch.nn.MarginRankingLoss", "data=binary"]))
    with pytest.raises(ConfigError, match=r"BCELoss failed on a batch of data=binary.*between 0 and 1"):
        build(compose(["loss._target_=torch.nn.BCELoss", "data=binary"]))  # raw scores, not probabilities


def test_a_user_loss_declaring_01_on_regression_data_is_one_error_paragraph(store, client):
    """Before: torch's raw traceback (target outside [0, 1]) and exit 1."""
    proc = run_train(
        [
            "loss._target_=tests.helpers.custom_losses.ProbabilityBCE",
            "data=regression",
            "trainer.max_steps=5",
        ],
        cwd=ROOT,
        env={"MLFLOW_TRACKING_URI": store, "HYDRA_FULL_ERROR": ""},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr
    for text in ("ProbabilityBCE", "label domain 01", "{0, 1}", "data=regression", "data=binary"):
        assert text in proc.stderr, text
    assert all_runs(client) == []  # refused before the run existed: nothing RUNNING, nothing at all


def test_gradcheck_reads_loss_domain_like_training(capsys):
    """`+loss.domain=01` used to reach L1Loss's constructor; now its targets are drawn from {0, 1}."""
    assert gradcheck.main(["loss._target_=torch.nn.L1Loss", "+loss.domain=01"]) in (0, 1)
    out = capsys.readouterr()
    assert "cannot build the loss" not in out.err and "declares no `domain`" not in out.out


def test_any_error_of_a_loss_on_the_probe_batch_is_a_config_error():
    """Before: only RuntimeError, ValueError and TypeError were; an IndexError was a traceback."""
    with pytest.raises(ConfigError, match=r"IndexesAColumn failed on a batch .*IndexError"):
        build(compose(["loss._target_=helpers.custom_losses.IndexesAColumn", "data=regression"]))


def test_bce_loss_on_raw_scores_says_how_to_fix_it():
    with pytest.raises(ConfigError, match=r"loss._target_=torch.nn.BCEWithLogitsLoss"):
        build(compose(["loss._target_=torch.nn.BCELoss", "data=binary"]))


def test_a_config_domain_against_torchs_docs_is_allowed_and_said(caplog):
    with caplog.at_level(logging.WARNING, logger="losslab"):
        job = build(compose(["loss._target_=torch.nn.BCEWithLogitsLoss", "data=binary", "+loss.domain=pm1"]))
        kept = build(compose(["loss._target_=torch.nn.BCEWithLogitsLoss", "data=binary", "+loss.domain=01"]))
    assert job.data.labels == "pm1" and kept.data.labels == "01"
    said = [r.getMessage() for r in caplog.records if "overrides what torch documents" in r.getMessage()]
    assert len(said) == 1 and "{0, 1}" in said[0] and "{-1, +1}" in said[0]
