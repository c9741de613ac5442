"""RDM speed against its floor: one float32 matrix product of the same size.

Target (issue 5): an RDM of 1,000 stimuli x 100,000 features takes <= 2x the time of one
float32 (1000 x 100000) @ (100000 x 1000) product on the same machine. Both are measured
here, in one process, interleaved, on the same float32 tensor.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import device_line  # noqa: E402
from robustlens.analysis import rdm  # noqa: E402


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


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(1000, 100_000, generator=g, device=device)
    fns: dict[str, Callable[[], object]] = {"matmul": lambda: x @ x.T}
    for metric in ("correlation", "euclidean", "cosine"):
        fns[metric] = lambda metric=metric: rdm(x, metric)
    best = interleaved_min(fns, repeats=3)
    print(device_line())
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
