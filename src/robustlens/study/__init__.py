"""Studies: a TOML config in, a run directory with tables, figures and a report out."""

from robustlens.study.analyses import (
    ANALYSES,
    COMPARISONS,
    AnalysisBatch,
    CleanBatch,
    ModelComparison,
    StudyAnalysis,
    register_analysis,
    register_comparison,
)
from robustlens.study.config import StudyConfig, load_config, parse_config
from robustlens.study.runner import StudyResult, resolve_device, run_study

__all__ = [
    "ANALYSES",
    "COMPARISONS",
    "AnalysisBatch",
    "CleanBatch",
    "ModelComparison",
    "StudyAnalysis",
    "StudyConfig",
    "StudyResult",
    "load_config",
    "parse_config",
    "register_analysis",
    "register_comparison",
    "resolve_device",
    "run_study",
]
