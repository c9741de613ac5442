"""The source studies' plug-ins end to end: the sweet spot (S2), per-image dissimilarity (S1),
weights, dataset examples and DeepDream (S4), on the embedded digits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from robustlens.data import load_digits
from robustlens.errors import ConfigError
from robustlens.evaluation.sweet_spot import sweet_spot_from_table
from robustlens.study import parse_config
from robustlens.study.runner import run_study

CONFIG: dict[str, Any] = {
    "study": {"name": "sources", "batch_size": 20},
    "data": {"dataset": "digits", "n_per_class": 4},
    "models": [{"name": "robust", "architecture": "digits_cnn", "seed": 0,
                "train": {"epochs": 2, "batch_size": 64, "lr": 5e-3}},
               {"name": "standard", "architecture": "digits_cnn", "random": True, "seed": 1}],
    "attacks": [{"type": "fgsm", "eps": [0.0, 0.05, 0.1, 0.2]}],
    "analyses": {
        "per_example": {},
        "sweet_spot": {"models": ["robust", "standard"], "n_examples": 3},
        "sweet_spot_images": {"n_images": 40},
        "dissimilarity_images": {"n_images": 3, "layers": ["features.1", "features.4", "classifier.1"]},
        "weights": {},
        "dataset_examples": {"units": ["features.4#0"], "k": 3, "split": "train", "dataset": "digits",
                             "n_images": 200},
        "deepdream": {"layer": "features.4", "n_images": 1, "octaves": 1, "steps": 2},
    },
}


@pytest.mark.slow
def test_the_source_plugins_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUSTLENS_CACHE", str(tmp_path / "cache"))
    config = parse_config(CONFIG)
    assert "sweet_spot" in config.comparison_options  # given as [analyses.sweet_spot]
    run_study(config, tmp_path / "run", progress=False)
    results = tmp_path / "run" / "results"
    per = pd.read_parquet(results / "per_example.parquet")
    spot = pd.read_parquet(results / "sweet_spot.parquet")
    expected = sweet_spot_from_table(per, ["robust", "standard"], n_examples=3)
    pd.testing.assert_frame_equal(spot[list(expected.table.columns)], expected.table, check_dtype=False)
    assert (spot["model_a"] == "robust").all() and set(spot["eps"]) == {0.0, 0.05, 0.1, 0.2}
    examples = pd.read_parquet(results / "sweet_spot_examples.parquet")
    assert (examples["prediction_a"] == examples["label"]).all()
    assert (examples["prediction_b"] != examples["label"]).all()
    assert "label_name" in examples.columns
    images = pd.read_parquet(results / "dissimilarity_images.parquet")
    assert set(images["image"]) == {0, 1, 2} and set(images["eps"]) == {0.05, 0.1, 0.2}
    assert {"flag", "reason", "model"} <= set(images.columns)
    flags = pd.read_parquet(results / "dissimilarity_flags.parquet")
    assert {"n_zero", "n_undefined", "flag"} <= set(flags.columns)
    train = load_digits("train")
    found = pd.read_parquet(results / "dataset_examples.parquet")
    assert found["source"].iloc[0] == "digits/train" and found["index"].max() < len(train)
    assert set(found["kind"]) == {"image", "patch"}
    for name in ("weights", "deepdream"):
        assert not pd.read_parquet(results / f"{name}.parquet").empty
    report = (tmp_path / "run" / "report.html").read_text()
    for text in ("Sweet spot", "over depth", "First-layer", "Dataset examples", "DeepDream"):
        assert text in report, text
    figures = [p.name for p in (tmp_path / "run" / "figures").glob("*.png")]
    assert any("sweet_spot" in f for f in figures)


def test_sweet_spot_needs_two_models_and_the_per_example_table() -> None:
    with pytest.raises(ConfigError, match="not a model of this study"):
        parse_config({**CONFIG, "analyses": {"sweet_spot": {"models": ["robust", "strandard"]}}})
    from robustlens.study.analyses.sweet_spot import SweetSpotComparison

    with pytest.raises(ConfigError, match=r"per_example"):
        SweetSpotComparison(models=["robust", "standard"]).compare({"accuracy": pd.DataFrame()})
    with pytest.raises(ConfigError, match="two models"):
        SweetSpotComparison(models=["robust"]).compare({"per_example": pd.DataFrame({"a": [1]})})
    with pytest.raises(ConfigError, match="dataset"):
        parse_config({**CONFIG, "analyses": {"dataset_examples": {"units": ["features.4#0"], "split": "train"}}})
    assert torch.__version__  # torch imported for the runner's models


ATTACKS: dict[str, Any] = {
    **{k: v for k, v in CONFIG.items() if k != "analyses"},
    "models": [CONFIG["models"][0]],
    "attacks": [{"type": "fgsm", "eps": [0.1]},
                {"type": "corruption", "corruptions": ["fog", "gaussian_noise"], "severities": [1, 5]},
                {"name": "bb", "type": "substitute", "eps": [0.2], "rounds": 1, "epochs": 3, "n_seed": 20}],
    "analyses": {"per_class": {}, "per_example": {}, "audit": {"n_images": 4, "steps": 2}},
}


@pytest.mark.slow
def test_corruption_and_substitute_attack_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUSTLENS_CACHE", str(tmp_path / "cache"))
    config = parse_config(ATTACKS)
    assert [a.name for a in config.attacks] == ["fgsm", "fog", "gaussian_noise", "bb"]
    run_study(config, tmp_path / "run", progress=False)
    results = tmp_path / "run" / "results"
    acc = pd.read_parquet(results / "accuracy.parquet")
    rows = acc[acc["attack"].isin(["fog", "gaussian_noise"])]
    assert len(rows) == 4 and rows["eps"].isna().all() and sorted(set(rows["severity"])) == [1, 5]
    assert acc.loc[acc["attack"] == "fgsm", "severity"].isna().all()
    assert (rows["norm"] == "none").all()
    per_class = pd.read_parquet(results / "per_class.parquet")
    assert "severity" in per_class.columns
    assert "Accuracy against corruption severity" in (tmp_path / "run" / "report.html").read_text()
    # the black-box attack trained its substitute once, into the model cache
    assert len(list((tmp_path / "cache" / "substitutes").glob("*.safetensors"))) == 1
    assert acc.loc[acc["attack"] == "bb", "accuracy"].iloc[0] <= acc.loc[acc["attack"] == "clean", "accuracy"].iloc[0]
    # the resolved config reads back as the same study
    import tomllib

    again = parse_config(tomllib.loads((tmp_path / "run" / "config.toml").read_text()))
    assert again.attacks == config.attacks


def test_corruption_attack_config_errors() -> None:
    base = {k: v for k, v in ATTACKS.items() if k != "attacks"}
    with pytest.raises(ConfigError, match="no eps"):
        parse_config({**base, "attacks": [{"type": "corruption", "corruptions": ["fog"], "eps": [0.1]}]})
    with pytest.raises(ConfigError, match="'fog'"):
        parse_config({**base, "attacks": [{"type": "corruption", "corruptions": ["fgo"]}]})
    with pytest.raises(ConfigError, match="1..5"):
        parse_config({**base, "attacks": [{"type": "corruption", "corruptions": ["fog"], "severities": [6]}]})
    everything = parse_config({**base, "attacks": [{"type": "corruption", "corruptions": ["all"]}]})
    assert len(everything.attacks) == 14 and everything.attacks[0].eps == (1.0, 2.0, 3.0, 4.0, 5.0)
    with pytest.raises(ConfigError, match="via"):
        parse_config({**base, "attacks": [{"type": "substitute", "eps": [0.1], "via": "cw"}]})


def _saliency_analysis(model: torch.nn.Module, n_images: int, **options: Any) -> Any:
    """A saliency analysis with ``options`` that has seen the first digits test images."""
    from robustlens.study.analyses import ANALYSES, CleanBatch, parse_options

    cls = ANALYSES["saliency"]
    test = load_digits("test")
    x, y = test.images[:n_images], test.labels[:n_images]
    analysis = cls("m", model, test.class_names,
                   parse_options(cls.Options, {"n_images": n_images, **options}, "[analyses.saliency]"))
    with torch.no_grad():
        analysis.update_clean(CleanBatch(x, y, model(x), {}, 0, 0))
    return analysis


def test_saliency_analysis_takes_the_log_softmax_output() -> None:
    from robustlens import create_model
    from robustlens.study.analyses import ANALYSES, parse_options

    torch.manual_seed(0)
    model = create_model("digits_cnn").eval()
    maps = {output: _saliency_analysis(model, 3, methods=["gradient"], output=output).tables()["saliency"]
            for output in ("logit", "log_softmax")}
    a, b = (m[m["method"] == "gradient"]["value"].to_numpy() for m in maps.values())
    assert a.shape == b.shape and not (a == b).all()
    with pytest.raises(ConfigError, match="output"):
        parse_options(ANALYSES["saliency"].Options, {"output": "softmax"}, "[analyses.saliency]")


def test_saliency_analysis_ig_steps_sets_the_path_points() -> None:
    """``ig_steps`` is the number of images integrated gradients passes through the model."""
    from robustlens import create_model
    from robustlens.study.analyses import ANALYSES, parse_options

    torch.manual_seed(0)
    model = create_model("digits_cnn").eval()
    seen: list[int] = []
    model.register_forward_hook(lambda _m, inputs, _out: seen.append(len(inputs[0])))
    counts = {}
    for steps in (1, 3, 40):  # the first call also checks the model's input once: a warm-up
        analysis = _saliency_analysis(model, 1, methods=["integrated_gradients"], ig_steps=steps)
        seen.clear()
        analysis.tables()
        counts[steps] = sum(seen)
    assert counts[40] - counts[3] == 37
    with pytest.raises(ConfigError, match="ig_steps"):
        parse_options(ANALYSES["saliency"].Options, {"ig_steps": 0}, "[analyses.saliency]")
