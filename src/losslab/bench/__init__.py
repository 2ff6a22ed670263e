"""LossLab's benchmark: `python -m losslab.bench [--quick] [--only 1,4]` (`make bench`).

One module per benchmark beside a small shared harness, so each can be read, run and changed alone:

  harness.py    sizes, timed samples, A/B alternation, configs, fresh stores, table rows
  runs.py       the variants timed: LossLab, a raw PyTorch loop, plain Lightning, stock Lightning
  overhead.py   1. LossLab / raw loop per step (small and 4x1024 MLP), plain Lightning / raw beside it
  stock.py      2. stock Lightning + MLFlowLogger + grad_norm / LossLab
  http_store.py 3. LossLab over HTTP (a local `mlflow server`) / into sqlite
  sweep.py      4. real sweeps: start-up, per-job overhead, joblib / basic against the ceiling
  ceiling.py    the two-worker ceiling: two raw loops side by side / one (used by 4)
  report.py     5. the comparison report over a synthetic experiment
  soak.py       6. 64 short jobs on 2 joblib workers, every point counted
  gpu.py        host syncs per step and GPU ratios, where CUDA is available
  main.py       the command line, the table, the JSON

Every comparison is a ratio of variants run side by side, alternating, median of paired rounds;
the load average is recorded with every row. Nothing is cached between variants: every LossLab
run is `rerun=true` into a fresh store.
"""
