"""The study report: built from a run directory alone.

:func:`build_report` reads a run directory (``config.toml``, ``manifest.json``,
``results/*.parquet``; see :class:`RunDir`), draws every analysis' figures into ``figures/``
and writes a self-contained ``report.html`` (figures embedded): a summary with the headline
numbers, a table of contents, one section per analysis with its own text, figures and tables,
then the config and the manifest. ``robustlens report RUN_DIR`` rebuilds it.

Nothing here changes matplotlib's global state: figures are drawn on their own Agg canvas.
"""

from robustlens.report.build import build_report
from robustlens.report.figures import accuracy_vs_eps_figure, cascade_accuracy_figure, found_by_figure, save_png
from robustlens.report.html import ReportSection, write_report
from robustlens.report.rundir import RunDir, assign_tables
from robustlens.report.summary import accuracy_summary, audit_flags, cascade_notes, headline_table

__all__ = [
    "ReportSection",
    "RunDir",
    "accuracy_summary",
    "accuracy_vs_eps_figure",
    "assign_tables",
    "audit_flags",
    "build_report",
    "cascade_accuracy_figure",
    "cascade_notes",
    "found_by_figure",
    "headline_table",
    "save_png",
    "write_report",
]
