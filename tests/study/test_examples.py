"""The example study configs: each parses, documents itself, and runs end to end in smoke mode.

Fashion-MNIST examples run shrunk by :func:`smoke_config` (trainings share one cache, so each
distinct model trains once). ImageNet examples get their placeholder paths replaced by a tiny
fake ImageNet and stand-in weights files, then parse and pass the preflight check; one of them
(ResNet50 vs VOneResNet50, S1) runs on fake images with real-format weights files.
"""

from __future__ import annotations

import copy
import sys
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from robustlens.study import parse_config, run_study
from robustlens.study.preflight import check_paths
from robustlens.study.smoke import smoke_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# each Fashion-MNIST example -> the result tables its protocol names (besides accuracy, models)
SMALL: dict[str, tuple[str, ...]] = {
    "s1_dissimilarity.toml": ("dissimilarity", "dissimilarity_channels", "pca_images", "dissimilarity_images",
                              "dissimilarity_flags"),
    "s2_sensitive_features.toml": ("sensitivity", "featurevis", "per_example", "sweet_spot"),
    "s3_manifolds.toml": ("manifolds", "manifold_correlation", "per_class"),
    "s3_manifolds_digits.toml": ("manifolds", "manifold_correlation", "per_class"),
    "s4_interpretability.toml": ("saliency", "featurevis", "per_example", "weights", "dataset_examples",
                                 "deepdream"),
    "s5_vonenet.toml": ("audit", "per_example"),
}
IMAGENET = ("imagenet/s1_dissimilarity.toml", "imagenet/s2_sensitive_features.toml",
            "imagenet/s3_manifolds.toml", "imagenet/s4_interpretability.toml", "vonenet_imagenet.toml")


def _raw(name: str) -> dict[str, Any]:
    return tomllib.loads((EXAMPLES / name).read_text())


def test_every_example_is_covered_here() -> None:
    found = {str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*.toml")}
    assert found == set(SMALL) | set(IMAGENET)
    for name in SMALL:
        assert _raw(name)["data"]["dataset"] in ("fashion_mnist", "digits")
    for name in IMAGENET:
        assert _raw(name)["data"]["dataset"] == "imagenet"


@pytest.mark.parametrize("name", [*SMALL, *IMAGENET])
def test_example_parses_and_starts_with_its_documentation(name: str) -> None:
    text = (EXAMPLES / name).read_text()
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    doc = "\n".join(header)
    assert len(header) >= 5, "an example starts with a comment block"
    assert "robustlens study examples/" in doc  # how to run it
    if name in SMALL:
        assert name.split("_")[0].upper() in doc and "Produces" in doc and "min" in doc
    config = parse_config(_raw(name), (EXAMPLES / name).parent)
    assert config.models and config.attacks and config.analyses
    parse_config(smoke_config(_raw(name)), (EXAMPLES / name).parent)


# ----------------------------------------------------------------------------- smoke_config
def test_smoke_config_shrinks_without_touching_its_input() -> None:
    raw = _raw("s2_sensitive_features.toml")
    raw["analyses"]["audit"] = {"n_images": 200}
    raw["analyses"]["saliency"] = {}
    raw["photos"] = {"images": ["chelsea", "coffee"], "steps": 20}
    before = copy.deepcopy(raw)
    smoke = smoke_config(raw)
    assert raw == before
    assert smoke["data"]["n_per_class"] == 2
    assert smoke["attacks"][0]["eps"] == [0.0, 0.35]
    assert [m["train"]["epochs"] for m in smoke["models"]] == [1, 1]
    assert smoke["models"][1]["train"]["adversarial"]["steps"] == 2
    assert smoke["analyses"]["featurevis"]["steps"] <= 8
    assert smoke["analyses"]["audit"] == {"n_images": 8, "steps": 2, "queries": 20}  # eot_samples: default 1
    assert smoke["analyses"]["saliency"] == {"n_images": 2, "n_samples": 2}
    assert smoke["photos"]["images"] == ["chelsea"] and smoke["photos"]["steps"] == 2
    assert smoke["photos"]["featurevis_steps"] <= 8
    config = parse_config(smoke)
    assert config.photos is not None and config.photos.crop <= 112


def test_smoke_config_caps_preset_defaults_and_keeps_imagenet_paths() -> None:
    smoke = smoke_config(_raw("vonenet_imagenet.toml"))
    assert smoke["attacks"][0]["steps"] == 2 and smoke["attacks"][0]["eot_samples"] == 2
    assert smoke["data"]["root"] == "/path/to/imagenet" and smoke["data"]["ds_factor"] == 5000
    assert smoke["analyses"]["audit"]["n_images"] == 8
    imagenet_s3 = smoke_config(_raw("imagenet/s3_manifolds.toml"))
    assert imagenet_s3["data"]["n_per_class"] == 1
    assert imagenet_s3["analyses"]["manifolds"]["n_bootstrap"] <= 10
    s1 = smoke_config(_raw("s1_dissimilarity.toml"))
    assert s1["attacks"][0]["eps"] == [0.1, float("inf")] and s1["attacks"][0]["steps"] == 2
    standard = smoke_config({"attacks": [{"type": "autoattack", "eps": [0.1]}, {"type": "square", "eps": [0.1]},
                                         {"type": "apgd_t", "eps": [0.1], "n_targets": 5},
                                         {"type": "fab", "eps": [0.1]}]})
    assert standard["attacks"][0] == {"type": "autoattack", "eps": [0.1], "steps": 2, "queries": 20, "n_targets": 2}
    assert standard["attacks"][1]["queries"] == 20 and standard["attacks"][2]["n_targets"] == 2
    assert standard["attacks"][3] == {"type": "fab", "eps": [0.1], "steps": 2, "n_targets": 2}


# ----------------------------------------------------------------- Fashion-MNIST, end to end
def _untrained(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with every trained model replaced by its random initialisation (same seed)."""
    out = copy.deepcopy(raw)
    for model in out["models"]:
        if model.pop("train", None) is not None:
            model["random"] = True
    return out


def _run_and_check(name: str, raw: dict[str, Any], run_dir: Path, cache: Path) -> None:
    config = parse_config(raw, EXAMPLES)
    result = run_study(config, run_dir, cache_dir=cache, device="cpu")
    results = result.run_dir / "results"
    for table in ("accuracy", "models", *SMALL[name]):
        df = pd.read_parquet(results / f"{table}.parquet")
        assert not df.empty, table
        if "model" in df.columns and table != "featurevis":
            assert set(df["model"]) == {m.name for m in config.models}, table
    accuracy = pd.read_parquet(results / "accuracy.parquet")
    assert (accuracy["n_images"] == 20).all()
    assert len(accuracy) == len(config.models) * (1 + sum(len(a.eps) for a in config.attacks))
    assert result.report.is_file() and "data:image/png;base64," in result.report.read_text()


@pytest.mark.parametrize("name", list(SMALL))
def test_example_runs_in_smoke_mode_untrained(name: str, tmp_path: Path, fashion_mnist_test: Any) -> None:
    """Every attack and analysis of the example, on its models' initial weights (seconds)."""
    _run_and_check(name, _untrained(smoke_config(_raw(name))), tmp_path / "run", tmp_path / "cache")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the module: a model trained for one example is reused by the next."""
    return tmp_path_factory.mktemp("model_cache")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SMALL))
def test_example_runs_in_smoke_mode(name: str, shared_cache: Path, tmp_path: Path, fashion_mnist_test: Any) -> None:
    """The smoke config exactly as CI runs it: each model trained for one epoch (about 75 s in
    all on 2 CPU cores; models shared between the examples through one cache)."""
    _run_and_check(name, smoke_config(_raw(name)), tmp_path / "run", shared_cache)


# ------------------------------------------------------------------------ ImageNet, faked
def _fake_imagenet_module() -> Any:
    folder = Path(__file__).resolve().parents[1] / "data"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    try:
        import _fake_imagenet
    except ImportError as err:
        pytest.skip(f"tests/data/_fake_imagenet.py is not available: {err}")
    return _fake_imagenet


@pytest.fixture(scope="module")
def fake_imagenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three ImageNet classes, two small validation images each (class folders)."""
    from robustlens.data.imagenet import imagenet_wnids

    make = _fake_imagenet_module().make_fake_imagenet
    return make(tmp_path_factory.mktemp("imagenet"), list(imagenet_wnids()[:3]), per_class=2,
                size=(48, 40), splits=("val",))


@pytest.fixture(scope="module")
def stand_in_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny file in torch.save's format: enough for parsing and the preflight check."""
    path = tmp_path_factory.mktemp("weights") / "stand_in.pth"
    torch.save({"stand_in": torch.zeros(1)}, path)
    return path


def _substitute(raw: dict[str, Any], root: Path, weights: dict[str, Path] | Path) -> dict[str, Any]:
    """``raw`` with its ImageNet root and every model's weights file replaced."""
    out = copy.deepcopy(raw)
    out["data"]["root"] = str(root)
    for model in out["models"]:
        if "weights" in model:
            assert model["weights"].startswith("/path/to/"), "examples ship placeholder paths"
            model["weights"] = str(weights if isinstance(weights, Path) else weights[model["architecture"]])
    return out


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_example_with_its_paths_substituted(name: str, fake_imagenet: Path,
                                                     stand_in_weights: Path) -> None:
    raw = _raw(name)
    assert raw["data"]["root"] == "/path/to/imagenet"
    config = parse_config(_substitute(raw, fake_imagenet, stand_in_weights), EXAMPLES)
    check_paths(config)  # every file it names now exists and looks right
    assert config.data.root == str(fake_imagenet.resolve())
    smoke = parse_config(smoke_config(_substitute(raw, fake_imagenet, stand_in_weights)), EXAMPLES)
    check_paths(smoke)


def test_imagenet_s1_runs_on_a_fake_imagenet(fake_imagenet: Path, tmp_path: Path) -> None:
    """ResNet50 vs VOneResNet50 (real-format weights files of freshly built models) on one
    fake validation image at 56 px: the study machinery of S1 end to end."""
    import torchvision

    from robustlens.models import create_model
    from robustlens.models.vone import save_reference_checkpoint

    torch.manual_seed(0)
    resnet = tmp_path / "resnet50-0676ba61.pth"
    torch.save(torchvision.models.resnet50().state_dict(), resnet)
    vone = save_reference_checkpoint(create_model("vone_resnet50"), tmp_path / "voneresnet50_e70.pth.tar")
    raw = _substitute(_raw("imagenet/s1_dissimilarity.toml"), fake_imagenet,
                      {"resnet50": resnet, "vone_resnet50": Path(vone)})
    raw["data"].update(resize=64, crop=56)
    config = parse_config(smoke_config(raw), EXAMPLES)
    result = run_study(config, tmp_path / "run", cache_dir=tmp_path / "cache", device="cpu")
    results = result.run_dir / "results"
    for table in ("accuracy", "dissimilarity", "dissimilarity_channels", "pca_images"):
        df = pd.read_parquet(results / f"{table}.parquet")
        assert not df.empty and set(df["model"]) == {"resnet50", "vone_resnet50"}, table
    diss = pd.read_parquet(results / "dissimilarity.parquet")
    relu = diss[(diss["model"] == "resnet50") & diss["layer"].str.startswith("layer1.0.relu")]
    assert set(relu["layer"]) == {"layer1.0.relu", "layer1.0.relu:1", "layer1.0.relu:2"}  # torchvision's names
    assert result.report.is_file()
