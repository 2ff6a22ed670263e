"""Links into the MLflow UI: the address `make ui` binds, and the runs table as a shared view
(MLflow's `viewStateShareKey`: task metric and outcome columns, runs grouped by design)."""

from __future__ import annotations

import json

from losslab import links


def test_links_use_the_ui_address_from_losslab_ui_host_and_port(monkeypatch):
    monkeypatch.setenv("LOSSLAB_UI_PORT", "5123")
    monkeypatch.setenv("LOSSLAB_UI_HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "1")
    assert links.runs_url("7") == "http://127.0.0.1:5123/#/experiments/7/runs?workflowType=machine_learning"
    # a tracking server's store: its own address unless LOSSLAB_UI_* say otherwise
    assert links.ui_base("http://u:p@srv:8080/") == "http://127.0.0.1:5123"
    monkeypatch.delenv("LOSSLAB_UI_PORT")
    monkeypatch.delenv("LOSSLAB_UI_HOST")
    assert links.ui_base("http://u:p@srv:8080/") == "http://srv:8080"


def test_a_runs_link_with_a_view_carries_the_share_key(monkeypatch):
    monkeypatch.delenv("LOSSLAB_UI_PORT", raising=False)
    monkeypatch.delenv("LOSSLAB_UI_HOST", raising=False)
    url = links.runs_url("3", view="losslab-abc")
    assert url == (
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning&viewStateShareKey=losslab-abc"
    )


def test_the_view_shows_the_task_metric_and_outcome_and_groups_by_design():
    state = links.view_state(["accuracy"], maximize=True)
    assert "metrics.`best/val_accuracy`" in state["selectedColumns"]
    assert "metrics.`test/accuracy`" in state["selectedColumns"]
    assert "tags.`outcome`" in state["selectedColumns"]
    assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": links.DESIGN_TAG}]
    assert state["orderByKey"] == "metrics.`best/val_accuracy`" and state["orderByAsc"] is False
    assert links.view_state(["rmse"], maximize=False)["orderByAsc"] is True


def test_share_view_stores_the_state_as_the_experiment_tag_the_ui_reads(client):
    exp = client.create_experiment("links")
    state = links.view_state(["rmse"], maximize=False)
    key = links.share_view(client, exp, state)
    assert key == links.share_view(client, exp, state)  # the same view: the same key, one tag
    tags = client.get_experiment(exp).tags
    assert json.loads(tags[f"mlflow.sharedViewState.{key}"]) == state
    assert [k for k in tags if k.startswith("mlflow.sharedViewState.")] == [f"mlflow.sharedViewState.{key}"]


def test_links_use_the_address_make_ui_last_served_the_store_on(tmp_path, monkeypatch):
    """`make ui` records its address beside a sqlite store (`--serve`); links of that store use it
    (a UI answering there or not: here none does), after LOSSLAB_UI_* and a tracking server's own."""
    from conftest import free_port

    monkeypatch.delenv("LOSSLAB_UI_PORT", raising=False)
    monkeypatch.delenv("LOSSLAB_UI_HOST", raising=False)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base, how = links.ui_choice(store)
    assert base == "http://127.0.0.1:5000" and "`make ui`'s default address" in how

    port = free_port()  # nothing listens there
    assert links.main(["--store", store, "--serve", f"127.0.0.1:{port}"]) == 0
    recorded = json.loads((tmp_path / links.UI_FILE).read_text())
    assert recorded["mlflow.db"]["port"] == port and recorded["mlflow.db"]["host"] == "127.0.0.1"
    base, how = links.ui_choice(store)
    assert base == f"http://127.0.0.1:{port}"
    assert how == (
        f"Links use {base}, where `make ui` last served this store (not running now; noted in "
        f"{tmp_path / links.UI_FILE})."
    )
    assert links.run_url("3", "r", store) == f"{base}/#/experiments/3/runs/r?workflowType=machine_learning"
    # another store in the same folder keeps its own entry; a store elsewhere has none
    links.record_ui(f"sqlite:///{tmp_path / 'other.db'}", "0.0.0.0", 5077)
    assert links.ui_base(f"sqlite:///{tmp_path / 'other.db'}") == "http://127.0.0.1:5077"  # any interface
    assert links.ui_base(store) == base
    (tmp_path / "elsewhere").mkdir()
    assert links.ui_base(f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}") == "http://127.0.0.1:5000"
    # what the user sets wins; a tracking server is its own UI
    monkeypatch.setenv("LOSSLAB_UI_PORT", "5123")
    assert links.ui_base(store) == "http://127.0.0.1:5123"
    monkeypatch.delenv("LOSSLAB_UI_PORT")
    assert links.ui_base("http://127.0.0.1:5001") == "http://127.0.0.1:5001"
