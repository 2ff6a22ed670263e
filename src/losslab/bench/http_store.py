"""Section 3: LossLab into a local `mlflow server` over HTTP vs into a local sqlite file.

The server is a real `mlflow server --workers 1` subprocess on 127.0.0.1 over its own sqlite file,
warmed up before timing. Ratio = whole `task.train` calls; fit_ratio = trainer.fit alone.

Run alone: `python -m losslab.bench --only 3` (or `python -m losslab.bench.http_store`).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from losslab.bench.harness import (
    Context,
    compose,
    free_port,
    mlp_overrides,
    paired_ratio,
    quiet,
    stop,
    summary,
)
from losslab.bench.runs import losslab_run


def run(ctx: Context) -> None:
    s = ctx.sizes
    with mlflow_server(ctx.tmp / "server") as server_uri:
        http_uri = ctx.store("s3-http", uri=server_uri)
        sqlite_uri = ctx.store("s3-sqlite")
        variants = {
            "http": lambda c: losslab_run(c, http_uri),
            "sqlite": lambda c: losslab_run(c, sqlite_uri),
        }
        samples = ctx.ab(variants, compose(mlp_overrides([256, 256], s.compare_steps, s.threads)))
    r = paired_ratio(samples["http"], samples["sqlite"])
    fit_r = paired_ratio(samples["http"], samples["sqlite"], "fit_seconds")
    http, local = summary(samples["http"]), summary(samples["sqlite"])
    ctx.results["3"] = {
        "steps": s.compare_steps,
        "ratio": round(r, 4),
        "fit_ratio": round(fit_r, 4),
        "http": http,
        "sqlite": local,
        "note": "`mlflow server --workers 1` on 127.0.0.1 (this machine) over its own sqlite file; "
        "ratio = whole task.train calls, fit_ratio = trainer.fit alone.",
    }
    ctx.row(
        "3",
        f"LossLab over HTTP / into sqlite, {s.compare_steps} steps",
        r,
        "x",
        f"{http['median_s']:.2f}s vs {local['median_s']:.2f}s; training alone {fit_r:.2f}x",
    )


@contextlib.contextmanager
def mlflow_server(folder: Path, timeout: float = 180.0) -> Iterator[str]:
    """A real `mlflow server` subprocess on a free local port; stopped on exit whatever happened."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]
    cmd += [
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'server.db'}",
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = open(folder / "server.log", "w")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({proc.returncode}); see {folder / 'server.log'}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy after {timeout:.0f}s")
            time.sleep(0.25)
        _warm_server(uri)
        yield uri
    finally:
        stop(proc)
        log.close()


def _warm_server(uri: str, calls: int = 12) -> None:
    """Write into a scratch run until the server has settled.

    Right after start a fresh `mlflow server` answers 1000-point log_batch calls 3-8x slower for
    ~10 s (lazy imports, its periodic jobs registering); timing that would bill start-up to HTTP.
    """
    from mlflow.entities import Metric

    from losslab.tracking.store import ensure_experiment, open_store

    with quiet():
        client = open_store(uri)
        run = client.create_run(ensure_experiment(client, "bench-warm-up"))
        ts = int(time.time() * 1000)
        for i in range(calls):
            points = [Metric(f"m{k}", 0.5, ts, i * 100 + s) for s in range(100) for k in range(10)]
            client.log_batch(run.info.run_id, metrics=points)
        client.set_terminated(run.info.run_id)


if __name__ == "__main__":
    from losslab.bench.main import main

    sys.exit(main(["--only", "3", *sys.argv[1:]]))
