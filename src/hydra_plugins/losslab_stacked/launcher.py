"""`hydra/launcher=stacked`: the jobs of a sweep that differ only in `seed` trained as one stacked model.

Hydra imports this module at every start (plugin discovery), so it imports nothing heavy. Jobs run in
this process, as with the basic launcher. A job with no partner seed goes through Hydra's `run_job`
and LossLab's task function exactly as there. A group of seeds is set up job by job the way
`run_job` sets up one (its output folder, `.hydra/` files, train.log, `on_job_start`), then trained
together by `losslab.train.stacked.train_group`, which makes every seed its own run; each job then
gets its JobReturn (the value a sweeper reads) and `on_job_end`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    _save_config,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)


class StackedLauncher(Launcher):
    """Groups jobs by their overrides other than `seed` (at most `max_replicas` a group) and trains
    each group stacked; see losslab/sweep/stacked.py and losslab/train/stacked.py."""

    def __init__(self, max_replicas: Any = 8) -> None:
        super().__init__()
        self.max_replicas = max_replicas
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from losslab.sweep.stacked import groups, max_replicas_error

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        problem = max_replicas_error(self.max_replicas)
        if problem is not None:
            logging.getLogger("losslab_sweep").error("Error: %s", problem)
            sys.exit(2)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        batches = groups(job_overrides, int(self.max_replicas))
        log.info(
            f"Launching {len(job_overrides)} jobs locally, seeds stacked: {len(batches)} groups "
            f"(max_replicas={self.max_replicas})"
        )
        returns: dict[int, JobReturn] = {}
        for members in batches:
            for i in members:
                log.info(f"\t#{initial_job_idx + i} : {' '.join(filter_overrides(job_overrides[i]))}")
            if len(members) == 1:
                i = members[0]
                returns[i] = self._solo(list(job_overrides[i]), initial_job_idx + i)
            else:
                done = self._group(
                    [list(job_overrides[i]) for i in members], [initial_job_idx + i for i in members]
                )
                returns.update(zip(members, done, strict=True))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [returns[i] for i in range(len(job_overrides))]

    def _sweep_config(self, overrides: list[str], idx: int) -> DictConfig:
        assert self.config is not None and self.hydra_context is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg):
            cfg.hydra.job.id = idx
            cfg.hydra.job.num = idx
        return cfg

    def _solo(self, overrides: list[str], idx: int) -> JobReturn:
        """A job with no partner seed: what the basic launcher does."""
        assert self.hydra_context is not None and self.task_function is not None
        return run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=self._sweep_config(overrides, idx),
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )

    def _open_job(self, config: DictConfig) -> tuple[DictConfig, JobReturn]:
        """The set-up `run_job` gives a job before its task runs: output folder, Hydra's job config,
        train.log, `.hydra/` files, `on_job_start`. Returns the task's config (without `hydra`)."""
        assert self.hydra_context is not None
        HydraConfig.instance().set_config(config)
        out = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = str(out.resolve())
        HydraConfig.instance().set_config(config)
        task_cfg = copy.deepcopy(config)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        ret = JobReturn()
        ret.cfg, ret.hydra_cfg = task_cfg, copy.deepcopy(HydraConfig.instance().cfg)
        overrides = OmegaConf.to_container(config.hydra.overrides.task)
        assert isinstance(overrides, list)
        ret.overrides, ret.working_dir = overrides, os.getcwd()
        out.mkdir(parents=True, exist_ok=True)
        configure_log(config.hydra.job_logging, config.hydra.verbose)
        if config.hydra.output_subdir is not None:
            hydra_out = out / str(config.hydra.output_subdir)
            _save_config(task_cfg, "config.yaml", hydra_out)
            _save_config(ret.hydra_cfg, "hydra.yaml", hydra_out)
            _save_config(config.hydra.overrides.task, "overrides.yaml", hydra_out)
        self.hydra_context.callbacks.on_job_start(config=config, task_function=self.task_function)
        return task_cfg, ret

    def _group(self, overrides: list[list[str]], nums: list[int]) -> list[JobReturn]:
        """Set up each job, train them stacked, hand back each job's return."""
        from losslab.config.build import ConfigError
        from losslab.train import stacked

        assert self.hydra_context is not None
        configs = [self._sweep_config(o, n) for o, n in zip(overrides, nums, strict=True)]
        opened = [self._open_job(c) for c in configs]

        @contextlib.contextmanager
        def enter(i: int) -> Iterator[None]:
            """Job i as the current Hydra job: its config and its train.log."""
            HydraConfig.instance().set_config(configs[i])
            configure_log(configs[i].hydra.job_logging, configs[i].hydra.verbose)
            yield

        try:
            results = stacked.train_group([task for task, _ in opened], enter)
        except ConfigError as exc:  # before any run of the group exists
            logging.getLogger("losslab_sweep").error("Error: %s", exc)
            sys.exit(2)
        returns = []
        for config, (_, ret), result in zip(configs, opened, results, strict=True):
            HydraConfig.instance().set_config(config)
            ret.return_value = result.objective
            ret.status = JobStatus.COMPLETED
            ret.task_name = str(config.hydra.job.name)
            self.hydra_context.callbacks.on_job_end(config=config, job_return=ret)
            returns.append(ret)
        return returns
