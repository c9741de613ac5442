"""Third-party analyses through the ``robustlens.analyses`` entry points, and model comparisons."""

from __future__ import annotations

import importlib.metadata
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from robustlens.errors import ConfigError
from robustlens.study import parse_config
from robustlens.study.analyses import (
    ANALYSES,
    COMPARISONS,
    ComparisonOptions,
    ModelComparison,
    builtins,
    register_comparison,
)
from robustlens.study.analyses.contract import number, option
from robustlens.study.runner import run_study

BASE: dict[str, Any] = {
    "study": {"name": "cmp", "batch_size": 20},
    "data": {"dataset": "digits", "n_per_class": 2},
    "models": [{"name": "a", "architecture": "digits_cnn", "random": True},
               {"name": "b", "architecture": "digits_cnn", "random": True, "seed": 1}],
    "attacks": [{"type": "fgsm", "eps": [0.1]}],
}


def test_an_entry_point_registers_an_analysis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "toy_robustlens_plugin.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        from robustlens.study.analyses import AnalysisOptions, StudyAnalysis, register_analysis
        from robustlens.study.analyses.contract import count, option

        @dataclass(frozen=True)
        class ToyOptions(AnalysisOptions):
            n: int = option(1, count(1))

        @register_analysis
        class Toy(StudyAnalysis):
            name = "toy"
            Options = ToyOptions
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = importlib.metadata.EntryPoint("toy", "toy_robustlens_plugin", builtins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [entry] if group == builtins.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(builtins, "_loaded", set())
    try:
        config = parse_config({**BASE, "analyses": {"toy": {"n": 3}}})
        assert "toy" in ANALYSES and config.analysis_options["toy"].n == 3
        with pytest.raises(ConfigError, match=r"\[analyses.toy\].n must be an integer >= 1; received 0"):
            parse_config({**BASE, "analyses": {"toy": {"n": 0}}})
    finally:
        ANALYSES.pop("toy", None)


def test_a_broken_entry_point_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = importlib.metadata.EntryPoint("broken", "no_such_module_robustlens_xyz", builtins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [entry])
    monkeypatch.setattr(builtins, "_loaded", set())
    with pytest.raises(ConfigError, match="plug-in 'broken'.*failed to load"):
        parse_config(BASE)


@dataclass(frozen=True)
class GapOptions(ComparisonOptions):
    scale: float = option(1.0, number(0))


class AccuracyGap(ModelComparison):
    """Test-only comparison: accuracy of each model minus the first listed model's, per condition."""

    name = "accuracy_gap_test"
    title = "Accuracy gap"
    Options = GapOptions

    def compare(self, tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
        acc = tables["accuracy"]
        first = self.options.models[0] if self.options.models else acc["model"].iloc[0]
        ref = acc[acc["model"] == first].set_index(["attack", "eps"])["accuracy"]
        gap = acc.assign(gap=[self.options.scale * (r.accuracy - ref[(r.attack, r.eps)])
                              for r in acc.itertuples()])
        return {"accuracy_gap_test": gap[["model", "attack", "eps", "gap"]]}


@pytest.fixture
def gap_registered() -> Any:
    register_comparison(AccuracyGap)
    yield AccuracyGap
    COMPARISONS.pop(AccuracyGap.name)


def test_comparison_options_are_checked_when_parsed(gap_registered: Any) -> None:
    with pytest.raises(ConfigError, match=r"\[comparisons.accuracy_gap_test\].scale must be a number"):
        parse_config({**BASE, "comparisons": {"accuracy_gap_test": {"scale": "big"}}})
    with pytest.raises(ConfigError, match="names 'c', which is not a model of this study"):
        parse_config({**BASE, "comparisons": {"accuracy_gap_test": {"models": ["a", "c"]}}})
    # a comparison may be given among the analyses too, but only once
    config = parse_config({**BASE, "analyses": {"accuracy_gap_test": {"models": ["a", "b"]}}})
    assert config.comparison_options["accuracy_gap_test"].models == ("a", "b")
    assert "accuracy_gap_test" not in config.analyses
    with pytest.raises(ConfigError, match="given twice"):
        parse_config({**BASE, "analyses": {"accuracy_gap_test": {}}, "comparisons": {"accuracy_gap_test": {}}})


def test_comparisons_run_after_the_models(tmp_path: Path, gap_registered: Any) -> None:
    config = parse_config({**BASE, "analyses": {"per_class": {}},
                           "comparisons": {"accuracy_gap_test": {"models": ["b", "a"], "scale": 2.0}}})
    run_study(config, tmp_path / "run", progress=False)
    acc = pd.read_parquet(tmp_path / "run" / "results" / "accuracy.parquet")
    gap = pd.read_parquet(tmp_path / "run" / "results" / "accuracy_gap_test.parquet")
    assert set(gap["model"]) == {"a", "b"} and len(gap) == len(acc)
    wide = acc.pivot_table(index=["attack", "eps"], columns="model", values="accuracy")
    got = gap.pivot_table(index=["attack", "eps"], columns="model", values="gap")
    pd.testing.assert_series_equal(got["a"], 2.0 * (wide["a"] - wide["b"]), check_names=False)
    assert (got["b"] == 0).all()  # "b" is listed first: the reference
    assert "Accuracy gap" in (tmp_path / "run" / "report.html").read_text()


def test_wrong_layers_fail_before_any_model_is_trained(tmp_path: Path) -> None:
    models = [{"name": "trained", "architecture": "digits_cnn", "train": {"epochs": 50}},
              {"name": "b", "architecture": "digits_cnn", "random": True}]
    config = parse_config({**BASE, "models": models,
                           "analyses": {"sensitivity": {"layers": "type:ReLU"},
                                        "rsa": {"layers": ["features.1", "featurs.4"]},
                                        "manifolds": {"layer": "no_such_layer"}}})
    with pytest.raises(ConfigError, match=r"4 models cannot take the data or lack the layers.*'trained'.*"
                                          r"\[analyses.rsa\].layers.*"
                                          r"featurs.4.*\[analyses.manifolds\].layer"):
        run_study(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_layers_per_model_table() -> None:
    """A layer option may name layers per model ("*": every other model); a model missing from
    the table without "*" is refused when its analysis is built (the preflight does so first)."""
    from robustlens.models import create_model
    from robustlens.study.analyses import ANALYSES

    config = parse_config({**BASE, "analyses": {"dissimilarity": {
        "layers": {"a": ["features.0", "features.1"], "*": "classifier.0"}}}})
    options = config.analysis_options["dissimilarity"]
    model = create_model("digits_cnn")
    names = [n for n, _ in model.named_modules() if n]
    assert "features.0" in names
    for name, expected in (("a", ["features.0", "features.1"]), ("b", ["classifier.0"])):
        analysis = ANALYSES["dissimilarity"](name, model, [str(i) for i in range(10)], options)
        assert analysis.layers() == expected
    only_a = parse_config({**BASE, "analyses": {"dissimilarity": {"layers": {"a": "features.0"}}}})
    with pytest.raises(ConfigError, match="no layers for model 'b'"):
        ANALYSES["dissimilarity"]("b", model, [str(i) for i in range(10)], only_a.analysis_options["dissimilarity"])
    with pytest.raises(ConfigError, match=r"\[analyses.dissimilarity\].layers.a must be"):
        parse_config({**BASE, "analyses": {"dissimilarity": {"layers": {"a": 3}}}})
