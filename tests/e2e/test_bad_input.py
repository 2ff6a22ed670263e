"""Bad input, table-driven: a clear short error, exit code != 0, and the store left exactly as it was.

Every case runs the real CLI in a subprocess against a store that already holds one finished
run; afterwards the store must hold that run only, and nothing RUNNING.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import ROOT, all_runs, compose, train_cmd
from losslab.train import job as task

SEED_W = "[1,2,1,1,3,1,1,2,1,1]"
DATA, LOSSES = "tests.helpers.custom_data", "tests.helpers.custom_losses"
FORKED_CLI = ROOT / "tests" / "helpers" / "forked_cli.py"


@dataclass
class Case:
    id: str
    args: list[str]
    says: list[str]  # substrings the message must contain: the bad value and what is accepted
    uri: str | None = None  # tracking URI instead of the test store ({tmp} is replaced)
    env: dict[str, str] = field(default_factory=dict)


CASES = [
    # config mistakes (losslab.config.commandline): the bad value, the closest accepted one, what is accepted
    Case("unknown-loss", ["loss=hinje"], ["loss=hinje", "Did you mean loss=hinge?", "bce_with_logits"]),
    Case("unknown-model", ["model=nope"], ["model=nope", "mlp"]),
    Case("unknown-data", ["data=nope"], ["data=nope", "breast_cancer"]),
    Case("unknown-optimizer", ["optimizer=nope"], ["optimizer=nope", "adam"]),
    Case("mistyped-group", ["optimzer=sgd"], ["optimzer", "Did you mean optimizer=sgd?"]),
    Case("mistyped-param", ["loss=hinge", "loss.margni=1"], ["loss.margni", "accepts", "loss.margin?"]),
    Case(
        "mistyped-outcome",
        ["outcome.windw=5"],
        ["outcome.windw", "outcome.min_window?", "stop_on_divergence"],
    ),
    Case("study-without-plus", ["experiment=hinge_margin"], ["did you mean +experiment=hinge_margin?"]),
    Case("unknown-study", ["+experiment=hinge_margn"], ["Did you mean +experiment=hinge_margin?"]),
    Case("sweep-without-m", ["seed=0,1"], ["seed=0,1", "-m"]),
    Case("non-numeric-margin", ["loss=hinge", "loss.margin=abc"], ["margin", "'abc'", "finite number"]),
    Case(
        "weights-wrong-length",
        ["recipe=seed_weighted_mse", "loss.weights=[1,2,3]"],
        ["3 entries", "10 samples", "one weight per sample"],
    ),
    Case(
        "negative-weight",
        ["recipe=seed_weighted_mse", "loss.weights=[1,-2,1,1,3,1,1,2,1,1]"],
        ["-2", "finite and >= 0"],
    ),
    Case(
        "nan-weight",
        ["recipe=seed_weighted_mse", "loss.weights=[1,nan,1,1,3,1,1,2,1,1]"],
        ["nan", "finite and >= 0"],
    ),
    # binary data of either encoding serve every binary loss; real-valued targets do not
    Case("real-labels-for-a-classifier", ["loss=hinge", "data=regression"], ["real-valued", "data=binary"]),
    Case("bce-with-real-labels", ["loss=bce_with_logits", "data=diabetes"], ["{0, 1}", "data=diabetes"]),
    Case(
        "user-model-shape-mismatch",
        ["model._target_=tests.helpers.custom_losses.two_outputs"],
        ["(64, 2)", "(64, 1)", "equal shapes"],
    ),
    Case("lr-zero", ["optimizer.lr=0"], ["optimizer.lr=0", "finite number > 0"]),
    Case("lr-negative", ["optimizer.lr=-0.1"], ["optimizer.lr=-0.1", "finite number > 0"]),
    Case("lr-inf", ["optimizer.lr=inf"], ["optimizer.lr=inf", "finite number > 0"]),
    Case("max-steps-zero", ["trainer.max_steps=0"], ["trainer.max_steps=0", "integer >= 1"]),
    Case("gpu-without-gpu", ["trainer.accelerator=gpu"], ["trainer.accelerator=gpu", "accepted here: cpu"]),
    Case("target-does-not-import", ["loss._target_=nopkg.NoLoss"], ["nopkg.NoLoss", "package.module.Class"]),
    Case("bad-activation", ["model.activation=swish"], ["swish", "relu"]),
    Case("unreachable-server", [], ["127.0.0.1:9", "not reachable"], uri="http://127.0.0.1:9"),
    Case("unwritable-sqlite", [], ["/proc/sys/mlflow.db", "writable"], uri="sqlite:////proc/sys/mlflow.db"),
    Case("missing-folder", [], ["/nonexistent-dir", "does not exist"], uri="sqlite:////nonexistent-dir/m.db"),
    Case("corrupt-sqlite", [], ["not a SQLite database"], uri="sqlite:///{tmp}/corrupt.db"),
    Case("foreign-sqlite", [], ["users", "not an MLflow store"], uri="sqlite:///{tmp}/foreign.db"),
    # errors that used to surface after the run existed (issue 13): refused before it exists
    Case("devices-zero", ["trainer.devices=0"], ["trainer.devices=0", "integer >= 1", "auto"]),
    Case("strategy-unknown", ["trainer.strategy=nope"], ["trainer.strategy='nope'", "ddp", "auto"]),
    Case("trainer-unknown-key", ["+trainer.bogus=1"], ["trainer.bogus", "max_steps", "precision"]),
    Case(
        "flush-every-zero", ["tracking.flush_every=0"], ["tracking.flush_every=0", "integer in [1, 100000]"]
    ),
    Case("grad-every-zero", ["grad_stats.every_n_steps=0"], ["grad_stats.every_n_steps=0", "integer >= 1"]),
    Case("param-key-too-long", ["+extra={" + "k" * 260 + ":1}"], ["266 characters", "at most 250"]),
    Case("lr-overflows-float32", ["optimizer.lr=1e300"], ["optimizer.lr=1e+300", "at most 3.4e+38"]),
    Case("check-val-zero", ["trainer.check_val_every_n_epoch=0"], ["check_val_every_n_epoch=0", ">= 1"]),
    Case("retry-seconds-nan", ["tracking.retry_seconds=nan"], ["tracking.retry_seconds=nan", "finite"]),
    # inputs that used to fail, or be blamed on the loss, after the run existed (issue 26, items 5, 8, 12)
    Case(
        "nan-features",
        [f"data._target_={DATA}.with_non_finite", "+data.split=train", "+data.column=3", "+data.count=2"],
        ["data=regression", "the train split's features", "2 NaN in column 3", "finite"],
    ),
    Case(
        "inf-val-features",
        [f"data._target_={DATA}.with_non_finite", "+data.split=val", "+data.count=1", "+data.value=inf"],
        ["the val split's features", "1 inf in column 3"],
    ),
    Case(
        "loss-returns-float",
        [f"loss._target_={LOSSES}.ReturnsFloat"],
        ["ReturnsFloat returned a value of type float", "0-dim floating-point torch tensor"],
    ),
    Case(
        "loss-returns-detached",
        [f"loss._target_={LOSSES}.ReturnsDetached"],
        ["dtype torch.float32", "requires_grad=False", "detached"],
    ),
    Case("too-few-samples", ["data.n_samples=3"], ["the val split has 1 row", "at least 2 rows"]),
    Case("flush-every-huge", ["tracking.flush_every=100000000"], ["flush_every=100000000", "[1, 100000]"]),
]

if __import__("torch").cuda.is_available():  # pragma: no cover - the GPU case is valid there
    CASES = [c for c in CASES if c.id != "gpu-without-gpu"]


@pytest.fixture(scope="module")
def seeded_store(tmp_path_factory) -> tuple[str, str, Path]:
    """A store holding one finished run; its run id; a folder for corrupt/foreign files."""
    tmp = tmp_path_factory.mktemp("bad_input")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        result = task.train(compose(["trainer.max_steps=3"]))
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
    (tmp / "corrupt.db").write_text("this is not a database")
    with sqlite3.connect(tmp / "foreign.db") as con:
        con.execute("create table users (id integer, name text)")
    return uri, result.run_id, tmp


def _command(case: Case, uri: str, tmp: Path) -> dict:
    """The case's `python train.py ARGS`: arguments, environment and working directory."""
    target = case.uri.format(tmp=tmp) if case.uri else uri
    env = {**os.environ, "MLFLOW_TRACKING_URI": target, **case.env}
    env.pop("HYDRA_FULL_ERROR", None)
    args = [*case.args, "trainer.max_steps=5"] if case.id != "max-steps-zero" else case.args
    return {"id": case.id, "args": args, "env": env, "cwd": str(ROOT)}


def _run(case: Case, uri: str, tmp: Path) -> subprocess.CompletedProcess:
    """The case in a fresh interpreter of its own."""
    cmd = _command(case, uri, tmp)
    return subprocess.run(
        train_cmd(*cmd["args"]), cwd=cmd["cwd"], env=cmd["env"], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def outcomes(seeded_store, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every case once, each in its own process: forked, two at a time, from one interpreter that has
    already imported torch, Lightning and MLflow (tests/helpers/forked_cli.py), so the ~5 s of imports
    a fresh `python train.py` pays is paid once, not per case."""
    uri, _, tmp = seeded_store
    out = tmp_path_factory.mktemp("bad_input_runs")
    (out / "cases.json").write_text(json.dumps([_command(c, uri, tmp) for c in CASES]))
    runner = subprocess.run(
        [sys.executable, str(FORKED_CLI), str(out / "cases.json"), str(out)],
        capture_output=True,
        text=True,
        timeout=120 * len(CASES),  # each case's own limit is 120 s, as subprocess.run's was
    )
    assert runner.returncode == 0, runner.stdout + runner.stderr
    results = json.loads((out / "results.json").read_text())
    print("\n".join(f"{k}: {r['seconds']:.1f}s" for k, r in results.items()))
    return {
        c.id: subprocess.CompletedProcess(
            c.args,
            results[c.id]["returncode"],
            (out / f"{c.id}.out").read_text(),
            (out / f"{c.id}.err").read_text(),
        )
        for c in CASES
    }


@pytest.mark.parametrize("case_id", ["unknown-loss", "corrupt-sqlite"])
def test_a_forked_case_runs_as_a_fresh_interpreter_does(case_id: str, outcomes, seeded_store):
    """The forks are faithful: a case's exit status and output equal those of a fresh `python train.py`."""
    case = next(c for c in CASES if c.id == case_id)
    uri, _, tmp = seeded_store
    fresh, forked = _run(case, uri, tmp), outcomes[case_id]
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_a_short_clear_error_and_leaves_no_trace(case: Case, outcomes, seeded_store):
    proc = outcomes[case.id]
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    for text in case.says:
        assert text in output, f"{text!r} missing from:\n{output}"
    assert "Traceback" not in output
    # refused before anything runs (config, data, loss, store): one paragraph, exit 2, nothing else
    assert proc.returncode == 2, output
    assert proc.stdout == "" and proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1
    uri, run_id, _ = seeded_store
    from mlflow.tracking import MlflowClient

    runs = all_runs(MlflowClient(uri))
    assert [r.info.run_id for r in runs] == [run_id]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_a_silent_tracking_server_fails_fast(store, tmp_path: Path):
    """A server that accepts connections but never answers: refused by the health check, before training
    and before the write retries' 60 s."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
        started = time.perf_counter()
        proc = subprocess.run(
            train_cmd("trainer.max_steps=5"),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.perf_counter() - started
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()
    assert proc.returncode == 2
    assert "not reachable" in proc.stderr and "Traceback" not in proc.stderr
    # the 5 s health check plus process start-up (10-16 s on a loaded 2-core machine), well below the
    # 60 s of retries (tracking.retry_seconds) a silent server would otherwise cost
    assert took < 45


def test_hydra_full_error_shows_the_traceback(seeded_store):
    env = {**os.environ, "MLFLOW_TRACKING_URI": seeded_store[0], "HYDRA_FULL_ERROR": "1"}
    for bad in ("loss=nope", "optimizer.lr=0"):
        proc = subprocess.run(train_cmd(bad), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "Traceback" in proc.stderr, bad
