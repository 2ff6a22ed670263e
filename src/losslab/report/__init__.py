"""The comparison report, one module per job.

runs (which runs, their metrics and curves from MLflow) -> designs (grouping by swept params)
-> ranking / tuning / analysis / stats (which design is best, on val, with intervals and paired differences)
-> plots, tables, page (figures, the ranked table, one self-contained HTML file) -> assemble
(`build_report`, what sweeps and the bench call). `python -m losslab.compare` is the CLI.
"""

from losslab.report.assemble import Report, build_report, build_reports
from losslab.report.runs import ReportError, load_runs

__all__ = ["Report", "ReportError", "build_report", "build_reports", "load_runs"]
