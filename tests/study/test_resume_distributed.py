"""A study killed at random moments and run again, and a study under torchrun with two
processes, both end with the tables of one uninterrupted single-process run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from robustlens.errors import ConfigError

CONFIG = """
[study]
name = "resume"
seed = 3
batch_size = 10
checkpoint_every = 0
expected_passes = 2

[data]
dataset = "digits"
n_per_class = 9

[[models]]
name = "trained"
architecture = "digits_cnn"
train = { epochs = 2, batch_size = 64, lr = 0.005 }

[[models]]
name = "random"
architecture = "digits_cnn"
random = true
seed = 1

[[attacks]]
type = "pgd"
eps = [0.05, 0.1]
steps = 8

[[attacks]]
type = "fgsm"
eps = [0.1]

[analyses.dissimilarity]
[analyses.sensitivity]
top_k = 3
[analyses.per_class]
[analyses.per_example]
[analyses.manifolds]
n_bootstrap = 20
[analyses.rsa]
n_bootstrap = 10
[analyses.audit]
n_images = 15
steps = 5
[analyses.pca_images]
[analyses.saliency]
methods = ["gradient"]
n_images = 2
"""


def _env(cache: Path) -> dict[str, str]:
    env = {**os.environ, "ROBUSTLENS_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return env


def _command(config: Path, out: Path) -> list[str]:
    return ["-m", "robustlens", "study", str(config), "--out", str(out), "--quiet", "--device", "cpu"]


def _run(args: list[str], env: dict[str, str], timeout: float = 300) -> None:
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_parquet(p) for p in sorted((run_dir / "results").glob("*.parquet"))}


def _assert_same_tables(a: Path, b: Path, exact: bool) -> None:
    ta, tb = _tables(a), _tables(b)
    assert sorted(ta) == sorted(tb)
    assert {"accuracy", "per_example", "dissimilarity", "manifolds", "rdm", "audit"} <= set(ta)
    for name in ta:
        left, right = ta[name], tb[name]
        if name == "models":  # where the model came from: cache or training differs between runs
            left, right = left[["model", "architecture"]], right[["model", "architecture"]]
        pd.testing.assert_frame_equal(left, right, check_exact=exact, rtol=1e-9, atol=1e-12, obj=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """One uninterrupted single-process run (its model cache is shared by the other runs)."""
    root = tmp_path_factory.mktemp("resume")
    config = root / "study.toml"
    config.write_text(CONFIG)
    env = _env(root / "cache")
    _run(_command(config, root / "reference"), env)
    return config, root / "reference", env


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_identical_tables(reference, tmp_path):
    config, ref, env = reference
    out = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    for round_ in range(4):
        proc = subprocess.Popen([sys.executable, *_command(config, out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # wait until the run is working (its first resume point, or run.json), then kill it at a
        # random moment: during an attack, a checkpoint write, a model's tables or the report
        wanted = "*.pt" if round_ % 2 == 0 else "run.json"
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and not list(out.glob(f"checkpoints/{wanted}")):
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2, "the run finished before it could be killed; slow it down"
    assert (out / "checkpoints" / "run.json").is_file()
    leftovers = [p.name for p in out.rglob("*.tmp")]
    _run(_command(config, out), env)
    _assert_same_tables(ref, out, exact=True)
    assert (out / "report.html").is_file()
    assert not [p for p in out.rglob("*.tmp") if p.name not in leftovers]


@pytest.mark.slow
def test_torchrun_two_processes_match_one(reference, tmp_path):
    config, ref, env = reference
    out = tmp_path / "two"
    _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          *_command(config, out)], env)
    _assert_same_tables(ref, out, exact=False)
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["status"] == "complete"


def test_other_config_in_the_same_run_dir_is_refused_unless_fresh(tmp_path):
    from robustlens.study import parse_config, run_study

    cache = tmp_path / "cache"
    raw = {"study": {"name": "a", "batch_size": 50}, "data": {"dataset": "digits", "n_per_class": 5},
           "models": [{"name": "m", "architecture": "digits_cnn", "random": True}],
           "attacks": [{"type": "fgsm", "eps": [0.1]}], "analyses": {"per_class": {}}}
    first = run_study(parse_config(raw), tmp_path / "run", cache_dir=cache)
    again = run_study(parse_config(raw), tmp_path / "run", cache_dir=cache)  # resumes: nothing left to do
    pd.testing.assert_frame_equal(first.tables["accuracy"], again.tables["accuracy"])
    raw["attacks"][0]["eps"] = [0.2]
    with pytest.raises(ConfigError, match="different study config.*--fresh"):
        run_study(parse_config(raw), tmp_path / "run", cache_dir=cache)
    fresh = run_study(parse_config(raw), tmp_path / "run", cache_dir=cache, fresh=True)
    assert fresh.tables["accuracy"]["eps"].max() == 0.2


def test_resume_points_of_another_worker_count_are_refused(tmp_path):
    import torch

    from robustlens.study.checkpoints import ResumeStore
    from robustlens.study.distributed import World

    two = ResumeStore(tmp_path, "f", World(rank=0, size=2))
    two.prepare(fresh=False)
    two.save_units("m", {"batches_done": 1, "counters": {}, "expected": {}, "analyses": {},
                         "x": torch.ones(2)})
    assert two.load_units("m")["batches_done"] == 1
    one = ResumeStore(tmp_path, "f", World())
    with pytest.raises(ConfigError, match="another number of workers"):
        one.load_units("m")
    (tmp_path / "checkpoints" / "m.rank0of2.pt").write_bytes(b"truncated")
    assert two.load_units("m") is None  # unreadable: that model starts over, with a warning


STOCHASTIC = """
[study]
name = "noisy"
seed = 5
batch_size = 8
expected_passes = 3

[data]
dataset = "fashion_mnist"
n_per_class = 3

[[models]]
name = "vone"
architecture = "vone_fmnist_cnn"
random = true

[[attacks]]
type = "pgd"
eps = [0.05]
steps = 3
eot_samples = 2

[analyses.dissimilarity]
[analyses.per_example]
"""


@pytest.mark.slow
def test_torchrun_stochastic_model_matches_one_process(tmp_path, fashion_mnist_test):
    """A VOneNet's noise is drawn per batch, so which worker runs a batch does not matter."""
    config = tmp_path / "noisy.toml"
    config.write_text(STOCHASTIC)
    env = _env(tmp_path / "cache")
    _run(_command(config, tmp_path / "one"), env)
    _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          *_command(config, tmp_path / "two")], env)
    one, two = _tables(tmp_path / "one"), _tables(tmp_path / "two")
    assert bool(one["accuracy"]["stochastic"].all())
    for name in ("accuracy", "per_example", "dissimilarity"):
        pd.testing.assert_frame_equal(one[name], two[name], rtol=1e-9, atol=1e-12, obj=name)
