"""The comparison report, one module per job.

store (which runs, their metrics and curves from MLflow) -> designs (grouping by swept params)
-> ranking / tuning / stats (which design is best, on val, with intervals and paired differences)
-> plots, tables, page (figures, the ranked table, one self-contained HTML file) -> build
(`build_report`, what sweeps and the bench call). `python -m losslab.compare` is the CLI.
"""

from .build import Report, build_report, build_reports
from .store import ReportError, load_runs

__all__ = ["Report", "ReportError", "build_report", "build_reports", "load_runs"]
