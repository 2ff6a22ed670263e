"""Sweep-level work as a Hydra callback, run in the driver process of `-m`.

- before any job: open the store once (creating its schema; parallel jobs racing on a
  brand-new sqlite file crash), make the sweep's parent run, count the jobs;
- after all jobs: print a summary table from the jobs' result.json files, close the
  parent run, put the report and the design table on it (`parent`), print the report's path
  and the UI link, and exit non-zero when a job failed;
- a resumed grid sweep whose every job already has a FINISHED run makes no parent at all (on a sqlite
  store this is read from its tables before MLflow is imported: `parent.done_in_sqlite`).
Messages go through the `losslab_sweep` logger (console and <sweep dir>/sweep.log).
If the driver dies first (Ctrl-C, SIGTERM), an atexit hook still closes the parent run.
Lifecycle (see `interrupts` and `liveness`): the driver claims its own output folder, marks
stale runs of earlier sweeps KILLED before jobs start, and on a signal closes every running job
KILLED before it stops.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from losslab import links
from losslab.logs import sweep_logger
from losslab.sweep import interrupts, parent
from losslab.tracking.naming import SIZE_ENV, SWEEP_KEYS_ENV
from losslab.tracking.params import redact_overrides, scrub_files
from losslab.vocab import HIGHER_IS_BETTER, STALE_AFTER

# tracking (MLflow, Lightning: seconds to import) is imported inside the hooks: Hydra builds this
# callback for single runs too, and a bad config should fail before paying for it.


def count_jobs(task_overrides: list[str], sweeper_params: dict[str, Any] | None) -> int | None:
    """Number of jobs BasicSweeper will launch: product of the sweep sizes (CLI wins over params)."""
    by_key: dict[str, str] = {}
    for key, value in (sweeper_params or {}).items():
        by_key[str(key)] = f"{key}={value}"
    parser = OverridesParser.create()
    for ov in parser.parse_overrides(list(task_overrides)):
        by_key[ov.get_key_element()] = ov.input_line
    total = 1
    try:
        for ov in parser.parse_overrides(list(by_key.values())):
            if ov.is_sweep_override():
                total *= len(list(ov.sweep_string_iterator()))
    except Exception:  # a sweep kind we cannot enumerate (e.g. an Optuna interval): unknown size
        return None
    return total


def report_dir_name(name: str) -> str:
    """`report.assemble.safe_name`, without importing the report (scipy, matplotlib: seconds) into a
    sweep that only says it has nothing to do; a test keeps the two equal."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "report"


def _claim_sweep_dir(sweep_dir: Path) -> None:
    """Refuse a folder another sweep already owns (two sweeps started in the same instant)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(sweep_dir / ".losslab-sweep", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        from losslab.tracking.store import TrackingError

        raise TrackingError(
            f"the sweep folder {sweep_dir} belongs to another sweep started at the same moment; "
            "start this sweep again (or give it its own hydra.sweep.dir=...)."
        ) from None
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)


def read_results(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sweep_dir.glob("*/result.json"):
        with contextlib.suppress(OSError, ValueError):
            row = json.loads(path.read_text())
            row["job"] = int(path.parent.name) if path.parent.name.isdigit() else path.parent.name
            rows.append(row)
    return sorted(rows, key=lambda r: (str(type(r["job"])), r["job"]))


def summary_table(rows: list[dict[str, Any]]) -> str:
    head = ("job", "status", "outcome", "val/loss", "run", "overrides / error")
    body = []
    for r in rows:
        v = r.get("val_loss")
        val = f"{v:.4g}" if isinstance(v, (int, float)) and math.isfinite(v) else "-"
        detail = r.get("error") or " ".join(r.get("overrides", []))
        body.append(
            (
                str(r["job"]),
                r.get("status", "?"),
                r.get("outcome") or "-",
                val,
                r.get("name", "-"),
                detail[:100],
            )
        )
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


class SweepTracker(Callback):
    """Hydra callback: one MLflow parent run per multirun, a summary at the end."""

    def __init__(self) -> None:
        self.client: Any = None
        self.parent_id: str | None = None
        self.sweep_dir: Path | None = None
        self._size = "?"
        self._closed = False
        self._heartbeat: Any = None
        self._job_env: dict[str, str] = {}
        self._signals: Any = None
        self._stale_after = STALE_AFTER
        self._deaths = 0
        self.swept: list[str] = []
        self._jobs: list[list[str]] | None = None
        self.uri = ""
        self.exp_id = ""
        self.log = sweep_logger(None)

    def __getstate__(self) -> dict[str, Any]:
        """joblib pickles Hydra's callbacks into every job: leave the driver's heartbeat thread home."""
        return {**self.__dict__, "_heartbeat": None, "_signals": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra_plugins.losslab_sweeper.sweeper import use_for, validate_before_start

        use_for(config)  # Hydra's basic sweeper validates one job per config shape, not every job
        self._jobs = parent.job_overrides(config)  # every job's overrides (None: not a grid sweep)
        problem = validate_before_start(config, self._jobs)  # before any parent run exists
        if problem is not None:
            self.log.error("Error: %s", problem)
            sys.exit(2)
        from hydra_plugins.losslab_sweeper.sweeper import composed_configs

        line = parent.data_line(parent.data_per_loss(composed_configs()))
        if line:  # before the first job: a sweep over losses may not compare them on one data set
            self.log.info("%s", line)
        from losslab.tracking.store import TrackingError

        # Hydra turns a callback's exception into a warning and carries on; a sweep without its
        # parent run would scatter its jobs, so stop here instead.
        try:
            self._start(config)
        except TrackingError as exc:
            self.log.error("Error: %s", exc)
            sys.exit(2)
        except Exception as exc:
            self.log.error("Error: sweep set-up failed: %s: %s", type(exc).__name__, exc)
            sys.exit(2)

    def _start(self, config: DictConfig) -> None:
        from losslab.tracking.store import resolve_experiment_name, resolve_tracking_uri

        uri = resolve_tracking_uri(OmegaConf.select(config, "tracking.uri"))
        experiment = resolve_experiment_name(OmegaConf.select(config, "tracking.experiment"))
        self.uri = uri
        # a sqlite store answers "anything to do?" from its tables, before MLflow is imported
        quick = parent.done_in_sqlite(config, uri, experiment, self._jobs)
        if isinstance(quick, parent.AllDone):
            self.exp_id = quick.experiment_id
            self._enter_sweep_dir(config)
            self._say_all_done(quick)

        from losslab.tracking import liveness
        from losslab.tracking import recorder as tracking
        from losslab.tracking.params import clip_tags, redact_uri
        from losslab.tracking.store import ensure_experiment, open_store

        self.client = open_store(uri)
        exp_id = ensure_experiment(self.client, experiment)
        self.exp_id = exp_id
        hc = config.hydra
        self._enter_sweep_dir(config)
        assert self.sweep_dir is not None
        self._stale_after = float(OmegaConf.select(config, "tracking.stale_after", default=STALE_AFTER))
        reaped = liveness.reap(self.client, [exp_id], self._stale_after, "a sweep")
        for run, reason in reaped:
            self.log.info("marked run %s (%s) KILLED: %s", run.info.run_id, run.info.run_name, reason)
        self.swept = parent.swept_keys(config)
        os.environ[SWEEP_KEYS_ENV] = ",".join(self.swept)
        if quick is None:  # the store's tables could not tell: ask MLflow
            self._exit_if_all_done(config, exp_id)
        from losslab.sweep.workers import start_warming

        # joblib: workers import torch/Lightning/MLflow while this sets up (not before the resume
        # check: a sweep with nothing to do would pay for their imports on the same cores)
        start_warming(config)
        overrides = redact_overrides(hc.overrides.task)
        params = hc.sweeper.get("params")
        size = count_jobs(
            list(hc.overrides.task), OmegaConf.to_container(params) if params is not None else {}
        )
        self._size = str(size) if size else "?"
        os.environ[SIZE_ENV] = self._size
        study = parent.sweep_name(config, self.swept)
        name = f"{study}-{time.strftime('%Y%m%d-%H%M%S')}"
        run = self.client.create_run(
            exp_id,
            run_name=name,
            tags=clip_tags(
                {
                    **tracking.standard_tags(),
                    **liveness.identity(),
                    "losslab.sweep": "parent",
                    "sweep_dir": str(self.sweep_dir),
                    "overrides": " ".join(overrides),
                    "study": str(study),
                    "jobs": str(size or "?"),
                    "swept": ",".join(self.swept),
                }
            ),
        )
        self.parent_id = run.info.run_id
        self._heartbeat = liveness.Heartbeat(self.client, self.parent_id)
        os.environ[tracking.PARENT_ENV] = self.parent_id
        atexit.register(self._close_if_open)
        # A signal to the driver (or its process group) closes every running job KILLED, then stops
        # the sweep; atexit closes the parent run. Jobs in this process install their own handler.
        self._signals = interrupts.DriverSignals(self.sweep_dir)
        interrupts.quiet_submitit_controllers()  # submitit_local: Ctrl-C prints no controller traceback
        from losslab.sweep.patches import guard_worker_death

        guard_worker_death(self._worker_died)  # joblib: a dead worker is a failed job, the sweep goes on
        # what every job needs from the driver, handed over in on_job_start: joblib's workers were
        # started (warmed) before these existed, so they do not inherit them
        self._job_env = {
            k: os.environ[k] for k in (*interrupts.JOB_ENV, tracking.PARENT_ENV) if k in os.environ
        }
        self.log.info(
            "sweep %s: %s jobs, parent run %s in %s",
            name,
            size or "?",
            self.parent_id,
            redact_uri(uri),
        )

    def _enter_sweep_dir(self, config: DictConfig) -> None:
        """This sweep's folder (its sweep.log from here on), claimed against a twin sweep."""
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        self.log = sweep_logger(self.sweep_dir)
        _claim_sweep_dir(self.sweep_dir)

    def _exit_if_all_done(self, config: DictConfig, exp_id: str) -> None:
        """A resumed sweep with nothing left (asked through MLflow): `_say_all_done`."""
        done = parent.pending_jobs(config, self.client, exp_id, self._jobs)
        if done is None:
            return
        n, run_ids = done
        last = parent.latest_parent(self.client, run_ids)
        ids = (last.info.run_id, last.info.run_name) if last is not None else (None, None)
        self._say_all_done(parent.AllDone(exp_id, n, *ids))

    def _say_all_done(self, done: parent.AllDone) -> None:
        """A resumed sweep with nothing left: say so and where the report is; no new parent run."""
        where = "rerun=true runs them again."
        if done.parent_id is not None:
            local = Path("reports") / report_dir_name(done.parent_name or done.parent_id) / "index.html"
            report = (
                f"{local}" if local.is_file() else f"`python -m losslab.compare --sweep {done.parent_id}`"
            )
            where = (
                f"Their report: {report} (also on parent run {done.parent_id}: "
                f"{links.run_url(done.experiment_id, done.parent_id, self.uri)}). {where}"
            )
        self.log.info(
            "all %d configs of this sweep are done (FINISHED runs in experiment %s); nothing to run and "
            "no new parent run. %s",
            done.jobs,
            done.experiment_id,
            where,
        )
        sys.exit(0)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """In the process running the job: the sweep's variables (joblib workers predate them)."""
        if self.parent_id is not None:
            cluster = os.environ.get(interrupts.CLUSTER_ENV) == "1"  # a SLURM job: no driver to watch
            skip = interrupts.JOB_ENV if cluster else ()
            # parent run; driver pid, stop file and jobs folder (joblib's warmed workers lack them)
            os.environ.update({k: v for k, v in self._job_env.items() if k not in skip})
            os.environ[SIZE_ENV] = self._size
        if self.swept:
            os.environ[SWEEP_KEYS_ENV] = ",".join(self.swept)

    def _worker_died(
        self, relaunch: Any, job_overrides: list[list[str]], first_idx: int, config: DictConfig, exc: Any
    ) -> list[Any]:
        """A joblib worker died: its job is a failed job and the sweep goes on (`worker_death`)."""
        from losslab.sweep import worker_death
        from losslab.tracking import liveness

        assert self.sweep_dir is not None and self._signals is not None
        worker_death.wait_gone(self._signals.running_jobs)  # loky ends the other workers
        by = "the sweep (a joblib worker died)"

        def reap() -> None:
            with contextlib.suppress(Exception):
                for run, why in liveness.reap(self.client, [self.exp_id], self._stale_after, by):
                    self.log.info("marked run %s (%s) KILLED: %s", run.info.run_id, run.info.run_name, why)

        self._deaths += 1
        if self._deaths <= worker_death.MAX_DEATHS:
            return worker_death.recover(
                relaunch,
                job_overrides,
                first_idx,
                config,
                exc,
                sweep_dir=self.sweep_dir,
                client=self.client,
                log=self.log,
                reap=reap,
            )
        reap()
        self._close_if_open("FAILED")
        self.log.error(
            "Error: joblib workers died %d times in this sweep (last exit codes %s); it stops here, its "
            "running runs closed KILLED. Run the same command again to run the rest: finished configs "
            "are skipped.",
            self._deaths,
            worker_death.exit_codes(exc),
        )
        sys.exit(1)

    def _close_if_open(self, status: str = "KILLED") -> None:
        if self._closed or self.client is None or self.parent_id is None:
            return
        from losslab.tracking import recorder as tracking

        self._closed = True
        if self.sweep_dir is not None:
            with contextlib.suppress(Exception):
                scrub_files([self.sweep_dir / "multirun.yaml"])
        if self._heartbeat is not None:
            self._heartbeat.stop()
        with contextlib.suppress(Exception):
            self.client.set_terminated(self.parent_id, status=status)
        os.environ.pop(tracking.PARENT_ENV, None)

    @staticmethod
    def _tune(config: DictConfig) -> list[str]:
        """`tracking.report_tune`: the params the sweep's report tunes per design (compare's --tune)."""
        tune = OmegaConf.select(config, "tracking.report_tune", default=None) or []
        return [str(t) for t in ([tune] if isinstance(tune, str) else tune)]

    def _report(self, config: DictConfig, tune: list[str]) -> Any:
        """The comparison report of this sweep, beside the runs (one per task when the study mixes
        binary and regression data, the parent's note then holding both tables); a failure here never
        fails the sweep."""
        if not OmegaConf.select(config, "tracking.report_on_sweep_end", default=True):
            return None
        try:
            from losslab.report import build_reports
            from losslab.report.assemble import Report

            reports = build_reports(self.client, None, self.parent_id, Path("reports"), tune=tune)
        except Exception as exc:
            self.log.warning("warning: no report for this sweep (%s: %s)", type(exc).__name__, exc)
            return None
        for report in reports:
            self.log.info("report: %s", os.fspath(report))
        if reports and reports[0].summary_path is not None:
            self.log.info("summary across data sets: %s", os.fspath(reports[0].summary_path))
        if len(reports) == 1:
            return reports[0]
        tables = [f"### {r.subset}\n\n{r.designs_markdown}" for r in reports]
        joined = "\n\n".join(tables)
        return Report(reports[0].html_path, joined[:6000], parts=len(reports))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from losslab.sweep.workers import stop_workers

        stop_workers()  # joblib: every job has returned; don't wait for the workers' slow exit

        if self.sweep_dir is not None:  # the launcher's copy of the sweep config, secrets included
            scrub_files([self.sweep_dir / "multirun.yaml"])
        rows = read_results(self.sweep_dir) if self.sweep_dir else []
        failed = [r for r in rows if r.get("status") not in ("FINISHED", "SKIPPED")]
        counts: dict[str, int] = {}
        for r in rows:
            key = r.get("outcome") or str(r.get("status", "?")).lower()
            counts[key] = counts.get(key, 0) + 1
        table = summary_table(rows)
        self.log.info("\nSweep summary\n%s", table)
        if self.client is not None and self.parent_id is not None:
            try:
                line = parent.source_changed_line(self.client, self.exp_id, self.parent_id, len(rows))
            except Exception as exc:  # the store hiccuped: the summary above still stands
                line = None
                self.log.warning("warning: could not count re-runs (%s: %s)", type(exc).__name__, exc)
            if line:
                self.log.info("%s", line)
            tags = {f"count.{k}": str(v) for k, v in counts.items()}
            tags.update({"jobs_failed": str(len(failed)), "jobs_done": str(len(rows))})
            tags[links.UI_TAG] = links.ui_base(self.uri)  # what its links use: `make ui` compares
            with contextlib.suppress(Exception):
                for k, v in tags.items():
                    self.client.set_tag(self.parent_id, k, v)
                # jobs refused before their run existed (bad config, no GPU) stay visible here
                self.client.log_text(self.parent_id, table + "\n", "summary.txt")
                self.client.log_dict(self.parent_id, rows, "summary.json")
            self._close_if_open("FAILED" if failed else "FINISHED")
            tune = self._tune(config)
            report = self._report(config, tune)
            view = self._share_view(rows, tune)
            self._annotate(report, rows, view)
            self.log.info(
                "MLflow UI (start it with `make ui`): %s\n  this sweep's parent run: %s\n"
                "  report again: python -m losslab.compare --sweep %s%s",
                links.runs_url(self.exp_id, self.uri, view),
                links.run_url(self.exp_id, self.parent_id, self.uri),
                self.parent_id,
                " --tune " + " ".join(tune) if tune else "",
            )
        if failed:
            self.log.error("%d of %d jobs failed", len(failed), len(rows))
            sys.exit(1)

    def _share_view(self, rows: list[dict[str, Any]], tune: list[str]) -> str | None:
        """Each child tagged with its design, and the runs table's view (task metric and outcome
        columns, grouped by design) stored as a shared view of the experiment: its key, or None."""
        try:
            for r in rows:
                if r.get("run_id"):
                    design = parent.design_of(r.get("overrides", []), self.swept, tune)
                    self.client.set_tag(r["run_id"], links.DESIGN_TAG, design)
            metrics = sorted({str(r["metric"]) for r in rows if r.get("metric")})
            state = links.view_state(metrics, HIGHER_IS_BETTER.get(metrics[0]) if metrics else None)
            key = links.share_view(self.client, self.exp_id, state)
            self.client.set_tag(self.parent_id, links.VIEW_TAG, key)
            return key
        except Exception as exc:  # the plain runs link still works
            self.log.warning("warning: no grouped runs view (%s: %s)", type(exc).__name__, exc)
            return None

    def _annotate(self, report: Any, rows: list[dict[str, Any]], view: str | None = None) -> None:
        """The design table as the parent's note, the best design's metrics; never fails the sweep."""
        link = None
        if report is not None:
            where = (
                "report/index.html" if report.parts == 1 else "report-<data set>/index.html, one per data set"
            )
            link = f"{links.run_url(self.exp_id, self.parent_id, self.uri)} (Artifacts: {where})"
        try:
            runs_link = links.runs_url(self.exp_id, self.uri, view) if view else None
            parent.annotate(self.client, self.parent_id, report, rows, link, runs_link)
        except Exception as exc:
            self.log.warning("warning: the parent run has no note (%s: %s)", type(exc).__name__, exc)
