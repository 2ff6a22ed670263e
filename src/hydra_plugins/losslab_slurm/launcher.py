"""`hydra/launcher=slurm`: hydra-submitit-launcher's SlurmLauncher, waiting for every job.

Hydra imports this module at every start (plugin discovery), so it imports nothing heavy; the
work is in losslab.sweep.slurm, whose docstring says what real clusters needed beyond the stock launcher.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher

log = logging.getLogger(__name__)

#: submitit's generic parameters (AutoExecutor takes them unprefixed); the others become slurm_<key>
_GENERIC = {"timeout_min", "mem_gb", "nodes", "cpus_per_task", "gpus_per_node", "tasks_per_node"}
_GENERIC |= {"name", "stderr_to_stdout"}


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """One array job per sweep; every job waited for; failures reported, never requeued."""

    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> JobReturn:
        """In the job: SLURM's time-limit signal and scancel stop training cleanly."""
        from hydra.core.utils import setup_globals

        from losslab.sweep.slurm import run_interrupted_job

        setup_globals()  # the ${now:} resolver of hydra.sweep.dir, before _job_dir reads it

        def call() -> JobReturn:
            return super(SlurmLauncher, self).__call__(
                sweep_overrides, job_dir_key, job_num, job_id, singleton_state
            )

        result_json = self._job_dir(job_num) / "result.json"
        assert self.config is not None
        script = getattr(self, "script", None)
        return run_interrupted_job(call, list(sweep_overrides), result_json, self.config, script)

    def checkpoint(self, *args: Any, **kwargs: Any) -> None:
        """No requeue (submitit requeues a preempted job that can checkpoint): it would start over."""
        return None

    def _job_dir(self, job_num: int) -> Path:
        assert self.config is not None
        return Path(str(self.config.hydra.sweep.dir)) / str(job_num)

    def _executor(self) -> Any:
        import submitit

        params = dict(self.params)
        folder = params.pop("submitit_folder")
        init = {"slurm_max_num_timeout": params.pop("max_num_timeout")} if "max_num_timeout" in params else {}
        executor = submitit.AutoExecutor(cluster="slurm", folder=folder, **init)
        executor.update_parameters(**{k if k in _GENERIC else f"slurm_{k}": v for k, v in params.items()})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Submit the sweep as one array job, then collect every job's return, failed ones included."""
        from losslab.sweep.slurm import collect, driver_script, watch_with_queue

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        nums = [initial_job_idx + i for i in range(len(job_overrides))]
        overrides = [list(o) for o in job_overrides]
        for num, ov in zip(nums, overrides, strict=True):
            log.info(f"\t#{num} : {' '.join(filter_overrides(ov))}")
        self.script = driver_script()  # pickled with this launcher: what a job's DDP ranks re-run
        state = Singleton.get_state()
        jobs = self._executor().map_array(
            self,
            overrides,
            ["hydra.sweep.dir"] * len(nums),
            nums,
            [f"job_id_for_{n}" for n in nums],
            [state] * len(nums),
        )
        array = jobs[0].job_id.split("_")[0]
        log.info(f"SLURM array job {array}: {len(jobs)} jobs, logs in {sweep_dir}/.submitit")
        watch_with_queue(jobs)
        return [
            collect(job, ov, self._job_dir(num), self.config)
            for job, num, ov in zip(jobs, nums, overrides, strict=True)
        ]
