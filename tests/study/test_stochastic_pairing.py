"""Clean and adversarial passes of a stochastic model share their noise inside a study."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from robustlens.models import ModelInfo, register_model
from robustlens.study import parse_config, run_study


class _Noisy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.flatten(x)
        return self.fc(h + torch.randn_like(h))  # noise from the default generator


@register_model(ModelInfo(name="_test_noisy_linear", input_size=(1, 8, 8), num_classes=10, mean=(0.0,),
                          std=(1.0,), dataset="digits", description="test only", stochastic=True))
def _noisy_linear() -> nn.Module:
    return _Noisy()


@pytest.mark.filterwarnings("ignore:.*the model is stochastic")
def test_noise_is_shared_between_clean_and_adversarial_passes(tmp_path: Path) -> None:
    config = parse_config({
        "study": {"name": "noisy", "batch_size": 40},
        "data": {"dataset": "digits", "n_per_class": 4},
        "models": [{"name": "noisy", "architecture": "_test_noisy_linear", "random": True}],
        "attacks": [{"type": "fgsm", "eps": [0.001]}],
        "analyses": {"dissimilarity": {"layers": ["fc"]}},
    })
    result = run_study(config, tmp_path / "run", cache_dir=tmp_path / "cache")
    diss = pd.read_parquet(result.run_dir / "results" / "dissimilarity.parquet")
    # with independent noise, 1 - r of the logits would be about 1; shared noise leaves only
    # the effect of a 0.001 perturbation
    assert float(diss["mean"].iloc[0]) < 1e-3
    acc = pd.read_parquet(result.run_dir / "results" / "accuracy.parquet")
    assert acc["stochastic"].all() and (acc["n_passes"] == 8).all()
    assert acc["expected_accuracy"].between(0, 1).all()
