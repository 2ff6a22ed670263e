"""The across-data-sets summary and the memorisation columns, on in-memory runs whose answers are
known by construction: a label-noise study of 3 losses x 3 noise settings x 4 seeds."""

from __future__ import annotations

from pathlib import Path

import pytest

from losslab.report import across, tables
from losslab.report.analysis import analyse
from losslab.report.ranking import resolve_metric
from losslab.report.runs import RunData

LOSSES = ("cross_entropy", "gce", "sce")
#: (data.name, kind, rate) -> the test accuracy each loss scores there (mean over seeds)
SETTINGS = {
    "mnist1d_sym40": ("symmetric", "0.4", {"cross_entropy": 0.60, "gce": 0.75, "sce": 0.80}),
    "mnist1d_asym40": ("asymmetric", "0.4", {"cross_entropy": 0.70, "gce": 0.65, "sce": 0.72}),
    "mnist1d_sym0": ("symmetric", "0.0", {"cross_entropy": 0.93, "gce": 0.90, "sce": 0.92}),
}
SEEDS = (0, 1, 2, 3)
JITTER = (-0.01, 0.01, -0.005, 0.005)  # per seed: mean 0, so each design's mean is exact


def _run(name: str, kind: str, rate: str, loss: str, seed: int, acc: float, fit: bool) -> RunData:
    metrics = {
        "best/val_accuracy": acc + JITTER[seed],
        "test/accuracy": acc + JITTER[seed],
        "test_last/accuracy": acc - 0.05 + JITTER[seed],  # the last weights are 0.05 worse
        "final/val_loss": 1.0,
        "data/noise_rate": float(rate),
    }
    if fit:
        metrics["train/fit_noisy"] = {"cross_entropy": 0.9, "gce": 0.2, "sce": 0.3}[loss]
        metrics["train/fit_clean"] = 0.95
    params = {
        "seed": str(seed),
        "loss._target_": f"losslab.losses.multiclass.{loss}",
        "data.name": name,
        "data.label_noise.kind": kind,
        "data.label_noise.rate": rate,
        "data.label_noise.seed": str(seed),
        "data.n_classes": "10",
        "design": name,  # the study's +design choice names the data setting: not part of the design
    }
    tags = {"task": "multiclass", "outcome": "converged", "losslab.run": "true"}
    return RunData(f"{name}-{loss}-{seed}", f"{loss}-s{seed}", "FINISHED", params, tags, metrics)


def _analyses(fit: bool = True) -> dict[str, object]:
    out = {}
    for name, (kind, rate, accs) in SETTINGS.items():
        runs = [_run(name, kind, rate, loss, s, accs[loss], fit) for loss in LOSSES for s in SEEDS]
        out[name] = analyse(runs, resolve_metric(runs, None))
    return out


def test_layout_puts_the_numeric_param_on_x_and_splits_series_by_the_categorical_one() -> None:
    lay = across.layout(_analyses())
    assert lay.x_key == "data.label_noise.rate"
    assert lay.group_keys == ["data.label_noise.kind"]
    # the larger group (symmetric, 2 settings) first, by rate; then asymmetric
    assert [s.name for s in lay.settings] == ["mnist1d_sym0", "mnist1d_sym40", "mnist1d_asym40"]


def test_imbalance_ratios_order_numerically_not_as_text() -> None:
    analyses = {}
    for ratio in ("1", "10", "100", "2"):
        runs = [_run(f"lt{ratio}", "none", "0.0", loss, s, 0.8, False) for loss in LOSSES for s in SEEDS]
        for r in runs:
            r.params["data.imbalance_ratio"] = ratio
            del r.params["data.label_noise.kind"], r.params["data.label_noise.rate"]
        analyses[f"lt{ratio}"] = analyse(runs, resolve_metric(runs, None))
    lay = across.layout(analyses)
    assert lay.x_key == "data.imbalance_ratio" and lay.group_keys == []
    assert [s.name for s in lay.settings] == ["lt1", "lt2", "lt10", "lt100"]


def test_table_cells_are_each_settings_own_design_means_with_intervals() -> None:
    lay = across.layout(_analyses())
    head, rows = across.table(lay)
    assert head[1:] == ["mnist1d_sym0", "mnist1d_sym40", "mnist1d_asym40"]
    by_label = {row[0]: row[1:] for row in rows}
    assert by_label["Realised noise rate (mean over runs)"] == ["0.000", "0.400", "0.400"]
    gce = next(v for k, v in by_label.items() if "gce" in k)
    assert [c.split(" ")[0] for c in gce] == ["0.9", "0.75", "0.65"]
    assert all("[" in c for c in gce)  # an interval, never a bare number
    best = by_label["Best on val"]
    assert "cross_entropy" in best[0] and "sce" in best[1] and "sce" in best[2]


def test_fit_table_shows_memorisation_and_is_absent_without_it() -> None:
    _, rows = across.fit_table(across.layout(_analyses()))
    ce = next(r for r in rows if "cross_entropy" in r[0])
    assert [c.split(" ")[0] for c in ce[1:]] == ["0.9", "0.9", "0.9"]
    assert across.fit_table(across.layout(_analyses(fit=False))) is None


def test_memorisation_columns_in_the_design_table() -> None:
    a = _analyses()["mnist1d_sym40"]
    head = tables.headers(a)
    for name in (
        "Test accuracy at the last step (mean [95% CI])",
        "Selected − last test accuracy (per seed, mean [95% CI])",
        "Noisy training labels fit at the end (mean [95% CI])",
        "Clean training labels fit at the end (mean [95% CI])",
    ):
        assert name in head
    row = dict(zip(head, tables.rows(a)[0], strict=True))
    assert row["Selected − last test accuracy (per seed, mean [95% CI])"].startswith("+0.05 (equal on all 4")
    assert row["Test accuracy at the last step (mean [95% CI])"].startswith("0.75 [")  # sce: 0.80 - 0.05
    plain = _analyses(fit=False)["mnist1d_sym40"]
    assert not any("training labels fit" in h for h in tables.headers(plain))


def test_write_makes_a_page_with_the_plot_the_tables_and_links(tmp_path: Path) -> None:
    analyses = _analyses()
    pages = {}
    for name in analyses:
        page = tmp_path / f"study-{name}" / "index.html"
        page.parent.mkdir()
        page.write_text("report")
        pages[name] = page
    index = across.write(tmp_path / "study-across-data", "summary", analyses, pages)
    assert index is not None
    text = index.read_text()
    assert "data:image/png;base64," in text and "Memorisation" in text
    for name in analyses:
        assert f"../study-{name}/index.html" in text
    rows = (index.parent / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("Test accuracy") and len(rows) == 1 + 1 + len(LOSSES) + 1


def test_write_needs_two_data_sets_on_one_metric_sharing_a_design(tmp_path: Path) -> None:
    analyses = _analyses()
    one = dict(list(analyses.items())[:1])
    assert across.write(tmp_path / "x", "summary", one, {}) is None
    # each data set with its own loss (optimizer_stability's shape): nothing to line up
    own = {}
    for name, loss in zip(SETTINGS, LOSSES, strict=True):
        kind, rate, accs = SETTINGS[name]
        runs = [_run(name, kind, rate, loss, s, accs[loss], False) for s in SEEDS]
        own[name] = analyse(runs, resolve_metric(runs, None))
    assert not across.comparable(own)
    assert across.comparable(analyses)
    # another metric on one data set (binary beside regression): not comparable
    mixed = dict(analyses)
    runs = mixed["mnist1d_sym0"].runs
    for r in runs:
        r.metrics["best/val_macro_f1"] = r.metrics["best/val_accuracy"]
    mixed["mnist1d_sym0"] = analyse(runs, resolve_metric(runs, "macro_f1"))
    assert not across.comparable(mixed)


@pytest.mark.parametrize("fit", [True, False])
def test_plot_is_a_png(fit: bool) -> None:
    data = across.plot(across.layout(_analyses(fit)))
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
