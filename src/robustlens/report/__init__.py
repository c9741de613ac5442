"""Figures and the self-contained HTML report."""

from robustlens.report.figures import accuracy_vs_eps_figure
from robustlens.report.html import ReportSection, write_report

__all__ = ["ReportSection", "accuracy_vs_eps_figure", "write_report"]
