"""Peak memory of a whole study: 50,000 images vs 5,000, every analysis on.

Target (issue 7): a study's peak resident memory at 50,000 images is within 10% of that at
5,000. The images are synthetic (:class:`robustlens.data.SyntheticImages`: each made from its
index on demand, so the dataset itself holds nothing), the model is the tiny digits_cnn
(8x8 grey images), the attack FGSM at one eps, and every registered study analysis is on.
Both runs happen in this process after a small warm-up run; the peak is reset between runs
(/proc/self/clear_refs) and read from VmHWM. Resume points are written as in any study.

Usage: python benchmarks/bench_study_memory.py [--small 5000] [--large 50000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import current_rss_mib, device_line, peak_rss_mib, reset_peak_rss  # noqa: E402
from robustlens.data import SyntheticImages  # noqa: E402
from robustlens.study import parse_config, run_study  # noqa: E402
from robustlens.study.analyses import ANALYSES  # noqa: E402

# every analysis, with its fixed-cost parts (renders, audit, bootstrap) kept small
ANALYSIS_OPTIONS: dict[str, dict[str, object]] = {
    "audit": {"n_images": 50, "steps": 5},
    "featurevis": {"top_k": 1, "steps": 8},
    "saliency": {"n_images": 2, "methods": ["gradient", "smoothgrad"], "n_samples": 4},
    "manifolds": {"n_bootstrap": 50},
    "rsa": {"n_bootstrap": 20},
}


def _config(name: str) -> dict[str, object]:
    return {
        "study": {"name": name, "batch_size": 500, "checkpoint_every": 30.0, "device": "cpu"},
        "data": {"dataset": "digits"},  # replaced by the synthetic images below
        "models": [{"name": "tiny", "architecture": "digits_cnn", "random": True, "seed": 0}],
        "attacks": [{"type": "fgsm", "eps": [0.1]}],
        "analyses": {name: dict(ANALYSIS_OPTIONS.get(name, {})) for name in sorted(ANALYSES) if name != "photos"},
    }


def _run(n: int, out: Path) -> tuple[float, float, float]:
    """(peak RSS MiB, RSS before MiB, seconds) of one study on ``n`` synthetic images."""
    data = SyntheticImages(n, image_shape=(1, 8, 8), num_classes=10, seed=0)
    config = parse_config(_config(f"memory-{n}"))
    before = current_rss_mib()
    reset_peak_rss()
    t0 = time.perf_counter()
    run_study(config, out / f"n{n}", cache_dir=out / "cache", data=data)
    return peak_rss_mib(), before, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=5_000)
    parser.add_argument("--large", type=int, default=50_000)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(device_line())
    print(f"analyses: {', '.join(sorted(_config('x')['analyses']))}")  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        _run(500, out)  # warm-up: imports, allocator pools, first-call caches
        small, small_before, small_s = _run(args.small, out)
        large, large_before, large_s = _run(args.large, out)
    ratio = large / small
    print(f"{args.small:>6} images: peak RSS {small:7.1f} MiB (before {small_before:.1f}), {small_s:6.1f} s")
    print(f"{args.large:>6} images: peak RSS {large:7.1f} MiB (before {large_before:.1f}), {large_s:6.1f} s")
    verdict = "PASS" if ratio <= 1.10 else "FAIL"
    print(f"peak RSS ratio {args.large} / {args.small} images: {ratio:.3f}  target <= 1.10  {verdict}")


if __name__ == "__main__":
    main()
