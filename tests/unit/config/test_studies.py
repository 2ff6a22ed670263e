"""Every study's designs compose to the design they name, in the order a sweep composes them.

A sweep puts its swept overrides (`+design=focal_multiclass`) before the command line's
(`+experiment=imbalance`), so an experiment-level `override /loss` composed later would silently win
over each design's own loss (it did: the imbalance study's focal design once ran cross-entropy).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import compose
from losslab import CONF_DIR, STUDIES_DIR

STUDIES = STUDIES_DIR / "experiment"
DESIGNS = Path(CONF_DIR) / "design"


def _sets_a_loss(design: str) -> bool:
    """A design that picks or sets the loss (the ones an experiment-level loss override can shadow)."""
    text = (DESIGNS / f"{design}.yaml").read_text()
    return "override /loss" in text or "\nloss:" in text


CASES = [
    (study.stem, design.strip())
    for study in sorted(STUDIES.glob("*.yaml"))
    for design in str(
        OmegaConf.select(OmegaConf.load(study), "hydra.sweeper.params", default={}).get("+design", "")
    ).split(",")
    if design.strip() and _sets_a_loss(design.strip())
]


def test_the_studies_with_designs_are_found():
    assert {s for s, _ in CASES} >= {"classification_shootout", "imbalance", "regression_shootout"}


@pytest.mark.parametrize(("study", "design"), CASES, ids=[f"{s}-{d}" for s, d in CASES])
def test_a_design_composes_the_same_before_or_after_its_experiment(study: str, design: str):
    as_swept = compose([f"+design={design}", f"+experiment={study}"])
    as_typed = compose([f"+experiment={study}", f"+design={design}"])
    assert as_swept.loss == as_typed.loss, f"{study}: +design={design} gives another loss when swept"
    wanted = OmegaConf.load(DESIGNS / f"{design}.yaml")
    for key, value in (wanted.get("loss") or {}).items():
        assert as_swept.loss.get(key) == value, (study, design, key)
