"""What a sweep is called, which of its jobs are left, and what its parent run shows in the MLflow UI.

- `swept_keys`: the config keys that differ between the jobs (command-line sweeps and the sweeper's
  params); the jobs' run names start with them (`naming.run_name`, via SWEEP_KEYS_ENV).
- `pending_jobs`: for a grid sweep, how many jobs have no FINISHED run of their exact config (and
  current loss and model code, `fingerprint`) yet, so a resumed sweep with nothing to do makes no
  new parent run; `done_in_sqlite` answers the same from a sqlite store's tables before MLflow is
  imported (a sweep with nothing to do says so in about 2 s, docs/performance.md).
- `source_changed_line`: at the end of a sweep, how many of its jobs re-ran because that code changed.
- `annotate`: the parent run carries the sweep's result where the UI shows it: the ranked design
  table as the run's note (`mlflow.note.content`, markdown), the best design's key metrics as
  metrics and tags (the report itself is logged on the parent by `build_report`).
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from losslab.tracking.liveness import HASH_TAG
from losslab.tracking.naming import loss_label

#: sweepers that launch every job of the product of the sweep values (LossLab's validates fewer)
BASIC_SWEEPERS = (
    "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
    "hydra_plugins.losslab_sweeper.sweeper.LossLabSweeper",
)
NOTE_TAG = "mlflow.note.content"


def _sweep_lines(config: DictConfig) -> list[str]:
    """The sweeper's params then the command line's overrides, as `key=value` lines (CLI wins)."""
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
    plain = OmegaConf.to_container(params) if isinstance(params, DictConfig) else {}
    lines = [f"{k}={v}" for k, v in plain.items()]  # type: ignore[union-attr]
    return lines + list(config.hydra.overrides.task)


def swept_keys(config: DictConfig) -> list[str]:
    """Keys that take several values in this sweep, in command-line order (`+`/`~` stripped)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    by_key: dict[str, bool] = {}
    try:
        for ov in OverridesParser.create().parse_overrides(_sweep_lines(config)):
            key = ov.get_key_element().lstrip("+~")
            by_key[key] = ov.is_sweep_override() and (ov.is_discrete_sweep() is False or _n(ov) > 1)
    except Exception:  # a sweep line we cannot read: names fall back to the full form
        return []
    return [k for k, swept in by_key.items() if swept]


def _n(ov: Any) -> int:
    try:
        return len(list(ov.sweep_string_iterator()))
    except Exception:
        return 2


def sweep_name(config: DictConfig, keys: Iterable[str]) -> str:
    """The study's name, else the loss's (a user's loss: its class name), e.g. `cauchy-sweep`."""
    choices = config.hydra.runtime.choices
    if choices.get("experiment"):
        return str(choices["experiment"])
    if {"loss", "loss._target_"} & set(keys):
        return "losses-sweep"
    plain = {k: str(v) for k, v in choices.items() if v is not None and not str(k).startswith("hydra/")}
    return f"{loss_label(config, plain)}-sweep"


def job_overrides(config: DictConfig) -> list[list[str]] | None:
    """Every job's override list, as Hydra's BasicSweeper will launch them; None for other sweepers."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if OmegaConf.select(config, "hydra.sweeper._target_", default=None) not in BASIC_SWEEPERS:
        return None
    try:
        parsed = OverridesParser.create().parse_overrides(_sweep_lines(config))
        (batch,) = BasicSweeper.split_arguments(parsed, None)
    except Exception:
        return None
    return batch


def pending_jobs(
    config: DictConfig, client: Any, experiment_id: str, jobs: list[list[str]] | None = None
) -> tuple[int, list[str]] | None:
    """(number of jobs, run ids of the FINISHED runs that already cover them) when every job is done;
    None when something is left to run or the sweep cannot be enumerated (e.g. Optuna). A FINISHED
    run made from other loss or model code (`fingerprint`) covers nothing; one whose fingerprint
    cannot be checked here leaves the job to decide."""
    return _covered(config, jobs, lambda: _finished_by_hash(client, experiment_id))


def _covered(
    config: DictConfig,
    jobs: list[list[str]] | None,
    finished: Callable[[], dict[str, list[tuple[str, dict[str, str]]]]],
) -> tuple[int, list[str]] | None:
    """`pending_jobs` over `finished()`: config hash -> its FINISHED runs, newest first, each as
    (run id, its source fingerprint tags); read only when the sweep can be enumerated at all."""
    from hydra.core.global_hydra import GlobalHydra

    from losslab.tracking import fingerprint
    from losslab.tracking.naming import config_hash

    if OmegaConf.select(config, "rerun", default=False):
        return None
    jobs = job_overrides(config) if jobs is None else jobs  # the sweep callback has them already
    if not jobs or not GlobalHydra.instance().is_initialized():
        return None
    done = finished()
    if not done:  # nothing FINISHED yet (a new study): no job can be covered, compose none of them
        return None
    from hydra_plugins.losslab_sweeper.sweeper import job_configs

    # one composition per config shape (the others differ in numbers only): seconds, not minutes
    configs = job_configs(GlobalHydra.instance().config_loader(), config, jobs)
    found: list[str] = []
    shas: dict[str, str | None] = {}  # target -> fingerprint: each source file hashed once per sweep
    while True:
        try:
            job_cfg = next(configs)
        except StopIteration:
            break
        except Exception:
            return None  # a job that cannot compose will fail and be reported: run the sweep
        with open_dict(job_cfg):  # what the job's task sees: Hydra removes its own node first
            job_cfg.pop("hydra", None)
        try:
            runs = done.get(config_hash(job_cfg), [])
        except Exception:
            return None
        now = fingerprint.current(job_cfg, cache=shas)
        run_id = next((r for r, tags in runs if fingerprint.changed(tags, now, strict=True) == []), None)
        if run_id is None:
            return None
        found.append(run_id)
    return (len(jobs), found) if len(found) == len(jobs) else None


@dataclass(frozen=True)
class AllDone:
    """A grid sweep with nothing left to run: its experiment, its number of jobs, and the newest
    sweep parent among the runs that cover them (where their report was made), if any."""

    experiment_id: str
    jobs: int
    parent_id: str | None = None
    parent_name: str | None = None


#: `done_in_sqlite` read the store and found something to run (MLflow's path need not look again)
WORK_LEFT = "work left"


def done_in_sqlite(
    config: DictConfig, uri: str, experiment: str, jobs: list[list[str]] | None = None
) -> AllDone | str | None:
    """`pending_jobs` read straight from a sqlite store (`store.SqliteRunsReader`), before MLflow is
    imported: AllDone when every job is covered, WORK_LEFT when the store was read and something is
    left to run, None when this cannot tell (not a sqlite store, another schema, no such experiment,
    RUNNING runs a sweep would first check for staleness): then MLflow's path decides."""
    from losslab.tracking.fingerprint import TAGS
    from losslab.tracking.store import SqliteRunsReader

    reader = SqliteRunsReader.open(uri)
    if reader is None:
        return None
    try:
        with reader:
            exp_id = reader.experiment_id(experiment)
            if exp_id is None or reader.count_runs(exp_id, "RUNNING"):
                return None

            def finished() -> dict[str, list[tuple[str, dict[str, str]]]]:
                out: dict[str, list[tuple[str, dict[str, str]]]] = {}
                for run_id, tags in reader.tags_of_runs(exp_id, "FINISHED", [HASH_TAG, *TAGS.values()]):
                    h = tags.pop(HASH_TAG, None)
                    if h:
                        out.setdefault(h, []).append((run_id, tags))
                return out

            done = _covered(config, jobs, finished)
            if done is None:
                return WORK_LEFT
            parents = reader.parent_runs(done[1])
    except sqlite3.Error:
        return None
    if not parents:
        return AllDone(exp_id, done[0])
    run_id, name, _ = max(parents, key=lambda p: p[2] or 0)
    return AllDone(exp_id, done[0], run_id, name)


def data_per_loss(configs: Iterable[DictConfig]) -> dict[str, list[str]]:
    """data set -> the losses (a study's designs: their losses) that run on it, from the composed
    configs of a sweep's jobs (one per config shape is enough: a number never changes the data)."""
    out: dict[str, list[str]] = {}
    for cfg in configs:
        data = str(OmegaConf.select(cfg, "data.name", default=None) or "?")
        raw = OmegaConf.select(cfg, "hydra.runtime.choices", default=None)
        choices = {str(k): str(v) for k, v in (raw or {}).items() if v is not None}
        loss = loss_label(cfg, choices)
        if choices.get("design"):
            loss = choices["design"]
        if loss not in out.setdefault(data, []):
            out[data].append(loss)
    return out


def data_line(by_data: dict[str, list[str]]) -> str | None:
    """One line naming each data set and the losses on it, when a sweep's losses land on several
    (each loss's default data: conf/loss/*.yaml); None when they all share one."""
    if len(by_data) < 2:
        return None
    parts = "; ".join(f"{data}: {', '.join(losses)}" for data, losses in sorted(by_data.items()))
    return (
        f"note: this sweep's losses run on {len(by_data)} data sets, each on its loss's default data "
        f"({parts}); designs are ranked per data set, one report each. Put them on one with data=NAME."
    )


def _finished_by_hash(client: Any, experiment_id: str) -> dict[str, list[tuple[str, dict[str, str]]]]:
    """config hash -> its FINISHED runs, newest first, each as (run id, its source fingerprint tags);
    one paged search, not one per job."""
    from losslab.tracking.fingerprint import TAGS

    out: dict[str, list[tuple[str, dict[str, str]]]] = {}
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string="attributes.status = 'FINISHED'",
            max_results=1000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        for run in page:
            h = run.data.tags.get(HASH_TAG)
            if h:
                tags = {t: run.data.tags[t] for t in TAGS.values() if t in run.data.tags}
                out.setdefault(h, []).append((run.info.run_id, tags))
        token = page.token
        if not token:
            return out


def source_changed_line(client: Any, experiment_id: str, parent_id: str, jobs: int) -> str | None:
    """One line saying how many of this sweep's jobs re-ran because their loss (or model) code changed
    since their FINISHED runs, naming that code; None when none did."""
    from losslab.tracking.fingerprint import CHANGED_TAG

    runs = client.search_runs(  # only the runs that carry the tag: a big sweep's others stay unread
        [experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`{CHANGED_TAG}` LIKE '%'",
        max_results=50000,
    )
    by_code: dict[tuple[str, str], int] = {}
    n = 0
    for run in runs:
        kinds = [k for k in run.data.tags.get(CHANGED_TAG, "").split(",") if k]
        n += bool(kinds)
        for kind in kinds:
            key = (kind, run.data.params.get(f"{kind}._target_", "?"))
            by_code[key] = by_code.get(key, 0) + 1
    if not n:
        return None
    what = "; ".join(
        f"the {kind} source changed: {target} ({k} job{'s' if k != 1 else ''})"
        for (kind, target), k in sorted(by_code.items())
    )
    return (
        f"{n} of {jobs} jobs re-ran because {what}. Their FINISHED runs came from other code; the new "
        f"runs carry tag {CHANGED_TAG}, the earlier runs stay in the store."
    )


def latest_parent(client: Any, run_ids: list[str]) -> Any | None:
    """The newest sweep parent among these runs' parents (where their report was made): one search
    per 100 runs, not one read per run (a 90-job sweep with nothing to do said so after 3 s of reads)."""
    parents: set[str] = set()
    experiments: set[str] = set()
    for i in range(0, len(run_ids), 100):
        chunk = run_ids[i : i + 100]
        with contextlib.suppress(Exception):
            first = client.get_run(chunk[0])
            experiments.add(first.info.experiment_id)
            ids = ", ".join(f"'{r}'" for r in chunk)
            for run in client.search_runs(
                [first.info.experiment_id], filter_string=f"attributes.run_id IN ({ids})", max_results=1000
            ):
                pid = run.data.tags.get("mlflow.parentRunId")
                if pid:
                    parents.add(pid)
    runs = []
    for pid in parents:
        with contextlib.suppress(Exception):
            runs.append(client.get_run(pid))
    return max(runs, key=lambda r: r.info.start_time or 0) if runs else None


def summary_markdown(rows: list[dict[str, Any]], limit: int = 4000) -> str:
    """The jobs as a markdown table: the note when no design table could be made. Cut at `limit`
    characters (MLflow truncates tags past 8,000, printing the whole value as a warning), with a
    line saying how many jobs are left out and where they all are."""
    lines = ["| job | run | status | outcome | val/loss |", "|---|---|---|---|---|"]
    size = sum(len(line) + 1 for line in lines)
    for i, r in enumerate(rows):
        v = r.get("val_loss")
        val = f"{v:.4g}" if isinstance(v, (int, float)) and math.isfinite(v) else "-"
        cells = (r.get("job"), r.get("name", "-"), r.get("status", "?"), r.get("outcome") or "-", val)
        line = "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"
        if size + len(line) + 1 > limit:
            lines.append(f"\n{len(rows) - i} more jobs: all {len(rows)} in summary.txt on this run.")
            break
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


def design_of(overrides: Iterable[str], swept: Iterable[str], tune: Iterable[str] = ()) -> str:
    """A job's design from its overrides: the swept values but the seed and the tuned params, e.g.
    `hinge_m0` (`+design=hinge_m0`), `hinge` (`loss=hinge`), `margin=0.5`; `all runs` when only
    seeds (and tuned params) vary."""
    skip = {"seed", "data.split_seed", *tune}
    wanted = [k for k in swept if k not in skip and not k.startswith("hydra")]
    by_key: dict[str, str] = {}
    for item in overrides:
        key, _, value = item.partition("=")
        by_key[key.lstrip("+~")] = value
    parts = []
    for key in wanted:
        if key not in by_key:
            continue
        value = by_key[key]
        parts.append(value if key in ("design", "loss") else f"{key.rsplit('.', 1)[-1]}={value}")
    return " ".join(parts) or "all runs"


def verdict(report: Any) -> str | None:
    """One line: the best design and its numbers (the report's `best`), None without one."""
    best = getattr(report, "best", None) or {}
    m = best.get("metric")
    if not best.get("label") or not m:
        return None

    def num(key: str) -> str:
        value, half = best.get(key), best.get(f"{key}_ci95")
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return "n/a"
        if isinstance(half, (int, float)) and math.isfinite(half):
            return f"{value:.4g} ± {half:.2g}"
        return f"{value:.4g}"

    tuned = best.get("tuned") or {}
    at = f" at {', '.join(f'{k.rsplit(chr(46), 1)[-1]}={v}' for k, v in tuned.items())}" if tuned else ""
    word = "highest" if best.get("direction") == "max" else "lowest"
    return (
        f"**Best: {best['label']}**{at}: {word} val {m} {num(f'val_{m}')}, test {m} {num(f'test_{m}')} "
        f"({best.get('runs', '?')} runs)."
    )


def note_text(
    report: Any, rows: list[dict[str, Any]], report_link: str | None, runs_link: str | None = None
) -> str:
    """The parent run's note, its first lines what the UI shows before "Show more": the verdict,
    then the ranked design table (the report's), else the job table; links last."""
    table = getattr(report, "designs_markdown", None) if report is not None else None
    line = verdict(report) if table else None
    head = f"{line}\n\n" if line else ("" if table else "**Jobs** (no design table: see the sweep log)\n\n")
    body = table or summary_markdown(rows)
    tail = ""
    if runs_link:
        tail += f"\n\nRuns grouped by design, with the metric and outcome columns: {runs_link}"
    if report_link:
        tail += f"\n\nFull report (self-contained HTML): {report_link}"
    return head + body + tail


def best_metrics(best: dict[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """The best design's numbers as parent metrics (`best/val_accuracy`, ...) and its label as tags."""
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    for key, value in best.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            name = key if "/" in key else f"best/{key}"
            metrics[name] = float(value)
        elif key in ("label", "metric", "direction"):
            tags[f"best.{key}"] = str(value)
    return metrics, tags


def annotate(
    client: Any,
    parent_id: str,
    report: Any,
    rows: list[dict[str, Any]],
    link: str | None,
    runs_link: str | None = None,
) -> None:
    """Note, best-design metrics and tags on the parent run (each write on its own: one failing
    leaves the others)."""
    import time

    from mlflow.entities import Metric

    client.set_tag(parent_id, NOTE_TAG, note_text(report, rows, link, runs_link))
    best = getattr(report, "best", None) or {}
    metrics, tags = best_metrics(best)
    for k, v in tags.items():
        client.set_tag(parent_id, k, v[:5000])
    if metrics:
        now = int(time.time() * 1000)
        client.log_batch(parent_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
