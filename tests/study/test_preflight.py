"""The study preflight: a run that cannot finish fails in its first seconds, before any work."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from robustlens.cli import main
from robustlens.errors import DataError, RobustlensError
from robustlens.study import parse_config, run_study
from robustlens.study.preflight import check_paths, preflight

TRAINS = """
[study]
name = "pre"
[data]
dataset = "digits"
n_per_class = 2
[[models]]
name = "trained"
architecture = "{arch}"
train = {{ epochs = 50, batch_size = 16 }}
[[attacks]]
type = "fgsm"
eps = [0.1]
{analyses}
"""


def _cli(tmp_path: Path, arch: str = "digits_cnn", analyses: str = "", out: Path | None = None) -> int:
    cfg = tmp_path / "study.toml"
    cfg.write_text(TRAINS.format(arch=arch, analyses=analyses))
    return main(["study", str(cfg), "--out", str(out or tmp_path / "run"),
                 "--cache-dir", str(tmp_path / "cache"), "--quiet"])


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("robustlens: error:") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("analyses, expected", [
    ('[analyses.dissimilarity]\nlayers = ["conv9"]', "conv9"),
    ("[analyses.dissimilarity]\nmetric = \"cosinus\"", "metric"),
])
def test_a_wrong_layer_or_option_fails_before_any_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], analyses: str, expected: str) -> None:
    start = time.perf_counter()
    assert _cli(tmp_path, analyses=analyses) == 2
    seconds = time.perf_counter() - start
    assert expected in _one_error_line(capsys)
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.iterdir())  # nothing trained, nothing cached
    assert not (tmp_path / "run" / "results").exists()
    assert seconds < 10, seconds  # 50 epochs of training would take far longer


def test_a_model_for_other_images_is_refused_before_the_first_model_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(tmp_path, arch="fmnist_cnn") == 2  # a 28 x 28 network on 8 x 8 digits
    err = _one_error_line(capsys)
    assert "'trained' (fmnist_cnn)" in err and "expects 1x28x28 images" in err
    assert "gives 1x8x8" in err and "digits" in err
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.iterdir())


def test_out_under_a_file_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert _cli(tmp_path, out=blocker / "run") == 2
    assert "is a file" in _one_error_line(capsys)
    assert _cli(tmp_path, out=blocker) == 2
    assert "is a file" in _one_error_line(capsys)


def test_run_study_refuses_an_unwritable_folder_before_work(tmp_path: Path) -> None:
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # running as root: permissions do not bind
            pytest.skip("permissions are not enforced for this user")
        config = parse_config({"study": {"name": "x"}, "data": {"dataset": "digits"},
                               "models": [{"name": "m", "architecture": "digits_cnn", "random": True}]})
        with pytest.raises(RobustlensError, match="not writable"):
            run_study(config, locked / "run", cache_dir=tmp_path / "cache")
    finally:
        locked.chmod(0o700)


FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Fashion-MNIST files not installed")
def test_a_test_only_study_needs_only_the_test_files(tmp_path: Path) -> None:
    root = tmp_path / "fm"
    root.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(FMNIST / name, root / name)
    base = {"study": {"name": "x"}, "data": {"dataset": "fashion_mnist", "root": str(root)}}
    evaluated = parse_config({**base, "models": [{"name": "m", "architecture": "fmnist_cnn", "random": True}]})
    check_paths(evaluated)  # no train files needed
    preflight(evaluated, tmp_path / "run")
    trained = parse_config({**base, "models": [{"name": "m", "architecture": "fmnist_cnn",
                                                "train": {"epochs": 1}}]})
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        check_paths(trained)


PLANNED = """
[study]
name = "planned"
batch_size = 16
[data]
dataset = "digits"
n_per_class = 4
[[models]]
name = "m"
architecture = "digits_cnn"
random = true
[[attacks]]
name = "pgd"
type = "pgd"
eps = [0.05, 0.1]
steps = 3
restarts = 2
[[attacks]]
type = "fgsm"
eps = [0.1]
{analyses}
"""


@pytest.mark.slow
@pytest.mark.parametrize("analyses, exact", [('[analyses.dissimilarity]\nlayers = "all"', True), ("", False)])
def test_plan_pass_counts_equal_a_real_runs(tmp_path: Path, analyses: str, exact: bool) -> None:
    import torch

    from robustlens.study.plan import plan_study

    config = parse_config(__import__("tomllib").loads(PLANNED.format(analyses=analyses)))
    plan = plan_study(config, device="cpu")
    rows = plan.rows
    assert rows["n_images"].eq(40).all() and (rows["exact"] == exact).all() == exact
    counts = {"forward": 0, "backward": 0}
    from robustlens.models import create_model

    model_class = type(create_model("digits_cnn"))

    def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if type(module) is model_class and not inputs[0].is_meta:
            b = inputs[0].shape[0]
            counts["forward"] += b
            if output.requires_grad:
                output.register_hook(lambda g: counts.__setitem__("backward", counts["backward"] + b))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        run_study(config, tmp_path / "run", cache_dir=tmp_path / "cache")
    finally:
        handle.remove()
    planned = plan.models.iloc[0]
    # PGD: 3 steps x 2 restarts of gradients per image (early exit off in the plan); FGSM: one
    pgd = rows[rows.attack == "pgd"].iloc[0]
    assert pgd["backward"] == 40 * 3 * 2
    assert rows[rows.attack == "fgsm"].iloc[0]["backward"] == 40
    if exact:
        assert (planned["forward"], planned["backward"]) == (counts["forward"], counts["backward"])
    else:  # early exit on: the plan is an upper bound
        assert planned["forward"] >= counts["forward"] and planned["backward"] >= counts["backward"]
    assert "Total:" in plan.text() and planned["seconds"] > 0 and plan.disk_bytes > 0
    assert plan.report_seconds > 0 and plan.seconds > planned["seconds"]


def test_plan_flag_prints_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text(PLANNED.format(analyses=""))
    out = tmp_path / "run"
    assert main(["study", str(cfg), "--plan", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "pgd" in printed and "backward" in printed and "Total:" in printed
    assert not out.exists()
