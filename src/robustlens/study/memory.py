"""A study run's memory budget: sizes, the device's memory, peaks, and out-of-memory errors.

The budget is the most memory the run may hold on its device: on the CPU, the process's
resident memory (what Linux's ``VmHWM`` reports as its peak); on CUDA, the bytes PyTorch
allocates on the GPU (``torch.cuda.max_memory_allocated``). ``[study].max_memory`` sets it
(``"6GiB"``, ``"500 MB"`` or a number of bytes); by default it is a safe fraction of what
the device has: :func:`default_budget`.

:func:`parse_memory` reads a size, :func:`memory_in_use` and :class:`PeakMemory` measure,
:func:`is_out_of_memory` recognizes an allocation failure (CUDA's and the CPU's). A probe's
peak is measured by resetting the device's high-water mark (:func:`reset_peak`); the
process' own peak across those resets stays known (:func:`process_peak`), and the run
records it in its manifest (``peak_memory_bytes``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import re
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from robustlens.errors import ConfigError

__all__ = ["PeakMemory", "default_budget", "format_size", "is_out_of_memory", "memory_in_use",
           "parse_memory", "peak_since_reset", "process_peak", "release_free_memory", "reset_peak"]

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}
_SIZE = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")

CPU_FRACTION = 0.75
"""Default CPU budget: the process's resident memory plus this share of the memory available."""
CUDA_FRACTION = 0.85
"""Default CUDA budget: this share of the GPU memory free plus what PyTorch already holds."""


def parse_memory(value: object, where: str = "[study].max_memory") -> int:
    """A memory size in bytes from a config value.

    Args:
        value: a number of bytes (int or float) or a string with a unit: ``"6GiB"``,
            ``"1.5 GB"``, ``"800MiB"`` (B, kB/KiB, MB/MiB, GB/GiB, TB/TiB; case-insensitive;
            kB = 1000 B, KiB = 1024 B).
        where: the config key named in errors.

    Returns:
        The size in bytes (> 0).

    Raises:
        ConfigError: not a size, an unknown unit, or a size <= 0.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be a memory size such as \"6GiB\" or a number of bytes; "
                          f"received {value!r}.")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    elif isinstance(value, str):
        match = _SIZE.match(value)
        if match is None:
            raise ConfigError(f"{where} must be a memory size such as \"6GiB\", \"500MB\" or a number of "
                              f"bytes; received {value!r}.")
        number, unit = float(match.group(1)), match.group(2).lower()
        if unit not in _UNITS:
            raise ConfigError(f"{where}: unknown unit {match.group(2)!r} in {value!r}; use B, kB, KiB, MB, "
                              "MiB, GB, GiB, TB or TiB (e.g. \"6GiB\").")
    else:
        raise ConfigError(f"{where} must be a memory size such as \"6GiB\" or a number of bytes; "
                          f"received {value!r}.")
    size = number * _UNITS[unit]
    if not size >= 1 or size == float("inf"):
        raise ConfigError(f"{where} must be a positive memory size (e.g. \"6GiB\"); received {value!r}.")
    return int(size)


def format_size(n: float) -> str:
    """``6442450944`` -> ``"6.0 GiB"``.

    Args:
        n: a size in bytes.
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _proc_kib(path: str, key: str) -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_in_use(device: torch.device) -> int:
    """Bytes this process holds on ``device`` now (CPU: resident memory; CUDA: allocated).

    Args:
        device: the run's device.
    """
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    rss = _proc_kib("/proc/self/status", "VmRSS")
    if rss is not None:
        return rss
    import resource  # noqa: PLC0415  (not on every platform)

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def default_budget(device: torch.device) -> int:
    """The budget when ``[study].max_memory`` is not given: a safe share of the device's memory.

    CPU: what the process holds plus :data:`CPU_FRACTION` of the memory the system has
    available (``MemAvailable`` of ``/proc/meminfo``). CUDA: :data:`CUDA_FRACTION` of the
    GPU's free memory plus what PyTorch already reserved (``torch.cuda.mem_get_info``).

    Args:
        device: the run's device.
    """
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(CUDA_FRACTION * (free + torch.cuda.memory_reserved(device)))
    available = _proc_kib("/proc/meminfo", "MemAvailable")
    if available is None:  # not Linux: assume 8 GiB free rather than refuse to run
        available = 8 * 1024**3
    return memory_in_use(device) + int(CPU_FRACTION * available)


# the highest peak seen before the high-water marks were last reset, per device type: a reset
# (for one probe's peak) must not hide the process' own peak from the run's record
_EARLIER_PEAK: dict[str, int] = {}


def reset_peak(device: torch.device) -> bool:
    """Reset the peak-memory mark of ``device`` (CPU: the process' resident high-water mark
    through ``/proc/self/clear_refs``; CUDA: the allocator's peak), keeping the peak so far
    for :func:`process_peak`. False where the CPU mark cannot be reset (not Linux).

    Args:
        device: the run's device.
    """
    kind = device.type
    _EARLIER_PEAK[kind] = process_peak(device)
    if kind == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_since_reset(device: torch.device) -> int | None:
    """The peak bytes on ``device`` since the last :func:`reset_peak` (CPU: ``VmHWM``; CUDA:
    ``max_memory_allocated``); None where unknown.

    Args:
        device: the run's device.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device))
    return _proc_kib("/proc/self/status", "VmHWM")


def process_peak(device: torch.device) -> int:
    """The highest memory this process has held on ``device`` since it started, across every
    :func:`reset_peak` (CPU: resident bytes; CUDA: allocated bytes; 0 where unknown).

    Args:
        device: the run's device.
    """
    now = peak_since_reset(device) or 0
    return max(now, _EARLIER_PEAK.get(device.type, 0))


class PeakMemory:
    """The peak memory held on a device while a block runs (absolute bytes, as the budget).

    CPU: the process's resident peak, reset on entry through ``/proc/self/clear_refs`` (Linux),
    after the allocator's free pages are handed back (:func:`release_free_memory`: pages kept
    for reuse would hide what the block allocates); where it cannot be reset, the peak since
    the process started. CUDA:
    ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.

    Args:
        device: the device measured.

    Attributes:
        start: bytes held on entry.
        peak: the highest bytes held during the block (after exit).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = 0
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type != "cuda":  # pages freed earlier would be reused unseen by the peak
            release_free_memory()
        reset_peak(self.device)
        self.start = memory_in_use(self.device)
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        peak = peak_since_reset(self.device)
        self.peak = max(peak if peak is not None else memory_in_use(self.device), self.start)


_LIBC: Any = None


def release_free_memory(collect: bool = True) -> None:
    """Hand the memory freed since the last call back to the system.

    Python's garbage is collected (where ``collect``), then the C allocator's free pages are
    returned (glibc's ``malloc_trim``; a no-op elsewhere). Without this, the pages a model's
    batches freed stay in the process (the allocator keeps them for reuse), so the next model
    of a study starts from the last one's high-water mark: S1's VOneResNet50 started at
    5.5 GB resident after the ResNet50, where 1.0 GB were in use. Called before each model, after each batch,
    before the report and on entry to the memory probe's measurement. The collection is what
    costs (about 0.2 s in a process holding the plotting libraries); the return alone costs
    microseconds when there is little to return, so after each attack unit of a batch, whose
    tensors are freed as soon as they are dropped, it runs without the collection.

    Args:
        collect: collect Python's garbage first (cycles that hold tensors).
    """
    global _LIBC
    if collect:
        gc.collect()
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation failure: CUDA out of memory, a CPU allocator that could
    not allocate, or Python's ``MemoryError``.

    Args:
        err: the exception caught.
    """
    if isinstance(err, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    if isinstance(err, RuntimeError):
        text = str(err)
        return ("can't allocate memory" in text or "out of memory" in text.lower()
                or "DefaultCPUAllocator" in text)
    return False
