"""Standard and PGD adversarial training on real (tiny) data, and the `train` command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustlens.attacks import PGD
from robustlens.cli import main
from robustlens.data import load_digits
from robustlens.study.models import build_seeded
from robustlens.training import AdversarialTraining, TrainConfig, evaluate_accuracy, train_model


def _robust_accuracy(model: torch.nn.Module, eps: float) -> float:
    test = load_digits("test")
    x_adv = PGD(eps=eps, steps=10)(model, test.images, test.labels)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == test.labels).float().mean())


def test_standard_training_learns(trained_digits_cnn) -> None:  # type: ignore[no-untyped-def]
    assert evaluate_accuracy(trained_digits_cnn, load_digits("test")) > 0.9


def test_adversarial_training_buys_robustness(trained_digits_cnn) -> None:  # type: ignore[no-untyped-def]
    robust = build_seeded("digits_cnn", {}, 0)
    config = TrainConfig(epochs=15, batch_size=32, lr=3e-3,
                         adversarial=AdversarialTraining(eps=0.1, steps=3))
    result = train_model(robust, load_digits("train"), config)
    assert len(result.history) == 15 and result.history[-1]["loss"] < result.history[0]["loss"]
    assert _robust_accuracy(robust.eval(), 0.1) > _robust_accuracy(trained_digits_cnn, 0.1) + 0.2


def test_training_is_reproducible_and_leaves_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    models = []
    for _ in range(2):
        m = build_seeded("digits_cnn", {"width": 4}, 7)
        train_model(m, load_digits("train"), TrainConfig(epochs=1, batch_size=64, seed=1))
        models.append(m)
    assert all(torch.equal(a, b) for a, b in zip(models[0].state_dict().values(),
                                                 models[1].state_dict().values(), strict=True))
    assert torch.equal(state, torch.random.get_rng_state())


def test_train_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--arch", "digits_cnn", "--dataset", "digits", "--epochs", "2", "--out",
                 str(tmp_path / "m"), "--quiet"]) == 0
    assert "clean test accuracy" in capsys.readouterr().out
    assert (tmp_path / "m.safetensors").is_file() and (tmp_path / "m.json").is_file()
    assert main(["train", "--arch", "digits_cn", "--dataset", "digits", "--out", str(tmp_path / "x")]) == 2
    assert "Did you mean 'digits_cnn'" in capsys.readouterr().err
