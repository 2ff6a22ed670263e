"""Each loss's default grid (`loss=X -m`, conf/grid/X.yaml) runs at least 3 seeds per design."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from losslab import CONF_DIR

GRIDS = sorted(p for p in (CONF_DIR / "grid").glob("*.yaml") if p.stem != "none")


@pytest.mark.parametrize("path", GRIDS, ids=lambda p: p.stem)
def test_every_loss_grid_runs_three_seeds_or_more(path):
    grid = OmegaConf.load(path)
    seeds = str(grid.get("seed", "")).split(",")
    assert len([s for s in seeds if s.strip()]) >= 3, f"{path.name}: seed: {grid.get('seed')}"
