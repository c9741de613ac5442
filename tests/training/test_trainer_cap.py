"""``TrainConfig.max_batches``: an epoch stops after that many batches."""

from __future__ import annotations

import pytest
from torch import nn

from robustlens.data import load_digits
from robustlens.errors import ConfigError
from robustlens.study.smoke import smoke_config
from robustlens.training import TrainConfig, train_model


def _counting_model() -> tuple[nn.Module, list[int]]:
    seen: list[int] = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    model.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    return model, seen


def test_max_batches_caps_each_epoch() -> None:
    data = load_digits("train")
    model, seen = _counting_model()
    result = train_model(model, data, TrainConfig(epochs=2, batch_size=32, max_batches=3))
    assert seen[1:] == [32] * 6  # the first call is the one-image input check
    assert len(result.history) == 2
    assert 0.0 <= result.history[-1]["train_accuracy"] <= 1.0


def test_max_batches_above_an_epoch_is_a_whole_epoch() -> None:
    data = load_digits("train")
    model, seen = _counting_model()
    train_model(model, data, TrainConfig(epochs=1, batch_size=512, max_batches=100))
    assert sum(seen[1:]) == len(data)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_max_batches_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(ConfigError, match="max_batches must be an integer >= 1"):
        TrainConfig(max_batches=bad)  # type: ignore[arg-type]


def test_smoke_runs_cap_training_batches() -> None:
    raw = {"models": [{"name": "m", "architecture": "fmnist_cnn", "train": {"epochs": 5}}]}
    assert smoke_config(raw)["models"][0]["train"] == {"epochs": 1, "max_batches": 20}
