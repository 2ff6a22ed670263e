"""Where a sweep's time goes: `python -m losslab.bench.phases [--out FILE] -- train.py -m ARGS`.

Runs the command in this process (the basic launcher runs every job here too) under a sampling
profiler and prints a table: phase -> seconds, share of the wall time. Hand-written rather than
cProfile because cProfile's per-call cost inflates the training loop and its cumulative times
overlap; a sample here counts once, for the innermost phase on the main thread's stack, weighted by
the time since the previous sample (so an irregular sampler on a loaded machine still sums to the
wall time). An import inside a phase counts as `imports`, except under a phase marked whole.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from types import FrameType

#: (label, path fragment, function names or None for any, whole). Innermost match wins, except that a
#: `whole` phase anywhere on the stack takes the sample unless the innermost match is an import.
PHASES: list[tuple[str, str, frozenset[str] | None, bool]] = [
    ("imports", "importlib._bootstrap", frozenset({"_find_and_load"}), False),
    ("command-line check (configcheck)", "losslab/configcheck.py", frozenset({"check"}), False),
    (
        "hydra: compose every job config before the first job",
        "hydra/plugins/sweeper.py",
        frozenset({"validate_batch_is_legal"}),
        True,
    ),
    ("hydra: compose this job's config", "config_loader_impl.py", frozenset({"load_sweep_config"}), False),
    ("hydra: job set-up, .hydra/*.yaml, logging", "hydra/core/utils.py", frozenset({"run_job"}), False),
    ("parent bookkeeping (sweeps.py, parent.py)", "losslab/sweeps.py", None, False),
    ("parent bookkeeping (sweeps.py, parent.py)", "losslab/parent.py", None, False),
    ("job: other LossLab work", "losslab/task.py", frozenset({"train"}), False),
    ("job: scrub .hydra files", "losslab/params.py", frozenset({"scrub_files"}), False),
    ("job: build model, loss, data", "losslab/build.py", frozenset({"build"}), False),
    ("job: open store (schema check)", "losslab/store.py", frozenset({"open_store"}), False),
    ("job: experiment look-up/creation", "losslab/store.py", frozenset({"ensure_experiment"}), False),
    ("job: skip check (find_finished)", "losslab/tracking.py", frozenset({"find_finished"}), False),
    ("job: Trainer construction", "losslab/task.py", frozenset({"_trainer"}), False),
    ("job: run creation, params, tags", "losslab/tracking.py", frozenset({"start"}), False),
    ("job: dataset input", "losslab/task.py", frozenset({"_log_dataset"}), False),
    (
        "job: trainer.fit (Lightning loop, model, loss)",
        "pytorch_lightning/trainer/trainer.py",
        frozenset({"fit"}),
        False,
    ),
    ("job: LossLab per-step callbacks", "losslab/gradients.py", None, False),
    ("job: LossLab per-step callbacks", "losslab/recording.py", None, False),
    ("job: LossLab per-step callbacks", "losslab/steplog.py", None, False),
    (
        "job: LossLab per-step callbacks",
        "losslab/outcomes.py",
        frozenset({"on_train_batch_end", "on_validation_end", "on_before_optimizer_step"}),
        False,
    ),
    ("job: metric flush to the store", "losslab/tracking.py", frozenset({"flush", "_write", "write"}), False),
    ("job: final metrics, tags, outcome", "losslab/task.py", frozenset({"_finish"}), False),
    ("job: outcome classification", "losslab/outcomes.py", frozenset({"classify", "overfitting"}), False),
    ("job: artifacts (config.yaml)", "losslab/task.py", frozenset({"_log_artifacts"}), False),
    ("job: loss-curve PNG", "losslab/plots.py", frozenset({"loss_curve_png"}), False),
    ("job: close run", "losslab/tracking.py", frozenset({"close"}), False),
    ("job: result.json", "losslab/task.py", frozenset({"_write_result"}), False),
]


def classify(frame: FrameType | None) -> str:
    """The phase of one stack sample (innermost match; a whole phase takes all but imports)."""
    inner: str | None = None
    whole: str | None = None
    imported = ""  # the outermost module being imported: imports are shown per top-level package
    while frame is not None:
        code = frame.f_code
        path = code.co_filename.replace(os.sep, "/")
        for label, fragment, names, is_whole in PHASES:
            if fragment in path and (names is None or code.co_name in names):
                if label == "imports":  # outermost package that is not LossLab itself
                    root = str(frame.f_locals.get("name", "?")).split(".")[0]
                    if root != "losslab" or not imported:
                        imported = root
                if inner is None:
                    inner = label
                if is_whole and whole is None:
                    whole = label
                break
        frame = frame.f_back
    if whole is not None and inner != "imports":
        return whole
    if inner == "imports":
        return f"imports: {imported}"
    return inner or "other (interpreter, Hydra and launcher glue)"


class Sampler:
    """Samples the main thread's stack every `interval` seconds on a daemon thread."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.seconds: dict[str, float] = defaultdict(float)
        self.samples = 0
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="phase-sampler", daemon=True)

    def _loop(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(self.interval):
            frame = sys._current_frames().get(self._main)
            now = time.perf_counter()
            self.seconds[classify(frame)] += now - last
            self.samples += 1
            last = now

    def __enter__(self) -> Sampler:
        self.started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.wall = time.perf_counter() - self.started


def table(sampler: Sampler, jobs: int | None, note: str) -> str:
    seconds = dict(sampler.seconds)
    imports = {k: v for k, v in seconds.items() if k.startswith("imports: ")}
    seconds["imports (all)"] = sum(imports.values())
    small = [k for k, v in imports.items() if v < 0.02 * seconds["imports (all)"]]
    for k in small:  # keep the table short: small packages in one row
        seconds["imports: smaller packages"] = seconds.get("imports: smaller packages", 0.0) + seconds.pop(k)
    rows = sorted(seconds.items(), key=lambda kv: (-kv[1] if not kv[0].startswith("imports: ") else 0, kv[0]))
    rows = [r for r in rows if not r[0].startswith("imports: ")]
    at = next(i for i, r in enumerate(rows) if r[0] == "imports (all)") + 1
    subs = sorted(((k, v) for k, v in seconds.items() if k.startswith("imports: ")), key=lambda kv: -kv[1])
    rows[at:at] = [("  " + k, v) for k, v in subs]
    total = sum(sampler.seconds.values()) or 1.0  # the sub-rows of imports are not added twice
    head = "| phase | seconds | share |" + (" per job (s) |" if jobs else "")
    lines = [note, "", head, "|---|---|---|" + ("---|" if jobs else "")]
    for label, secs in rows:
        per = f" {secs / jobs:.3f} |" if jobs and label.startswith("job:") else (" |" if jobs else "")
        lines.append(f"| {label} | {secs:.2f} | {secs / total:.1%} |{per}")
    lines.append(
        f"| **wall (sampled {sampler.samples} times)** | {sampler.wall:.2f} | 100% |" + (" |" if jobs else "")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    parser.add_argument("--jobs", type=int, help="jobs in the sweep: adds a per-job column")
    parser.add_argument("--interval", type=float, default=0.005)
    parser.add_argument("script", help="the script to run, e.g. train.py")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    load = os.getloadavg()[0]
    sys.argv = [ns.script, *ns.args]
    sys.path.insert(0, str(Path(ns.script).resolve().parent))
    code = 0
    with Sampler(ns.interval) as sampler:
        try:
            runpy.run_path(ns.script, run_name="__main__")
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    note = (
        f"`python -m losslab.bench.phases {ns.script} {' '.join(ns.args)}`: "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} vCPUs, "
        f"load {load:.1f} at start, {os.getloadavg()[0]:.1f} at end, exit {code}"
    )
    text = table(sampler, ns.jobs, note)
    print(text)
    if ns.out:
        ns.out.parent.mkdir(parents=True, exist_ok=True)
        ns.out.write_text(text + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
