"""Run many `python train.py ARGS` command lines, each in its own process forked after the imports.

    python tests/helpers/forked_cli.py CASES.json OUT_DIR
    python tests/helpers/forked_cli.py --serve


CASES.json is a list of {"id", "args", "env", "cwd"}. This process imports what a training job
imports (torch, Lightning, MLflow: seconds on a loaded machine), then for each case forks a child
that becomes `python train.py ARGS` exactly as a fresh interpreter would run it: sys.argv, sys.path[0],
the environment and the working directory are the case's, `train.py` runs as `__main__`, and the child
leaves through the interpreter's own exit (atexit handlers, non-daemon threads, an uncaught exception's
traceback and exit 1). Each child's stdout and stderr go to OUT_DIR/ID.out and OUT_DIR/ID.err; its exit
status and wall time to OUT_DIR/results.json. Two children run at a time.

`--serve` does the same one case at a time, on request: a JSON line {"id", "args", "env", "cwd", "out"}
on stdin is answered on stdout with {"id", "pid"} once forked and {"id", "returncode", "seconds"} once
the child ended (its output in OUT/ID.out and OUT/ID.err). `conftest.run_train` runs its command lines so.

What the forks save is only the start-up: the imports every case would repeat. A test that is about
the start-up itself (what gets imported, how long a cold process takes) needs a real subprocess.
What a child cannot take from its case, because the interpreter reads it once at start-up: the hash
seed (every child of one server shares it; PYTHONHASHSEED is ignored), PYTHONWARNINGS, PYTHONIOENCODING,
PYTHONUTF8, PYTHONOPTIMIZE, PYTHONDEVMODE, PYTHONFAULTHANDLER, environment that torch, MLflow or
matplotlib read at their import (OMP_NUM_THREADS, MPLBACKEND, ...), and an uncaught exception's
traceback shows this module's frames above train.py's. A case that needs one of those runs fresh.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import logging
import os
import runpy
import signal
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "train.py"
sys.path[0] = str(ROOT)  # as for `python train.py`: the script's folder, not this one's
gc.disable()  # no collections during the imports: fewer pages touched before the forks

# What a job imports once its config is valid (job.py defers Lightning and MLflow until then).
# Lightning and lightning_fabric give their loggers a handler of their own (and stop propagation) when
# imported while the root logger has none; in a real run Hydra has configured logging by then, so
# they keep propagating to it (LossLab's redaction and train.log). A placeholder handler keeps that so.
_placeholder = logging.NullHandler()
logging.getLogger().addHandler(_placeholder)
import mlflow  # noqa: E402,F401
import pytorch_lightning  # noqa: E402,F401
import torch  # noqa: E402,F401

logging.getLogger().removeHandler(_placeholder)

import losslab.__main__  # noqa: E402
import losslab.train.job  # noqa: E402,F401

# what `job.start_run` imports: only a saving (a child imports whatever is missing), so a module
# moved or renamed is no error here
for _name in (
    "losslab.tracking.recorder",
    "losslab.tracking.store",
    "losslab.train.module",
    "losslab.train.callbacks.gradients",
    "losslab.train.callbacks.guard",
    "losslab.train.callbacks.recording",
    "losslab.data.datamodule",
):
    with contextlib.suppress(ImportError):
        importlib.import_module(_name)

PARALLEL = 2
TIMEOUT_S = 120.0


#: this interpreter's own PYTHONPATH entries, which a case's environment replaces
_OWN_PYTHONPATH = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]


def _child(case: dict, out_dir: Path) -> NoReturn:
    """Become `python train.py ARGS` for this case, then leave as the interpreter would."""
    gc.enable()
    os.chdir(case["cwd"])
    os.environ.clear()
    os.environ.update(case["env"])
    # what the interpreter derives from the environment at start-up: the import path and bytecode writing
    pythonpath = [os.path.abspath(p) for p in case["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    rest = [p for p in sys.path[1:] if os.path.abspath(p) not in _OWN_PYTHONPATH]
    sys.path[:] = [sys.path[0], *pythonpath, *rest]
    sys.dont_write_bytecode = bool(case["env"].get("PYTHONDONTWRITEBYTECODE"))
    for fd, suffix in ((1, "out"), (2, "err")):
        target = os.open(out_dir / f"{case['id']}.{suffix}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115  # fd 0 as in a fresh run, not the server's requests
    sys.argv = [str(TRAIN), *case["args"]]
    code = 0
    try:
        runpy.run_path(str(TRAIN), run_name="__main__")
    except SystemExit as stop:
        code = _exit_status(stop.code)
    except BaseException:  # an uncaught exception: its traceback, exit 1
        sys.excepthook(*sys.exc_info())
        code = 1
    _finalize(code)


def _exit_status(code: object) -> int:
    """SystemExit's code as the interpreter turns it into an exit status."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _finalize(code: int) -> NoReturn:
    """The interpreter's exit, less the teardown of every module: that teardown has nothing to show
    but, in a fork, writes to (and so copies) every page the parent's imports filled: seconds a case.
    Non-daemon threads are joined and atexit handlers run (MLflow ends its active run there), in the
    interpreter's order; then the buffered output is flushed."""
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx calls first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed stream: nothing left to write
            stream.flush()
    os._exit(code)


def main(cases_file: str, out_dir_name: str) -> int:
    cases = json.loads(Path(cases_file).read_text())
    out_dir = Path(out_dir_name)
    pending = list(cases)
    running: dict[int, tuple[str, float]] = {}
    results: dict[str, dict] = {}
    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()  # the children's collections leave the imported objects (and their pages) alone
    while pending or running:
        while pending and len(running) < PARALLEL:
            case = pending.pop(0)
            pid = os.fork()
            if pid == 0:
                _child(case, out_dir)  # never returns
            running[pid] = (case["id"], time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            now = time.monotonic()
            for child, (_case_id, started) in running.items():
                if now - started > TIMEOUT_S:
                    os.kill(child, signal.SIGKILL)  # as subprocess.run's timeout does
            time.sleep(0.02)
            continue
        case_id, started = running.pop(pid)
        results[case_id] = {
            "returncode": os.waitstatus_to_exitcode(status),
            "seconds": time.monotonic() - started,
        }
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    return 0


def serve() -> int:
    """One case per request line on stdin, forked at once; see the module docstring for the protocol."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # a stray print of this process goes to stderr, not into the replies
    sys.stderr.flush()
    gc.freeze()
    for line in sys.stdin:
        case = json.loads(line)
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os.close(replies.fileno())
            _child(case, Path(case["out"]))  # never returns
        replies.write(json.dumps({"id": case["id"], "pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        seconds = time.monotonic() - started
        ended = {"id": case["id"], "returncode": os.waitstatus_to_exitcode(status), "seconds": seconds}
        replies.write(json.dumps(ended) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(serve() if sys.argv[1:] == ["--serve"] else main(*sys.argv[1:]))
