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
    ("command-line check (configcheck)", "losslab/config/commandline.py", frozenset({"check"}), False),
    (
        "hydra: compose every job config before the first job",
        "hydra/plugins/sweeper.py",
        frozenset({"validate_batch_is_legal"}),
        True,
    ),
    ("hydra: compose this job's config", "config_loader_impl.py", frozenset({"load_sweep_config"}), False),
    ("hydra: job set-up, .hydra/*.yaml, logging", "hydra/core/utils.py", frozenset({"run_job"}), False),
    ("parent bookkeeping (sweeps.py, parent.py)", "losslab/sweep/callback.py", None, False),
    ("parent bookkeeping (sweeps.py, parent.py)", "losslab/sweep/parent.py", None, False),
    ("job: other LossLab work", "losslab/train/job.py", frozenset({"train"}), False),
    ("job: scrub .hydra files", "losslab/tracking/params.py", frozenset({"scrub_files"}), False),
    ("job: build model, loss, data", "losslab/config/build.py", frozenset({"build"}), False),
    ("open store (create or check schema)", "losslab/tracking/store.py", frozenset({"open_store"}), False),
    ("experiment look-up/creation", "losslab/tracking/store.py", frozenset({"ensure_experiment"}), False),
    ("job: skip check (find_finished)", "losslab/tracking/recorder.py", frozenset({"find_finished"}), False),
    ("job: Trainer construction", "losslab/train/job.py", frozenset({"_trainer"}), False),
    ("job: run creation, params, tags", "losslab/tracking/recorder.py", frozenset({"start"}), False),
    ("job: dataset input", "losslab/train/job.py", frozenset({"record_dataset"}), False),
    (
        "job: trainer.fit (Lightning loop, model, loss)",
        "pytorch_lightning/trainer/trainer.py",
        frozenset({"fit"}),
        False,
    ),
    ("job: LossLab per-step callbacks", "losslab/train/callbacks/gradients.py", None, False),
    ("job: LossLab per-step callbacks", "losslab/train/callbacks/recording.py", None, False),
    ("job: LossLab per-step callbacks", "losslab/train/steplog.py", None, False),
    (
        "job: LossLab per-step callbacks",
        "losslab/outcomes/classify.py",
        frozenset({"on_train_batch_end", "on_validation_end", "on_before_optimizer_step"}),
        False,
    ),
    (
        "job: metric flush to the store",
        "losslab/tracking/recorder.py",
        frozenset({"flush", "_write", "write"}),
        False,
    ),
    ("job: final metrics, tags, outcome", "losslab/train/job.py", frozenset({"finish_run"}), False),
    (
        "job: outcome classification",
        "losslab/outcomes/classify.py",
        frozenset({"classify", "overfitting"}),
        False,
    ),
    ("job: artifacts (config.yaml)", "losslab/train/job.py", frozenset({"_log_artifacts"}), False),
    ("job: loss-curve PNG", "losslab/train/curve_plot.py", frozenset({"loss_curve_png"}), False),
    ("job: close run", "losslab/tracking/recorder.py", frozenset({"close"}), False),
    ("job: result.json", "losslab/train/job.py", frozenset({"write_result"}), False),
]


def classify(frame: FrameType | None) -> tuple[str, int | None]:
    """One stack sample: its phase (innermost match; a whole phase takes all but imports), its job."""
    inner: str | None = None
    whole: str | None = None
    job: int | None = None
    imported = ""  # the outermost module being imported: imports are shown per top-level package
    while frame is not None:
        code = frame.f_code
        path = code.co_filename.replace(os.sep, "/")
        if code.co_name == "train" and path.endswith("losslab/train/job.py"):
            job = frame.f_locals.get("job_num")
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
        return whole, job
    if inner == "imports":
        return f"imports: {imported}", job
    return inner or OTHER, job


OTHER = "other (interpreter, Hydra and launcher glue)"


class Sampler:
    """Samples the main thread's stack every `interval` seconds on a daemon thread."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.seconds: dict[str, float] = defaultdict(float)
        self.first_job: dict[str, float] = defaultdict(float)  # inside job 0 of a sweep
        self.later_jobs: dict[str, float] = defaultdict(float)  # inside jobs 1..n-1
        self.jobs = 0
        self.samples = 0
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="phase-sampler", daemon=True)

    def _loop(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(self.interval):
            frame = sys._current_frames().get(self._main)
            now = time.perf_counter()
            label, job = classify(frame)
            self.seconds[label] += now - last
            if isinstance(job, int):
                (self.first_job if job == 0 else self.later_jobs)[label] += now - last
                self.jobs = max(self.jobs, job + 1)
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


def _merge_small_imports(seconds: dict[str, float], keep: set[str]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for k, v in seconds.items():
        out[k if not k.startswith("imports: ") or k in keep else "imports: smaller packages"] += v
    return out


def table(sampler: Sampler, note: str) -> str:
    """Markdown: phase, seconds, share of the sampled wall time, first job, mean of the later jobs."""
    total = sum(sampler.seconds.values()) or 1.0
    all_imports = sum(v for k, v in sampler.seconds.items() if k.startswith("imports: "))
    keep = {k for k, v in sampler.seconds.items() if k.startswith("imports: ") and v >= 0.02 * all_imports}
    seconds, first, later = (
        _merge_small_imports(d, keep) for d in (sampler.seconds, sampler.first_job, sampler.later_jobs)
    )
    later_n = max(sampler.jobs - 1, 1)
    top = sorted((k for k in seconds if not k.startswith("imports: ")), key=lambda k: -seconds[k])
    subs = sorted((k for k in seconds if k.startswith("imports: ")), key=lambda k: -seconds[k])
    lines = [
        note,
        "",
        f"| phase | seconds | share | first job (s) | later jobs, mean of {later_n} (s) |",
        "|---|---|---|---|---|",
    ]

    def row(label: str, secs: float, f: float, lt: float) -> None:
        lines.append(f"| {label} | {secs:.2f} | {secs / total:.1%} | {f:.3f} | {lt / later_n:.3f} |")

    rows_done = False
    for label in top:
        if not rows_done and seconds[label] < all_imports:
            row("imports (all)", all_imports, sum(first[k] for k in subs), sum(later[k] for k in subs))
            for k in subs:
                row("&nbsp;&nbsp;" + k, seconds[k], first[k], later[k])
            rows_done = True
        row(label, seconds[label], first[label], later[label])
    job_total = (sum(sampler.first_job.values()), sum(sampler.later_jobs.values()))
    row("**inside jobs (task.train), all phases**", sum(job_total), *job_total)
    lines.append(
        f"| **wall, {sampler.samples} samples, {sampler.jobs} jobs** | {sampler.wall:.2f} | 100% | | |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
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
    text = table(sampler, note)
    print(text)
    if ns.out:
        ns.out.parent.mkdir(parents=True, exist_ok=True)
        ns.out.write_text(text + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
