"""A batch too large for the memory budget runs in parts, with the same results as in one piece.

The memory budget ([study].max_memory), the batch size that fits (measured by a probe), an
out-of-memory error at run time (the batch runs again in halves), and one clear error, with
the resume point kept, when not one image fits.
"""

from __future__ import annotations

import json
import logging
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from robustlens.cli import main
from robustlens.errors import ConfigError
from robustlens.study import batch as batch_module
from robustlens.study import parse_config, run_study
from robustlens.study import runner as runner_module
from robustlens.study.batch import BatchFit, ModelWork
from robustlens.study.memory import (
    PeakMemory,
    format_size,
    is_out_of_memory,
    memory_in_use,
    parse_memory,
    peak_since_reset,
    process_peak,
    release_free_memory,
    reset_peak,
)

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(not FMNIST.is_dir(), reason="Fashion-MNIST files not installed")

SPLIT = """
[study]
name = "split"
batch_size = 8
seed = 3
{extra}
[data]
dataset = "fashion_mnist"
n_per_class = 2
[[models]]
name = "cnn"
architecture = "fmnist_cnn"
random = true
seed = 1
[[attacks]]
type = "fgsm"
eps = [0.05]
[[attacks]]
name = "pgd"
type = "pgd"
eps = [0.05]
steps = 3
random_start = false
[[attacks]]
type = "deepfool"
eps = [0.1]
steps = 4
[analyses.dissimilarity]
layers = "all"
[analyses.per_example]
[analyses.per_class]
[analyses.manifolds]
"""

OOM_TEXT = ("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
            "allocate 1 bytes.")


def _config(extra: str = "") -> object:
    return parse_config(tomllib.loads(SPLIT.format(extra=extra)))


def _fit_returning(size: int):  # noqa: ANN202
    """A stand-in for ModelWork.fit that says ``size`` images fit (the probe still runs)."""
    real = ModelWork.fit

    def fit(self: ModelWork, x: torch.Tensor, y: torch.Tensor, budget: int, state: object) -> BatchFit:
        measured = real(self, x, y, budget, state)  # type: ignore[arg-type]
        return BatchFit(measured.budget, measured.in_use, measured.per_image, size, measured.probe_images)
    return fit


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in df.columns if df[c].dtype == object or c in ("example", "eps", "class", "layer_index")]
    return df.sort_values(keys, kind="stable").reset_index(drop=True) if keys else df


def _assert_same_tables(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        if name == "models":
            continue
        left, right = _sorted(a[name]), _sorted(b[name])
        assert list(left.columns) == list(right.columns), name
        assert len(left) == len(right) and len(left) > 0, name
        for col in left.columns:
            if pd.api.types.is_numeric_dtype(left[col]) and not pd.api.types.is_bool_dtype(left[col]):
                # float32 activations: a convolution of 3 images may round differently from one of 8
                np.testing.assert_allclose(left[col].to_numpy(float), right[col].to_numpy(float),
                                           rtol=1e-4, atol=1e-7, err_msg=f"{name}.{col}")
            else:
                assert left[col].tolist() == right[col].tolist(), f"{name}.{col}"


@pytest.fixture(scope="module", autouse=True)
def _no_report() -> object:
    """The report is not what these tests check (and its figures take most of a run's time)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("robustlens.report.build_report", lambda run_dir: None)
        yield


RELEASES: list[bool] = []  # release_free_memory's calls from a batch's attack units, in `whole`


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    if not FMNIST.is_dir():
        pytest.skip("Fashion-MNIST files not installed")
    out = tmp_path_factory.mktemp("whole")
    real = batch_module.release_free_memory
    with pytest.MonkeyPatch.context() as patch:  # the pages freed after each attack unit
        patch.setattr(batch_module, "release_free_memory",
                      lambda collect=True: (RELEASES.append(collect), real(collect)))
        result = run_study(_config(), out / "run", cache_dir=out / "cache")  # type: ignore[arg-type]
    manifest = json.loads((out / "run" / "manifest.json").read_text())
    assert manifest["micro_batch"] == {"cnn": 8}  # the default budget holds a batch of 8
    assert manifest["memory"]["cnn"]["batch_size_fits"] >= 8 and manifest["memory"]["cnn"]["per_image_bytes"] > 0
    # the run's own peak, kept across the probe's reset of the high-water mark
    assert manifest["peak_memory_bytes"] >= manifest["memory"]["cnn"]["in_use_bytes"] > 0
    return result.tables


def test_the_process_peak_survives_a_probes_reset() -> None:
    cpu = torch.device("cpu")
    if not reset_peak(cpu) or peak_since_reset(cpu) is None:
        pytest.skip("the resident high-water mark cannot be reset here (not Linux)")
    size = 256 * 2**20
    block = np.ones(size // 8)  # 256 MiB, every page touched
    held = memory_in_use(cpu)
    del block
    with PeakMemory(cpu) as probe:  # a probe resets the mark: its peak no longer sees the block
        pass
    assert probe.peak < held - size // 2
    assert process_peak(cpu) >= held - 4 * 2**20  # (the kernel syncs its page counts in batches)


@needs_fmnist
def test_a_batch_run_in_parts_gives_the_same_tables(tmp_path: Path, whole: dict[str, pd.DataFrame],
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(ModelWork, "fit", _fit_returning(3))
    with caplog.at_level(logging.WARNING, logger="robustlens.study.runner"):
        parts = run_study(_config(), tmp_path / "run", cache_dir=tmp_path / "cache")  # type: ignore[arg-type]
    said = [r.getMessage() for r in caplog.records if "parts of" in r.getMessage()]
    assert len(said) == 1 and "parts of 3 images" in said[0] and "batch of 8" in said[0]
    _assert_same_tables(whole, parts.tables)
    # every image once per condition, numbered in the data order
    examples = parts.tables["per_example"]
    assert sorted(examples.groupby(["attack", "eps"])["example"].apply(list).iloc[0]) == list(range(20))


@needs_fmnist
def test_an_out_of_memory_error_halves_the_batch_and_the_run_completes(
        tmp_path: Path, whole: dict[str, pd.DataFrame], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from robustlens.models import create_model

    cls = type(create_model("fmnist_cnn"))
    forward = cls.forward
    sizes: list[int] = []

    def tight(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        sizes.append(int(x.shape[0]))
        if x.shape[0] > 3:  # a device that holds 3 images at most
            raise RuntimeError(OOM_TEXT)
        return forward(self, x)

    monkeypatch.setattr(cls, "forward", tight)
    with caplog.at_level(logging.WARNING, logger="robustlens.study.runner"):
        parts = run_study(_config(), tmp_path / "run", cache_dir=tmp_path / "cache")  # type: ignore[arg-type]
    retries = [r.getMessage() for r in caplog.records if "ran out of memory" in r.getMessage()]
    assert len(retries) == 2 and "parts of 4 images" in retries[0] and "parts of 2 images" in retries[1]
    assert "DefaultCPUAllocator" in retries[0]
    assert max(s for s in sizes[-50:]) <= 2  # the later batches keep the size that worked
    _assert_same_tables(whole, parts.tables)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["micro_batch"] == {"cnn": 2}


@needs_fmnist
def test_out_of_memory_at_one_image_is_one_clear_error_and_keeps_the_batches_done(
        tmp_path: Path, whole: dict[str, pd.DataFrame], monkeypatch: pytest.MonkeyPatch) -> None:
    real = batch_module.run_batch

    def failing(work, state, x, y, index, tick=lambda: None, micro_batch=None):  # noqa: ANN001, ANN202
        if index == 2:  # the third batch never fits: half of it is fed, then memory runs out
            real(work, state, x[:1], y[:1], index, tick, None)
            raise RuntimeError(OOM_TEXT)
        return real(work, state, x, y, index, tick, micro_batch)

    monkeypatch.setattr(runner_module, "run_batch", failing)
    config = _config("checkpoint_every = 1000.0")
    with pytest.raises(ConfigError) as caught:
        run_study(config, tmp_path / "run", cache_dir=tmp_path / "cache")  # type: ignore[arg-type]
    message = str(caught.value)
    assert "one image does not fit in memory" in message and "batch 2 failed at 1 image" in message
    assert "max_memory" in message and "2 batches already done are kept" in message
    assert "\n" not in message
    monkeypatch.undo()  # the memory is back: the run resumes after the two batches done
    resumed = run_study(config, tmp_path / "run", cache_dir=tmp_path / "cache")  # type: ignore[arg-type]
    _assert_same_tables(whole, resumed.tables)


@needs_fmnist
def test_a_budget_below_one_image_is_refused_before_the_first_batch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"one image does not fit in the memory budget: it needs about .* "
                                          r"the budget is 1\.0 MiB\. Raise \[study\]\.max_memory"):
        run_study(_config('max_memory = "1MiB"'), tmp_path / "run",  # type: ignore[arg-type]
                  cache_dir=tmp_path / "cache")


@needs_fmnist
def test_a_measured_budget_below_the_batch_splits_it(tmp_path: Path) -> None:
    """Without stand-ins: a budget of what is in use plus a little fits fewer than 8 images."""
    config = _config()
    from robustlens.study.batch import ModelState
    from robustlens.study.models import build_seeded

    model = build_seeded("fmnist_cnn", {}, 1).eval()
    work = ModelWork(model, [], [], [], False, False, 1, torch.device("cpu"), 0, 8)
    data = config.data.build()  # type: ignore[attr-defined]
    x, y = data.get_batch(torch.arange(2))
    work.fit(x, y, 2**40, ModelState([("clean", 0.0)], 10, []))  # warm-up: the first pass' one-off costs
    fit = work.fit(x, y, 2**40, ModelState([("clean", 0.0)], 10, []))
    assert fit.per_image > 0 and fit.probe_images == 2 and fit.batch_size > 1000
    small = work.fit(x, y, fit.in_use + int(3.5 * fit.per_image / 0.9), ModelState([("clean", 0.0)], 10, []))
    assert 1 <= small.batch_size <= 6


@pytest.mark.parametrize("text, expected", [
    ("6GiB", 6 * 1024**3), ("1.5 GB", 1_500_000_000), ("800MiB", 800 * 1024**2), ("512kb", 512_000),
    (4096, 4096), ("2e9", 2_000_000_000), ("1TiB", 1024**4)])
def test_memory_sizes_parse(text: object, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("value, match", [
    ("6 parsecs", r"unknown unit 'parsecs' in '6 parsecs'; use B, kB"),
    ("6GB/s", r"must be a memory size such as \"6GiB\""),
    ("-2GiB", r"must be a positive memory size .* received '-2GiB'"),
    (0, r"must be a positive memory size"),
    (True, r"must be a memory size"),
    ("", r"must be a memory size"),
])
def test_bad_memory_sizes_are_clear_config_errors(value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_memory(value)
    raw = tomllib.loads(SPLIT.format(extra=""))
    raw["study"]["max_memory"] = value
    with pytest.raises(ConfigError, match=r"\[study\]\.max_memory"):
        parse_config(raw)


def test_out_of_memory_errors_are_recognized() -> None:
    assert is_out_of_memory(RuntimeError(OOM_TEXT)) and is_out_of_memory(MemoryError())
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("can't allocate memory"))
    assert format_size(6 * 1024**3) == "6.0 GiB"


PLANNED = """
[study]
name = "planned"
batch_size = 8
max_memory = "64GiB"
[data]
dataset = "digits"
n_per_class = 2
[[models]]
name = "cnn"
architecture = "digits_cnn"
random = true
[[attacks]]
type = "fgsm"
eps = [0.05]
[analyses.dissimilarity]
layers = "all"
"""


def test_plan_prints_the_batch_size_that_fits(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text(PLANNED)
    assert main(["study", str(cfg), "--plan", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "cnn: batch size that fits the memory budget of 64.0 GiB: " in printed
    assert "the config's batch runs whole." in printed
    monkeypatch.setattr(ModelWork, "fit", _fit_returning(3))
    assert main(["study", str(cfg), "--plan", "--quiet", "--max-memory", "2GiB"]) == 0
    printed = capsys.readouterr().out
    assert "memory budget of 2.0 GiB: 3; the config's batch is split into parts of 3 images." in printed


@pytest.mark.parametrize("collect", [True, False], ids=["collected", "returned only"])
def test_freed_memory_goes_back_to_the_system(collect: bool) -> None:
    cpu = torch.device("cpu")
    if not Path("/proc/self/status").exists():
        pytest.skip("resident memory is read from /proc (Linux)")
    release_free_memory()
    before = memory_in_use(cpu)
    # 3000 blocks of 96 KiB: below the allocator's mmap threshold, so they come from its heap;
    # one in ten is kept, so the freed nine hold pages between live blocks that the heap keeps
    blocks = [torch.ones(96 * 1024 // 4) for _ in range(3000)]
    kept = blocks[::10]
    del blocks
    held = memory_in_use(cpu)
    release_free_memory(collect)
    after = memory_in_use(cpu)
    if held - before < 100 * 2**20:
        pytest.skip("this allocator returned the blocks by itself")
    assert after < before + (held - before) / 2
    assert len(kept) == 300


def test_each_attack_unit_hands_its_memory_back(whole: dict[str, pd.DataFrame]) -> None:
    # 3 attack units (fgsm, pgd, deepfool) in each of the 3 batches (20 images by 8) and in
    # the memory probe's batch; without the slow garbage collection each time
    assert RELEASES == [False] * (3 * 3 + 3)
