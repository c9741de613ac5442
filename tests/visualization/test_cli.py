"""``robustlens visualize``: figures written, user errors as one line and exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustlens.cli import main


@pytest.mark.parametrize("argv", [
    ["render", "--model", "digits_cnn", "features.4#1", "--steps", "4"],
    ["saliency", "--model", "digits_cnn", "--methods", "gradient", "smoothgrad",
     "--n-images", "2"],
    ["weights", "--model", "vone_fmnist_cnn"],
    ["dream", "--model", "digits_cnn", "features.3", "--octaves", "2", "--steps", "2"],
    ["examples", "--model", "digits_cnn", "features.4#0", "-k", "3"],
])
def test_commands_write_figures(tmp_path: Path, argv: list[str]) -> None:
    out = tmp_path / "fig.png"
    assert main(["visualize", *argv, "--out", str(out), "--device", "cpu"]) == 0
    assert out.stat().st_size > 1000


def test_unknown_layer_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["visualize", "render", "--model", "digits_cnn", "featurs.4#1", "--out",
                   str(tmp_path / "x.png"), "--steps", "1"])
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("robustlens: error:") and "features.4" in err and "\n" not in err


def test_weights_and_allow_pickle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--weights`` loads a weights file of the model's family; ``--allow-pickle`` opts in to pickles."""
    import argparse

    import torch

    from robustlens.models import create_model, save_checkpoint

    model = create_model("digits_cnn", seed=4)
    weights = save_checkpoint(model, tmp_path / "digits", "digits_cnn")
    out = tmp_path / "fig.png"
    base = ["visualize", "render", "--model", "digits_cnn", "features.4:1", "--steps", "2", "--device", "cpu",
            "--out", str(out)]
    assert main([*base, "--weights", str(weights)]) == 0 and out.stat().st_size > 1000
    pickled = tmp_path / "digits.pth.tar"
    torch.save({"args": argparse.Namespace(lr=0.1), "state_dict": model.state_dict()}, pickled)
    capsys.readouterr()
    assert main([*base, "--weights", str(pickled)]) == 2
    err = capsys.readouterr().err.strip()
    assert "argparse.Namespace" in err and "allow_pickle" in err and "\n" not in err
    assert main([*base, "--weights", str(pickled), "--allow-pickle"]) == 0
    assert main([*base, "--allow-pickle"]) == 2  # nothing to allow
    assert "allow_pickle applies to a weights file" in capsys.readouterr().err
    assert main([*base, "--weights", str(pickled), "--checkpoint", str(weights)]) == 2
    assert "not both" in capsys.readouterr().err
