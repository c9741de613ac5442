"""Study analyses: plug-ins that turn a study's batches into tables and figures.

Layout (one module per family, named after the module it wraps):

- :mod:`.contract` -- the contract: batches (:class:`CleanBatch`, :class:`AnalysisBatch`),
  base classes (:class:`StudyAnalysis`, :class:`ModelComparison`), typed options
  (:class:`AnalysisOptions`, :func:`option` and its checks), registries
  (:data:`ANALYSES`, :data:`COMPARISONS`) and the condition codec;
- :mod:`.helpers` -- layer selection (:class:`~.helpers.LayerSelect`), per-condition reducers
  (:class:`~.helpers.PerCondition`), table assembly;
- :mod:`.builtins` -- the list of built-in plug-in modules and the loading of third-party
  ones (entry-point group ``robustlens.analyses``);
- :mod:`.dissimilarity`, :mod:`.sensitivity`, :mod:`.rsa`, :mod:`.manifolds`,
  :mod:`.pca_images` (wrapping :mod:`robustlens.analysis`), :mod:`.robustness` (per-class,
  per-example, audit: :mod:`robustlens.evaluation`), :mod:`.featurevis` and :mod:`.saliency`
  (:mod:`robustlens.visualization`).

**The contract.** For each model of a study the runner builds one instance of every enabled
analysis, records the layers it asks for (:meth:`StudyAnalysis.layers`; the recording may hold
other analyses' layers too, so select yours), and feeds it ``update_clean(batch)`` once per
data batch and ``update(batch)`` once per data batch and attack x eps. At the end ``tables()``
returns named tidy DataFrames (the runner adds a ``model`` column, concatenates the models and
saves ``results/<table>.parquet``) and the class method ``figures(tables)`` draws the report's
figures from the concatenated tables. Analyses keep running sums only; ``state_dict`` /
``load_state_dict`` expose them (tensors and plain containers: resume points are read back with
``torch.load(weights_only=True)``), and ``merge(other)`` adds another instance's sums (the
workers of a ``torchrun`` launch). The result must not depend on how batches were split
between instances; ``tests/study/test_analysis_contract.py`` checks this for every registered
analysis.

**Adding an analysis** never edits the contract::

    from dataclasses import dataclass
    from robustlens.study.analyses import AnalysisOptions, StudyAnalysis, register_analysis
    from robustlens.study.analyses.contract import count, layer_selector, option

    @dataclass(frozen=True)
    class MyOptions(AnalysisOptions):
        layers: str | tuple[str, ...] = option("all", layer_selector())
        top_k: int = option(10, count(1))

    @register_analysis
    class MyAnalysis(StudyAnalysis):
        name = "mine"              # enabled by [analyses.mine] in a study config
        title = "My analysis"
        Options = MyOptions        # validated when the config is read: typos fail at once
        ...                        # layers, update_clean, update, tables, figures, state

A built-in goes in its own module here, listed in :data:`.builtins.BUILTIN_MODULES`; a
third-party one registers from its own package through the entry-point group
``robustlens.analyses``. **A model comparison** (:class:`ModelComparison`, registered with
:func:`register_comparison`, enabled by ``[comparisons.NAME]``) runs once after every model,
on the per-model tables.
"""

from robustlens.study.analyses.builtins import load_builtins, load_plugins
from robustlens.study.analyses.contract import (
    ANALYSES,
    COMPARISONS,
    AnalysisBatch,
    AnalysisOptions,
    CleanBatch,
    ComparisonOptions,
    Condition,
    ModelComparison,
    StudyAnalysis,
    condition_key,
    condition_str,
    merge_keyed,
    parse_options,
    register_analysis,
    register_comparison,
)

load_builtins()

__all__ = [
    "ANALYSES",
    "COMPARISONS",
    "AnalysisBatch",
    "AnalysisOptions",
    "CleanBatch",
    "ComparisonOptions",
    "Condition",
    "ModelComparison",
    "StudyAnalysis",
    "condition_key",
    "condition_str",
    "load_plugins",
    "merge_keyed",
    "parse_options",
    "register_analysis",
    "register_comparison",
]
