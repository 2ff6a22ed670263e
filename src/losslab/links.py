"""Links into the MLflow UI that open the runs view of the right experiment (or a run's page).

MLflow 3 opens its GenAI layout unless a link asks for `workflowType=machine_learning`, and each
study writes to its own experiment, so a bare `http://host:port` lands on the wrong page. Every link
LossLab prints or writes comes from here, on the address `make ui` really binds:
LOSSLAB_UI_HOST / LOSSLAB_UI_PORT (plain HOST/PORT are deliberately ignored), or the tracking
server itself when runs go to one (its UI is the server).

`python -m losslab.links [--store URI]` prints the runs-table link of the latest sweep's experiment
(what `make ui` shows before starting the UI).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

VIEW = "workflowType=machine_learning"
#: the parent-run tag holding the key of its sweep's shared view (`share_view`)
VIEW_TAG = "losslab.view"
WILDCARD = ("0.0.0.0", "::", "[::]", "")


def ui_address() -> tuple[str, int]:
    """(host, port) `make ui` binds: LOSSLAB_UI_HOST (127.0.0.1) and LOSSLAB_UI_PORT (5000)."""
    host = os.environ.get("LOSSLAB_UI_HOST") or "127.0.0.1"
    port = os.environ.get("LOSSLAB_UI_PORT") or "5000"
    return host, int(port)


def ui_base(tracking_uri: str | None = None) -> str:
    """http://HOST:PORT of the UI that shows this store: `make ui`'s address; for a tracking server
    store, the server itself unless LOSSLAB_UI_HOST/PORT say otherwise (as the report's links do)."""
    explicit = os.environ.get("LOSSLAB_UI_HOST") or os.environ.get("LOSSLAB_UI_PORT")
    if tracking_uri and tracking_uri.startswith(("http://", "https://")) and not explicit:
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(tracking_uri)  # no user or password in a printed link: the browser asks
        netloc = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        return urlunsplit(parts._replace(netloc=netloc, query="", fragment="")).rstrip("/")
    host, port = ui_address()
    if host in WILDCARD:  # bound to every interface: this machine's browser reaches it on loopback
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def runs_url(experiment_id: str, tracking_uri: str | None = None, view: str | None = None) -> str:
    """The experiment's runs table (parents with their children nested); with `view` (a key from
    `share_view`), as that view: the task metric and outcome columns shown, runs grouped by design."""
    shared = f"&{SHARE_PARAM}={view}" if view else ""
    return f"{ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs?{VIEW}{shared}"


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


def run_url(experiment_id: str, run_id: str, tracking_uri: str | None = None) -> str:
    """One run's page (its note, parameters, metrics, artifacts)."""
    return f"{ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}?{VIEW}"


def latest_sweep(client) -> tuple[str, str, str | None] | None:
    """(experiment id, parent run id, its shared view's key or None) of the newest sweep in the
    store, in any experiment."""
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
    return runs[0].info.experiment_id, runs[0].info.run_id, runs[0].data.tags.get(VIEW_TAG)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m losslab.links", description=__doc__.splitlines()[0])
    p.add_argument("--store", help="tracking URI (default: MLFLOW_TRACKING_URI or the project's mlflow.db)")
    args = p.parse_args(argv)
    from losslab.tracking.params import redact_uri
    from losslab.tracking.store import open_store, resolve_tracking_uri

    uri = resolve_tracking_uri(args.store)
    try:
        latest = latest_sweep(open_store(uri))
    except Exception as exc:  # the UI still starts; the link just cannot name an experiment
        print(f"MLflow UI: {ui_base()} (could not read {redact_uri(uri)}: {exc})", file=sys.stderr)
        return 0
    if latest is None:
        print(f"MLflow UI: {ui_base()}/#/experiments (no sweep in the store yet)")
    else:
        print(f"latest sweep, runs table: {runs_url(latest[0], view=latest[2])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
