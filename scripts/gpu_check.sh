#!/usr/bin/env bash
# GPU checks in one go, for a CUDA machine (issue 14 item 4; everything else runs without a GPU):
#   1. the bench's GPU section: host syncs per training step with tracking on, and where they come from;
#      LossLab / raw-loop ratios for the small and the 4x1024 MLP on the GPU;
#   2. one training run and a small sweep with trainer.accelerator=gpu (32-bit and 16-mixed);
#   3. stacked seeds (issue 24 items 2-4): a 4-seed hydra/launcher=stacked sweep on the GPU, and the bench's
#      section 7, 8 and 32 seeds of the 256x256 MLP and the MNIST-1D CNN stacked against one after another
#      (one paired round; target: 8 stacked seeds >= 5x the throughput of 8 sequential runs);
#   4. the default tests that take a GPU path when CUDA is there, and the stacked-seeds tests.
# Time: each step has its own timeout (330 + 120 + 180 + 90 + 240 + 240 s, 20 min at most). To fit
# 10-minute device commands, run it in two parts: SKIP_STACKED=1 (steps 1, 2, 4 without the stacked
# tests), then ONLY_STACKED=1 (step 3 and the stacked tests).
# Usage: scripts/gpu_check.sh [OUT_DIR]   (PYTHON=... picks the interpreter; default python3)
# It runs from a checkout without `pip install -e` (src/ goes on PYTHONPATH), so a machine whose Python
# already has torch and Lightning needs only the rest of LossLab's dependencies.
set -uo pipefail
out=${1:-gpu-results}
mkdir -p "$out"
out=$(cd "$out" && pwd)
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
work=$(mktemp -d)
export MLFLOW_TRACKING_URI=sqlite:///$work/gpu-check.db
step() { echo; echo "== $* ($(date +%T))"; }

step machine
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$out/nvidia-smi.txt"
"$py" -c 'import torch, pytorch_lightning as pl, mlflow, hydra, torchmetrics as tm
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "lightning", pl.__version__,
      "mlflow", mlflow.__version__, "hydra", hydra.__version__, "torchmetrics", tm.__version__)' || exit 1

only_stacked=${ONLY_STACKED:-0}
if [ "$only_stacked" != 1 ]; then
step "bench GPU section"
timeout 330 "$py" -m losslab.bench --only , --out "$out/bench-gpu.json" 2>&1 | tee "$out/bench-gpu.txt"

step "one run on the GPU"
timeout 120 "$py" train.py trainer.accelerator=gpu trainer.max_steps=300 hydra.run.dir="$work/run" 2>&1 \
    | tee "$out/train-gpu.txt"

step "a sweep on the GPU: precision 32 and 16-mixed, two seeds"
timeout 180 "$py" train.py -m trainer.accelerator=gpu trainer.precision=32,16-mixed seed=0,1 \
    trainer.max_steps=200 hydra.sweep.dir="$work/sweep" tracking.report_on_sweep_end=false 2>&1 \
    | tee "$out/sweep-gpu.txt"

fi

if [ "${SKIP_STACKED:-0}" != 1 ]; then
    step "stacked seeds on the GPU: hydra/launcher=stacked, four seeds"
    timeout 90 "$py" train.py -m hydra/launcher=stacked trainer.accelerator=gpu seed=0,1,2,3 \
        trainer.max_steps=200 hydra.sweep.dir="$work/stacked" tracking.report_on_sweep_end=false 2>&1 \
        | tee "$out/stacked-gpu.txt"

    step "bench section 7: stacked against sequential seeds on the GPU"
    timeout 240 "$py" -m losslab.bench.stacked --repeats 1 --out "$out/bench-stacked.json" 2>&1 \
        | tee "$out/bench-stacked.txt"
fi

step "tests with a GPU path"
jobs=$(( $(nproc) > 8 ? 8 : $(nproc) ))
xdist=$("$py" -c 'import xdist' 2>/dev/null && echo "-n $jobs")
gpu_tests="tests/e2e/test_bad_input.py tests/e2e/test_reliability.py tests/e2e/test_sweeps.py tests/unit/train/test_module.py"
stacked_tests="tests/unit/train/test_stacked.py tests/unit/sweep/test_stacked_groups.py tests/e2e/test_stacked_launcher.py"
[ "${SKIP_STACKED:-0}" = 1 ] && stacked_tests=""
[ "$only_stacked" = 1 ] && gpu_tests=""
# shellcheck disable=SC2086
timeout 240 "$py" -m pytest -q -x -m "not slow" -p no:cacheprovider $xdist $gpu_tests $stacked_tests 2>&1 \
    | tail -40 | tee "$out/tests-gpu.txt"
rm -rf "$work"
