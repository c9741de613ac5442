"""RDM speed against its floor: one float32 matrix product of the same size.

Target (issue 5): an RDM of 1,000 stimuli x 100,000 features takes <= 2x the time of one
float32 (1000 x 100000) @ (100000 x 1000) product on the same machine. Both are measured
here, in one process, interleaved, on the same float32 tensor.

Then the bootstrap comparison of two 1000-class RDMs (the RSA analysis at ImageNet's 1000
classes; Spearman, 1000 resamples) against the same statistic computed by writing each
resample's pairs out and ranking them (timed on a few resamples, scaled to 1000), with the
largest difference between the two on those resamples.

Usage: python benchmarks/bench_rdm.py [--bootstrap-only]
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.stats
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import device_line  # noqa: E402
from robustlens.analysis import bootstrap_compare_rdms, rdm  # noqa: E402


def interleaved_min(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each function, the runs interleaved so load affects all alike."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def by_definition(a: np.ndarray, b: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Spearman r of each resample with its pairs written out (the bootstrap's definition)."""
    rng = np.random.default_rng(seed)
    n = a.shape[0]
    i, j = np.triu_indices(n, 1)
    out = []
    for _ in range(n_resamples):
        draw = rng.integers(0, n, size=n)
        keep = draw[i] != draw[j]
        si, sj = draw[i][keep], draw[j][keep]
        out.append(scipy.stats.spearmanr(a[si, sj], b[si, sj]).statistic)
    return np.asarray(out)


def bench_bootstrap(n_classes: int = 1000, n_bootstrap: int = 1000, n_reference: int = 5) -> None:
    g = torch.Generator().manual_seed(1)
    means = torch.randn(n_classes, 2048, generator=g)
    a = rdm(means)
    b = rdm(means + 0.7 * torch.randn(n_classes, 2048, generator=g))
    t, cpu = time.perf_counter(), time.process_time()
    est = bootstrap_compare_rdms(a, b, "spearman", n_bootstrap=n_bootstrap, seed=0)
    fast, fast_cpu = time.perf_counter() - t, time.process_time() - cpu
    t, cpu = time.perf_counter(), time.process_time()
    ref = by_definition(a.matrix, b.matrix, n_reference, seed=0)
    slow = (time.perf_counter() - t) / n_reference * n_bootstrap
    slow_cpu = (time.process_time() - cpu) / n_reference * n_bootstrap
    diff = float(np.max(np.abs(est.samples[:n_reference] - ref)))
    print(f"bootstrap_compare_rdms, {n_classes} classes ({n_classes * (n_classes - 1) // 2} pairs), "
          f"spearman, {n_bootstrap} resamples: {fast:.1f} s wall, {fast_cpu:.1f} s CPU (r = "
          f"{est.estimate:.4f}, 95% CI [{est.low:.4f}, {est.high:.4f}]; load average "
          f"{os.getloadavg()[0]:.1f})")
    print(f"  writing each resample out and ranking it: {slow:.0f} s wall, {slow_cpu:.0f} s CPU for "
          f"{n_bootstrap} (timed on {n_reference}); speed-up {slow / fast:.0f}x wall, "
          f"{slow_cpu / fast_cpu:.0f}x CPU; largest difference on those resamples "
          f"{diff:.1e} ({'PASS' if diff < 1e-9 and not math.isnan(diff) else 'FAIL'})")


def main() -> None:
    print(device_line())
    bench_bootstrap()
    if "--bootstrap-only" in sys.argv:
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(1000, 100_000, generator=g, device=device)
    fns: dict[str, Callable[[], object]] = {"matmul": lambda: x @ x.T}
    for metric in ("correlation", "euclidean", "cosine"):
        fns[metric] = lambda metric=metric: rdm(x, metric)
    best = interleaved_min(fns, repeats=3)
    floor = best.pop("matmul")
    print(f"floor: float32 (1000 x 100000) @ (100000 x 1000) = {floor * 1e3:.0f} ms")
    worst = 0.0
    for metric, t in best.items():
        ratio = t / floor
        worst = max(worst, ratio)
        print(f"rdm(metric={metric!r}): {t * 1e3:.0f} ms  ratio {ratio:.2f}  (target <= 2.00)")
    print("PASS" if worst <= 2.0 else "FAIL", f"worst ratio {worst:.2f}")


if __name__ == "__main__":
    main()
