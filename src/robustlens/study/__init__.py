"""Studies: a TOML config in, a run directory with tables, figures and a report out."""

from robustlens.study.analyses import ANALYSES, AnalysisBatch, CleanBatch, StudyAnalysis, register_analysis
from robustlens.study.config import StudyConfig, load_config, parse_config
from robustlens.study.runner import StudyResult, resolve_device, run_study

__all__ = [
    "ANALYSES",
    "AnalysisBatch",
    "CleanBatch",
    "StudyAnalysis",
    "StudyConfig",
    "StudyResult",
    "load_config",
    "parse_config",
    "register_analysis",
    "resolve_device",
    "run_study",
]
