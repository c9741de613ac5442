"""The model registry, Normalize, and checkpoints (save, load, mismatch and corruption errors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import robustlens
from robustlens.errors import CheckpointError, ConfigError
from robustlens.models import Normalize, load_checkpoint, model_info, save_checkpoint


def test_list_and_create() -> None:
    names = robustlens.list_models()
    assert "fmnist_cnn" in names and "digits_cnn" in names and names == sorted(names)
    assert robustlens.list_models("fmnist*")[0] == "fmnist_cnn"
    model = robustlens.create_model("fmnist_cnn", width=8)
    assert isinstance(model, torch.nn.Module)
    info = model_info("fmnist_cnn")
    assert info.input_size == (1, 28, 28) and info.pixel_bounds == (0.0, 1.0)
    assert model(torch.rand(3, *info.input_size)).shape == (3, info.num_classes)
    assert isinstance(next(iter(model.children())), Normalize)  # normalisation is the first layer


def test_unknown_name_and_override_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'fmnist_cnn'"):
        robustlens.create_model("fmnist_cn")
    with pytest.raises(ConfigError, match=r"accepted options: allow_pickle, hidden, num_classes, seed, weights, width"):
        robustlens.create_model("fmnist_cnn", depth=3)


def test_normalize_matches_hand_computation_and_adds_no_state() -> None:
    norm = Normalize((0.5, 0.25), (0.5, 0.125))
    x = torch.rand(2, 2, 3, 3)
    expected = torch.stack([(x[:, 0] - 0.5) / 0.5, (x[:, 1] - 0.25) / 0.125], dim=1)
    torch.testing.assert_close(norm(x), expected)
    assert norm.state_dict() == {}
    with pytest.raises(ValueError):
        Normalize((0.5,), (0.0,))


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = robustlens.create_model("digits_cnn", width=4)
    path = save_checkpoint(model, tmp_path / "m", "digits_cnn", {"width": 4}, dataset="digits",
                           seed=3, clean_test_accuracy=0.5)
    assert path.suffix == ".safetensors" and (tmp_path / "m.json").is_file()
    loaded, meta = load_checkpoint(tmp_path / "m.safetensors")
    assert meta["seed"] == 3 and meta["architecture"] == "digits_cnn" and not loaded.training
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_checkpoint_mismatch_missing_and_corrupt(tmp_path: Path) -> None:
    save_checkpoint(robustlens.create_model("digits_cnn", width=4), tmp_path / "m", "digits_cnn", {"width": 4})
    meta = json.loads((tmp_path / "m.json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({**meta, "options": {"width": 6}}))
    expected = r"shape mismatch.*features.0.weight: checkpoint \(4, 1, 3, 3\) vs model \(6, 1, 3, 3\)"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(tmp_path / "m")
    (tmp_path / "m.json").write_text(json.dumps({**meta, "architecture": "fmnist_cnn", "options": {"width": 4}}))
    with pytest.raises(CheckpointError, match="does not match the architecture"):
        load_checkpoint(tmp_path / "m")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent")
    (tmp_path / "m.json").write_text(json.dumps(meta))
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "m")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "m")
