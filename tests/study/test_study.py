"""A tiny study end to end, and every user error of the CLI: one line, exit 2, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from robustlens.cli import main
from robustlens.errors import ConfigError
from robustlens.study import load_config, parse_config

TINY = """
[study]
name = "tiny"
batch_size = 50
[data]
dataset = "digits"
n_per_class = 6
[[models]]
name = "trained"
architecture = "digits_cnn"
train = {{ epochs = 8, batch_size = 32, lr = 0.003 }}
[[models]]
name = "untrained"
architecture = "digits_cnn"
{second}
[[attacks]]
type = "fgsm"
eps = [0.05, 0.2]
[[attacks]]
name = "pgd5"
type = "pgd"
eps = [0.05, 0.2]
steps = 5
[analyses.dissimilarity]
layers = "all"
"""


def _write(tmp_path: Path, second: str = "random = true", **replace: str) -> Path:
    text = TINY.format(second=second)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_tiny_study_writes_every_artifact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write(tmp_path)
    out = tmp_path / "run"
    assert main(["study", str(cfg), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Report:" in printed and "pgd5 eps=0.2" in printed
    for name in ("config.toml", "config.original.toml", "manifest.json", "report.html",
                 "results/accuracy.parquet", "results/dissimilarity.parquet", "results/models.parquet",
                 "figures/accuracy_vs_eps.png"):
        assert (out / name).is_file(), name
    acc = pd.read_parquet(out / "results/accuracy.parquet")
    assert len(acc) == 2 * 5 and set(acc["attack"]) == {"clean", "fgsm", "pgd5"}
    assert (acc["n_images"] == 60).all()
    trained = acc[acc["model"] == "trained"].set_index(["attack", "eps"])["accuracy"]
    assert trained[("clean", 0.0)] > 0.8
    assert trained[("pgd5", 0.2)] <= trained[("fgsm", 0.2)] <= trained[("clean", 0.0)]
    diss = pd.read_parquet(out / "results/dissimilarity.parquet")
    assert set(diss["model"]) == {"trained", "untrained"}
    first = diss[(diss["model"] == "trained") & (diss["attack"] == "fgsm")]
    assert list(first["layer"].iloc[:2]) == ["normalize", "features.0"]
    assert (first.groupby("eps")["n_images"].max() == 60).all()
    # stronger perturbations move the logits further
    logits = first[first["layer"] == "classifier.2"].set_index("eps")["mean"]
    assert logits[0.2] > logits[0.05] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["versions"]["torch"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "pgd5" in html
    # the resolved config runs again as it is, and the cached model is reused
    again = load_config(out / "config.toml")
    assert again.models[0].train is not None and again.models[0].train.epochs == 8
    assert main(["study", str(out / "config.toml"), "--out", str(tmp_path / "run2"),
                 "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    models = pd.read_parquet(tmp_path / "run2/results/models.parquet")
    assert models.set_index("model").loc["trained", "source"] == "cache"
    acc2 = pd.read_parquet(tmp_path / "run2/results/accuracy.parquet")
    pd.testing.assert_frame_equal(acc, acc2)  # reproducible


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    "second,replace,expected",
    [
        ("random = true", {"[[attacks]]\ntype": "[[atacks]]\ntype"}, "Did you mean 'attacks'"),
        ("random = true", {'architecture = "digits_cnn"\ntrain': 'architecture = "digits_cn"\ntrain'},
         "Did you mean 'digits_cnn'"),
        ("random = true", {"steps = 5": "stepz = 5"}, "Did you mean 'steps'"),
        ("random = true", {"eps = [0.05, 0.2]": "eps = [5, 20]"}, "pixel units"),
        ("", {}, "needs exactly one of"),
        ('checkpoint = "missing/model"', {}, "checkpoint weights not found"),
        ("random = true", {'dataset = "digits"': 'dataset = "digitz"'}, "Did you mean 'digits'"),
        ("random = true", {"[analyses.dissimilarity]": "[analyses.dissimilarty]"}, "Did you mean 'dissimilarity'"),
        ("random = true", {"[study]": "[study\n"}, "not valid TOML"),
    ],
)
def test_config_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           second: str, replace: dict[str, str], expected: str) -> None:
    cfg = _write(tmp_path, second, **replace)
    code, err = _run_cli(["study", str(cfg), "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 2
    assert expected in err and err.startswith("robustlens: error:") and err.count("\n") == 1
    assert "Traceback" not in err


def test_corrupt_checkpoint_and_missing_data(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "bad.json").write_text(json.dumps({"architecture": "digits_cnn", "options": {}}))
    cfg = _write(tmp_path, 'checkpoint = "bad.safetensors"')
    code, err = _run_cli(["study", str(cfg), "--out", str(tmp_path / "run"), "--cache-dir",
                          str(tmp_path / "cache"), "--quiet"], capsys)
    assert code == 2 and "corrupt" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()  # found before any work started
    # a problem that shows only when the second model loads: the first model finished before it
    # failed, and its results stay on disk
    from robustlens.errors import CheckpointError
    from robustlens.study import runner

    real = runner.obtain_model

    def failing(mc, *args, **kwargs):
        if mc.name != "trained":
            raise CheckpointError("second model unreadable")
        return real(mc, *args, **kwargs)

    monkeypatch.setattr(runner, "obtain_model", failing)
    cfg = _write(tmp_path, "random = true")
    code, err = _run_cli(["study", str(cfg), "--out", str(tmp_path / "run"), "--cache-dir",
                          str(tmp_path / "cache"), "--quiet"], capsys)
    assert code == 2 and "second model unreadable" in err and err.count("\n") == 1
    acc = pd.read_parquet(tmp_path / "run/results/accuracy.parquet")
    assert set(acc["model"]) == {"trained"}
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    assert manifest["status"].startswith("failed")

    code, err = _run_cli(["demo", "--data-root", str(tmp_path / "nowhere"), "--out",
                          str(tmp_path / "demo"), "--quiet"], capsys)
    assert code == 2 and "data root not found" in err and "apt-get install" in err
    code, err = _run_cli(["study", str(tmp_path / "absent.toml")], capsys)
    assert code == 2 and "not found" in err


def test_models_command_and_unknown_pattern(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "fmnist_cnn" in out and "1x28x28" in out
    code, err = _run_cli(["models", "nothing*"], capsys)
    assert code == 2


def test_demo_config_is_valid() -> None:
    import tomllib
    from importlib import resources

    raw = tomllib.loads(resources.files("robustlens.study").joinpath("demo.toml").read_text())
    config = parse_config(raw)
    assert [m.name for m in config.models][:2] == ["standard", "pgd_trained"]
    assert {a.type for a in config.attacks} == {"fgsm", "pgd"}
    with pytest.raises(ConfigError, match="unique"):
        parse_config({**raw, "models": raw["models"] + raw["models"][:1]})


def test_every_attack_type_parses_and_builds() -> None:
    from robustlens.attacks import DeepFool

    config = parse_config({
        "models": [{"name": "m", "architecture": "digits_cnn", "random": True}],
        "attacks": [
            {"type": "pgd", "eps": [0.1], "norm": "2", "targeted": "least_likely", "eot_samples": 2,
             "restarts": 2},
            {"type": "deepfool", "eps": [float("inf"), 0.05], "norm": "2", "overshoot": 0.02},
            {"type": "vonenet", "eps": [1 / 255]},
        ],
    })
    pgd = config.attacks[0].build(0.1)
    assert pgd.eot_samples == 2 and pgd.restarts == 2 and pgd.norm == "2"
    assert isinstance(config.attacks[1].build(float("inf")), DeepFool)
    von = config.attacks[2].build(1 / 255)
    assert von.steps == 64 and von.eot_samples == 10 and abs(von.effective_step_size - 1 / 255 / 4) < 1e-12
    with pytest.raises(ConfigError, match="inf"):
        parse_config({"models": [{"name": "m", "architecture": "digits_cnn", "random": True}],
                      "attacks": [{"type": "pgd", "eps": [float("inf")]}]})
    with pytest.raises(ConfigError, match="Did you mean 'deepfool'"):
        parse_config({"models": [{"name": "m", "architecture": "digits_cnn", "random": True}],
                      "attacks": [{"type": "deepfol", "eps": [0.1]}]})


def test_transfer_and_noise_attacks_in_a_study(tmp_path: Path) -> None:
    from robustlens.study import run_study

    config = parse_config({
        "study": {"name": "transfer", "batch_size": 60},
        "data": {"dataset": "digits", "n_per_class": 6},
        "models": [{"name": "target", "architecture": "digits_cnn", "random": True, "seed": 1},
                   {"name": "surrogate", "architecture": "digits_cnn", "random": True, "seed": 2}],
        "attacks": [{"name": "white", "type": "fgsm", "eps": [0.3]},
                    {"name": "black", "type": "transfer", "surrogate": "surrogate", "via": "fgsm", "eps": [0.3]},
                    {"name": "noise", "type": "noise", "eps": [0.3]}],
    })
    result = run_study(config, tmp_path / "run", cache_dir=tmp_path / "cache")
    acc = result.tables["accuracy"].set_index(["model", "attack"])["accuracy"]
    # crafted on itself, the transfer attack is the white-box attack
    assert acc[("surrogate", "black")] == acc[("surrogate", "white")]
    assert set(acc.index.get_level_values("attack")) == {"clean", "white", "black", "noise"}
    with pytest.raises(ConfigError, match="Did you mean 'surrogate'"):
        parse_config({"models": [{"name": "surrogate", "architecture": "digits_cnn", "random": True}],
                      "attacks": [{"type": "transfer", "surrogate": "surogate", "eps": [0.1]}]})


def test_smoke_flag_shrinks_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write(tmp_path)
    assert main(["study", str(cfg), "--smoke", "--out", str(tmp_path / "run"), "--cache-dir",
                 str(tmp_path / "cache"), "--quiet"]) == 0
    acc = pd.read_parquet(tmp_path / "run/results/accuracy.parquet")
    assert (acc["n_images"] == 20).all()  # n_per_class shrunk to 2
    assert "Report:" in capsys.readouterr().out


def test_study_accuracy_equals_the_library_engine_and_keeps_norms_apart(tmp_path: Path) -> None:
    import torch

    from robustlens.attacks import PGD
    from robustlens.data import load_digits
    from robustlens.evaluation import robust_accuracy
    from robustlens.study import run_study
    from robustlens.study.models import build_seeded

    data = load_digits("test").subset(torch.arange(40))
    config = parse_config({
        "study": {"name": "norms", "batch_size": 16}, "data": {"dataset": "digits"},
        "models": [{"name": "m", "architecture": "digits_cnn", "random": True, "seed": 3}],
        "attacks": [{"name": "pgd_inf", "type": "pgd", "eps": [0.1], "steps": 2, "random_start": False},
                    {"name": "pgd_l2", "type": "pgd", "eps": [0.1], "steps": 2, "random_start": False,
                     "norm": "2"}],
        "analyses": {"per_example": {}}})
    result = run_study(config, tmp_path / "run", cache_dir=tmp_path / "cache", data=data)
    acc = result.tables["accuracy"]
    assert acc["norm"].tolist() == ["", "inf", "2"] and "top5_accuracy" in acc
    assert set(result.tables["worst_case"]["norm"]) == {"inf", "2"}
    model = build_seeded("digits_cnn", {}, 3)
    lib = robust_accuracy(model, data, {"pgd_inf": PGD(0.1, steps=2, random_start=False),
                                        "pgd_l2": PGD(0.1, steps=2, norm="2", random_start=False)},
                          batch_size=16)
    cols = ["attack", "eps", "norm", "n_images", "n_correct", "accuracy", "top5_accuracy"]
    pd.testing.assert_frame_equal(acc[cols], lib[cols], check_dtype=False)
