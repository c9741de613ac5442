"""Bad checkpoints: every one is a CheckpointError with one line naming the file and what to do."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import tomli_w
import torch
from _bad_inputs import CliError, LibError

from robustlens.errors import CheckpointError
from robustlens.models import create_model
from robustlens.models.checkpoint import check_checkpoint, load_checkpoint, save_checkpoint


def _pair(tmp_path: Path, source: Path, name: str = "ck") -> tuple[Path, Path]:
    weights, meta = tmp_path / f"{name}.safetensors", tmp_path / f"{name}.json"
    weights.write_bytes(source.read_bytes())
    meta.write_bytes(source.with_suffix(".json").read_bytes())
    return weights, meta


def _make(kind: str, tmp_path: Path, good: Path) -> tuple[Path, str]:
    """A broken checkpoint of ``kind``; returns the path to pass and a fragment the message must hold."""
    if kind == "missing":
        return tmp_path / "nothing.safetensors", "nothing.safetensors"
    if kind == "folder":
        return tmp_path, "folder"
    if kind == "folder_with_checkpoints":
        _pair(tmp_path, good, "inside")
        return tmp_path, "inside.safetensors"
    if kind in ("pth", "pth_tar", "pt", "ckpt"):
        suffix = {"pth": ".pth", "pth_tar": ".pth.tar", "pt": ".pt", "ckpt": ".ckpt"}[kind]
        path = tmp_path / f"released{suffix}"
        torch.save({"state_dict": {}}, path)
        return path, "weights ="
    weights, meta = _pair(tmp_path, good)
    record = json.loads(meta.read_text())
    if kind == "no_json":
        meta.unlink()
        return weights, "ck.json"
    if kind == "no_weights":
        weights.unlink()
        return meta, "ck.safetensors"
    if kind == "json_garbage":
        meta.write_text("{not json")
    elif kind == "json_list":
        meta.write_text("[1, 2]")
    elif kind == "json_binary":
        meta.write_bytes(b"\xff\xfe\xfa")
    elif kind == "no_architecture":
        record.pop("architecture")
        meta.write_text(json.dumps(record))
    elif kind == "architecture_number":
        record["architecture"] = 3
        meta.write_text(json.dumps(record))
    elif kind == "unknown_architecture":
        record["architecture"] = "digits_cnn_v9"
        meta.write_text(json.dumps(record))
    elif kind == "options_list":
        record["options"] = [1]
        meta.write_text(json.dumps(record))
    elif kind == "unknown_option":
        record["options"] = {"widht": 4}
        meta.write_text(json.dumps(record))
    elif kind == "other_architecture":
        record["architecture"] = "fmnist_cnn"
        meta.write_text(json.dumps(record))
    elif kind == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        weights.write_bytes(b"")
    elif kind == "garbage":
        weights.write_bytes(b"\x00" * 64)
    return weights, str(weights.name if kind in ("truncated", "empty", "garbage", "other_architecture")
                        else meta.name)


KINDS = ["missing", "folder", "folder_with_checkpoints", "pth", "pth_tar", "pt", "ckpt", "no_json",
         "no_weights", "json_garbage", "json_list", "json_binary", "no_architecture", "architecture_number",
         "unknown_architecture", "options_list", "unknown_option", "other_architecture", "truncated",
         "empty", "garbage"]
CHEAP_CHECK_MISSES = {"unknown_option", "other_architecture"}  # need the model built: load time only


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fn", [load_checkpoint, check_checkpoint], ids=["load", "check"])
def test_bad_checkpoint(lib_error: LibError, tmp_path: Path, digits_checkpoint: Path, kind: str,
                        fn: Callable[..., object]) -> None:
    path, fragment = _make(kind, tmp_path, digits_checkpoint)
    if fn is check_checkpoint and kind in CHEAP_CHECK_MISSES:
        pytest.skip("only visible when the model is built")
    message = lib_error(fn, path, exc=CheckpointError)
    assert fragment in message, message


def test_save_checkpoint_unregistered_architecture(lib_error: LibError, tmp_path: Path) -> None:
    lib_error(save_checkpoint, create_model("digits_cnn"), tmp_path / "m", "digits_cnn_v9", exc=CheckpointError)


@pytest.mark.parametrize("kind", ["missing", "folder", "pth", "truncated", "other_architecture"])
def test_study_with_bad_checkpoint(cli_error: CliError, tmp_path: Path, digits_checkpoint: Path,
                                   kind: str) -> None:
    path, _ = _make(kind, tmp_path, digits_checkpoint)
    raw = {"study": {"name": "ck"}, "data": {"dataset": "digits", "n_per_class": 1},
           "models": [{"name": "m", "architecture": "digits_cnn", "checkpoint": str(path)}],
           "attacks": [{"type": "fgsm", "eps": [0.1]}]}
    cfg = tmp_path / "study.toml"
    cfg.write_text(tomli_w.dumps(raw))
    err = cli_error(["study", str(cfg), "--out", str(tmp_path / "run"), "--quiet"])
    assert path.name in err or str(path) in err
