"""Links into the MLflow UI that open the runs view of the right experiment (or a run's page).

MLflow 3 opens its GenAI layout unless a link asks for `workflowType=machine_learning`, and each
study writes to its own experiment, so a bare `http://host:port` lands on the wrong page. Every link
LossLab prints or writes comes from here. Its address (`ui_choice`), first that applies:

1. LOSSLAB_UI_HOST / LOSSLAB_UI_PORT in the environment (plain HOST/PORT are deliberately ignored);
2. the tracking server itself, when runs go to one (its UI is the server);
3. the address `make ui` serves this sqlite store on, recorded beside it (`<store dir>/.losslab-ui`,
   one entry per store file): while a UI answers there, else as the last address it served;
4. `make ui`'s default, 127.0.0.1:5000.

So a report written while `LOSSLAB_UI_PORT=5077 make ui` runs (or after it ran) links to 5077, and
`python -m losslab.compare` (which derives its links when it writes) repairs an older report's.

`python -m losslab.links [--store URI] [--serve HOST:PORT]` prints the runs-table link of the latest
sweep's experiment; with --serve (what `make ui` does before starting the UI) it first records that
address for the store, and says when the latest sweep's report links elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

VIEW = "workflowType=machine_learning"
#: the parent-run tag holding the key of its sweep's shared view (`share_view`)
VIEW_TAG = "losslab.view"
#: the parent-run tag holding the UI address its sweep's links (note, report) were written with
UI_TAG = "losslab.ui"
#: beside a sqlite store: store file name -> the address `make ui` serves it on (`record_ui`)
UI_FILE = ".losslab-ui"
WILDCARD = ("0.0.0.0", "::", "[::]", "")
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 5000


def ui_address() -> tuple[str, int]:
    """(host, port) `make ui` binds: LOSSLAB_UI_HOST (127.0.0.1) and LOSSLAB_UI_PORT (5000)."""
    host = os.environ.get("LOSSLAB_UI_HOST") or DEFAULT_HOST
    port = os.environ.get("LOSSLAB_UI_PORT") or str(DEFAULT_PORT)
    return host, int(port)


def _base(host: str, port: int) -> str:
    if host in WILDCARD:  # bound to every interface: this machine's browser reaches it on loopback
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _store_file(tracking_uri: str | None) -> Path | None:
    """The sqlite file of a `sqlite:///` store (whose folder holds UI_FILE); None for other stores."""
    if not tracking_uri or not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri[len("sqlite:///") :]).resolve()


def record_ui(tracking_uri: str, host: str, port: int) -> Path | None:
    """Note that `make ui` serves this sqlite store on host:port (UI_FILE beside it, written whole);
    the file, or None for a store that is not a sqlite file or a folder that cannot be written."""
    db = _store_file(tracking_uri)
    if db is None:
        return None
    path = db.parent / UI_FILE
    entries = _read_records(path)
    entries[db.name] = {"host": host, "port": int(port), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    tmp = path.with_name(f"{UI_FILE}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return None
    return path


def _read_records(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def recorded_ui(tracking_uri: str | None) -> tuple[str, Path] | None:
    """(http://HOST:PORT, the file saying so) `make ui` last served this sqlite store on, or None."""
    db = _store_file(tracking_uri)
    if db is None:
        return None
    path = db.parent / UI_FILE
    entry = _read_records(path).get(db.name)
    try:
        return _base(str(entry["host"]), int(entry["port"])), path  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return None


_answered: dict[str, tuple[float, bool]] = {}


def answers(base: str, timeout: float = 0.5) -> bool:
    """Whether an MLflow UI answers at `base` now (its /health), remembered for 30 s: a report asks
    once for all its links."""
    import urllib.request

    seen = _answered.get(base)
    if seen is not None and time.monotonic() - seen[0] < 30:
        return seen[1]
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=timeout) as resp:
            ok = resp.status == 200
    except (OSError, ValueError):
        ok = False
    _answered[base] = (time.monotonic(), ok)
    return ok


def ui_choice(tracking_uri: str | None = None) -> tuple[str, str]:
    """(http://HOST:PORT of the UI that shows this store, one sentence on why that address), by the
    order in the module docstring."""
    explicit = os.environ.get("LOSSLAB_UI_HOST") or os.environ.get("LOSSLAB_UI_PORT")
    if explicit:
        base = _base(*ui_address())
        return base, f"Links use {base}, from LOSSLAB_UI_HOST / LOSSLAB_UI_PORT."
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(tracking_uri)  # no user or password in a printed link: the browser asks
        netloc = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        base = urlunsplit(parts._replace(netloc=netloc, query="", fragment="")).rstrip("/")
        return base, f"Links use {base}, the tracking server (its UI)."
    recorded = recorded_ui(tracking_uri)
    if recorded is not None:
        base, path = recorded
        if answers(base):
            return base, f"Links use {base}, where `make ui` serves this store (running; noted in {path})."
        return base, (
            f"Links use {base}, where `make ui` last served this store (not running now; noted in {path})."
        )
    base = _base(DEFAULT_HOST, DEFAULT_PORT)
    return base, (
        f"Links use {base}, `make ui`'s default address (no UI has served this store yet; "
        "LOSSLAB_UI_PORT=N make ui serves it elsewhere, and `python -m losslab.compare` then writes "
        "reports with its links)."
    )


def ui_base(tracking_uri: str | None = None) -> str:
    """http://HOST:PORT of the UI that shows this store (`ui_choice`)."""
    return ui_choice(tracking_uri)[0]


def runs_url(
    experiment_id: str, tracking_uri: str | None = None, view: str | None = None, base: str | None = None
) -> str:
    """The experiment's runs table (parents with their children nested); with `view` (a key from
    `share_view`), as that view: the task metric and outcome columns shown, runs grouped by design.
    On `base` (http://HOST:PORT) when given, else the UI address for this store (`ui_choice`)."""
    shared = f"&{SHARE_PARAM}={view}" if view else ""
    return f"{base or ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs?{VIEW}{shared}"


# The runs table's view state in a link. MLflow's UI (3.x, server/js/build: `viewStateShareKey`,
# `mlflow.sharedViewState.`) reads only the search facets from a URL (searchFilter, orderByKey,
# orderByAsc, startTime, lifecycleFilter, modelVersionFilter, datasetsFilter); the columns shown and
# the grouping live in the browser's local storage, except for a *shared view*: `?viewStateShareKey=K`
# loads the JSON in the experiment tag `mlflow.sharedViewState.K` (what the UI's Share button
# writes), whose search facets and UI state (selectedColumns, groupBy, ...) then apply.
SHARE_PARAM = "viewStateShareKey"
SHARE_TAG = "mlflow.sharedViewState."
#: the child-run tag the shared view groups by (set by the sweep at its end)
DESIGN_TAG = "design"


def _column(kind: str, name: str) -> str:
    return f"{kind}.`{name}`"  # MLflow's canonical column key


def view_state(metrics: Sequence[str], maximize: bool | None = None) -> dict:
    """The runs table as a LossLab sweep is read: its task metric on val (the selection value) and
    test, the outcome, the Dataset column; sorted on val; runs grouped by design (`DESIGN_TAG`)."""
    columns = [_column("attributes", "Dataset")]
    for m in metrics:
        columns += [_column("metrics", f"best/val_{m}"), _column("metrics", f"test/{m}")]
    columns += [_column("tags", "outcome"), _column("tags", DESIGN_TAG)]
    state: dict = {
        "selectedColumns": columns,
        "groupBy": {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "tag", "groupByData": DESIGN_TAG}],
        },
        "groupsExpanded": {},
    }
    if metrics:
        state["orderByKey"] = _column("metrics", f"best/val_{metrics[0]}")
        state["orderByAsc"] = not maximize if maximize is not None else False
    return state


def share_view(client, experiment_id: str, state: dict) -> str:
    """Store `state` as a shared view of the experiment; returns its key (the same state, the same
    key: a sweep run twice adds no second tag)."""
    import hashlib
    import json

    text = json.dumps(state, sort_keys=True)
    key = "losslab-" + hashlib.sha256(text.encode()).hexdigest()[:12]
    client.set_experiment_tag(experiment_id, SHARE_TAG + key, text)
    return key


def run_url(experiment_id: str, run_id: str, tracking_uri: str | None = None, base: str | None = None) -> str:
    """One run's page (its note, parameters, metrics, artifacts)."""
    return f"{base or ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}?{VIEW}"


def latest_sweep(client) -> tuple[str, str, str | None, str | None] | None:
    """(experiment id, parent run id, its shared view's key or None, the UI address its links were
    written with or None) of the newest sweep in the store, in any experiment."""
    experiments = [e.experiment_id for e in client.search_experiments(max_results=1000)]
    if not experiments:
        return None
    runs = client.search_runs(
        experiments,
        filter_string="tags.`losslab.sweep` = 'parent'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    if not runs:
        return None
    tags = runs[0].data.tags
    return runs[0].info.experiment_id, runs[0].info.run_id, tags.get(VIEW_TAG), tags.get(UI_TAG)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:5000")
    return host.strip("[]") or DEFAULT_HOST, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m losslab.links", description=__doc__.splitlines()[0])
    p.add_argument("--store", help="tracking URI (default: MLFLOW_TRACKING_URI or the project's mlflow.db)")
    p.add_argument(
        "--serve",
        type=_host_port,
        metavar="HOST:PORT",
        help="the address a UI is about to serve the store on (`make ui`): recorded beside a sqlite store, "
        "so later links (sweeps, reports) use it",
    )
    args = p.parse_args(argv)
    from losslab.tracking.params import redact_uri
    from losslab.tracking.store import open_store, resolve_tracking_uri

    uri = resolve_tracking_uri(args.store)
    base = None
    if args.serve is not None:
        record_ui(uri, *args.serve)
        base = _base(*args.serve)
    try:
        latest = latest_sweep(open_store(uri))
    except Exception as exc:  # the UI still starts; the link just cannot name an experiment
        where = base or ui_base(uri)
        print(f"MLflow UI: {where} (could not read {redact_uri(uri)}: {exc})", file=sys.stderr)
        return 0
    if latest is None:
        print(f"MLflow UI: {base or ui_base(uri)}/#/experiments (no sweep in the store yet)")
        return 0
    exp_id, parent_id, view, written = latest
    print(f"latest sweep, runs table: {runs_url(exp_id, uri, view, base)}")
    if base is not None and written and written != base:
        print(
            f"note: this sweep's report and note link to {written}, the UI's address when they were "
            f"written; `.venv/bin/python -m losslab.compare --sweep {parent_id}` writes its report again "
            f"with links to {base}."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
