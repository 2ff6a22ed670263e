"""LossLab's messages go through `logging`: plain lines on the console, time-stamped lines in log files.

Inside a Hydra job, conf/hydra/job_logging/losslab.yaml routes the `losslab` loggers to the console
(INFO and below on stdout, warnings and errors on stderr, as the bare text users read) and to the
job's `<output dir>/train.log`. The sweep driver is not a job: `sweep_logger` gives it the same two
console streams plus `<sweep dir>/sweep.log`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from losslab.tracking.params import scrub_text

PLAIN = "%(message)s"
STAMPED = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


class BelowLevel(logging.Filter):
    """Pass records under `level` only: stdout gets information, stderr gets the rest."""

    def __init__(self, level: int | str = logging.WARNING) -> None:
        super().__init__()
        self.level = logging.getLevelName(level) if isinstance(level, str) else level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


class Redact(logging.Filter):
    """Secrets masked in every line a handler writes (`tracking.params.scrub_text`): an override list,
    an error quoting a URI, a library's message, whatever escaping Hydra or a sweeper gave them."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return True
        clean = scrub_text(text)
        if clean != text:
            record.msg, record.args = clean, None
        return True


def console_handlers() -> list[logging.Handler]:
    """stdout for INFO (the bare message), stderr for WARNING and up."""
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(BelowLevel(logging.WARNING))
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    for h in (out, err):
        h.setFormatter(logging.Formatter(PLAIN))
        h.addFilter(Redact())
    return [out, err]


def sweep_logger(log_dir: Path | None) -> logging.Logger:
    """The driver's logger: console streams plus `<log_dir>/sweep.log`; set up once per process."""
    # outside the `losslab` tree on purpose: each job's logging config names `losslab`, and
    # logging.config resets the existing children of a configured logger (handlers gone)
    log = logging.getLogger("losslab_sweep")
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    for h in console_handlers():
        log.addHandler(h)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_dir / "sweep.log")
        fh.setFormatter(logging.Formatter(STAMPED))
        fh.addFilter(Redact())
        log.addHandler(fh)
    log.setLevel(logging.INFO)
    log.propagate = False  # the jobs' logging config (their train.log) must not catch the driver's lines
    return log


def one_line(text: str, limit: int | None = None) -> str:
    """`text` with its whitespace runs (newlines included) as single spaces, cut to `limit` characters:
    an error paragraph quotes a library's multi-line message inside one sentence."""
    flat = " ".join(text.split())
    return flat if limit is None or len(flat) <= limit else flat[: limit - 3] + "..."
