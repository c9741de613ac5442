"""Timing helpers for the attack benchmarks: interleaved medians, robust to a busy machine."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], object]) -> float:
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def interleaved(fns: Sequence[Callable[[], object]], repeats: int = 7, warmup: int = 1
                ) -> list[float]:
    """Median seconds of each function, timed in turn (a, b, a, b, ...) so that a change in
    machine load hits all of them alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            times[i].append(timed(fn))
    return [statistics.median(t) for t in times]


def setup_threads() -> str:
    """Use one intra-op thread unless ROBUSTLENS_BENCH_THREADS says otherwise (a shared
    2-core machine thrashes with more)."""
    import os

    n = int(os.environ.get("ROBUSTLENS_BENCH_THREADS", "1"))
    torch.set_num_threads(n)
    # Denormal floats slow CPU kernels by data-dependent amounts (an attack's evolving inputs
    # hit them, a fixed random floor input less): flush them so both are timed alike.
    torch.set_flush_denormal(True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name(0) if dev == "cuda" else f"{n} CPU thread(s)"
    return f"device: {dev} ({name}), torch {torch.__version__}, denormals flushed"
