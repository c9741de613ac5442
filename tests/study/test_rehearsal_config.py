"""The full-size rehearsal's configs (benchmarks/bench_imagenet_rehearsal.py): each ImageNet
example with only its paths, weights, counts and memory budget changed, and still a valid
study config."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from robustlens.study import parse_config
from robustlens.study.memory import parse_memory

REPO = Path(__file__).resolve().parents[2]


def _rehearsal() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_imagenet_rehearsal",
                                                  REPO / "benchmarks" / "bench_imagenet_rehearsal.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REHEARSAL = _rehearsal()


@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
@pytest.mark.parametrize("name", list(REHEARSAL.CONFIGS))
def test_rehearsal_config_changes_only_paths_weights_counts_and_budget(name: str, quick: bool,
                                                                       tmp_path: Path) -> None:
    raw = tomllib.loads(REHEARSAL.CONFIGS[name].read_text())
    cfg = REHEARSAL.rehearsal_config(name, raw, tmp_path, quick, "8GiB")
    reduce = {k: v[1 if quick else 0] for k, v in REHEARSAL.REDUCE[name].items()}

    assert cfg["data"]["root"] == str(tmp_path) and cfg["study"]["device"] == "cpu"
    assert parse_memory(cfg["study"]["max_memory"]) == 8 * 2**30
    assert cfg["study"]["batch_size"] == raw["study"]["batch_size"]  # the config's own batch
    for model in cfg["models"]:
        assert model["random"] is True
        assert not {"weights", "pretrained", "checkpoint", "allow_pickle"} & set(model)
    assert [m["architecture"] for m in cfg["models"]] == [m["architecture"] for m in raw["models"]]
    if "classes" in reduce:  # S3: every class of the selection, PER_CLASS images each
        assert cfg["data"]["classes"] == reduce["classes"]
        assert cfg["data"]["n_per_class"] == REHEARSAL.PER_CLASS
    else:  # every ds_factor-th of the 1000 x PER_CLASS files: the reduced image count
        assert 1000 * REHEARSAL.PER_CLASS // cfg["data"]["ds_factor"] == reduce["images"]
    for new, old in zip(cfg["attacks"], raw["attacks"], strict=True):
        assert new["type"] == old["type"]
        assert new.get("eot_samples") == old.get("eot_samples")  # noise samples kept
        if reduce.get("steps") is not None and new["type"] != "fgsm":
            assert new["steps"] == reduce["steps"]
        expected_eps = old["eps"][:reduce["eps"]] if reduce.get("eps") is not None else old["eps"]
        assert new["eps"] == expected_eps
    assert set(cfg.get("analyses", {})) == set(raw.get("analyses", {}))
    assert raw["data"]["root"] == "/path/to/imagenet"  # the example itself is untouched

    config = parse_config(cfg, base_dir=REHEARSAL.CONFIGS[name].parent)
    assert config.max_memory == 8 * 2**30
    assert config.batch_size == raw["study"]["batch_size"]


def test_rehearsal_without_a_budget_leaves_the_run_default() -> None:
    raw = tomllib.loads(REHEARSAL.CONFIGS["s1"].read_text())
    cfg = REHEARSAL.rehearsal_config("s1", raw, Path("/tmp/none"), False)
    assert "max_memory" not in cfg["study"]
