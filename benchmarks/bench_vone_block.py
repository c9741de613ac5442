"""VOneBlock forward: robustlens vs a straightforward two-convolution implementation.

Setting of issue 3: 224 x 224 RGB input, batch 8, 512 channels (256 simple + 256 complex),
25 x 25 kernels, stride 4, noise off (so the outputs can be compared), 2 CPU threads.
The baseline follows the spec literally: two dense (N, 3, 25, 25) convolutions (q0, q1),
ReLU of the simple half of q0, sqrt(q0^2 + q1^2) / sqrt(2) of the complex half, times
k_exc. Ours convolves each input channel only with the filters that read it, fusing the
q0 bank and the complex part of q1 (4x fewer multiply-adds).

A second line times forward + backward to the input (the workload of attacks and
saliency). Timings are medians of interleaved repeats in this process; peak memory is the growth of the
resident set (Linux VmHWM after resetting it) while one forward runs, measured in a fresh
spawned interpreter per variant, so that freed memory of earlier runs cannot hide allocations.

Run: ``python benchmarks/bench_vone_block.py [--repeats 7] [--threads 2]``; exits 1 if the
speed-up is below 1.3x or the outputs differ by more than 1e-5.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from robustlens.models.vone import VOneBlock

BATCH, SIZE, SIMPLE, COMPLEX = 8, 224, 256, 256
FLOOR, TOLERANCE = 1.3, 1e-5


def make_block() -> VOneBlock:
    return VOneBlock(SIMPLE, COMPLEX, noise_mode=None)


def make_input() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(BATCH, 3, SIZE, SIZE, generator=gen) * 2 - 1  # normalised pixels


def baseline(block: VOneBlock, x: torch.Tensor) -> torch.Tensor:
    """The spec, implemented the obvious way: two dense convolutions, slice, combine."""
    ns, pad = block.simple_channels, block.ksize // 2
    q0 = F.conv2d(x, block.simple_conv_q0.weight, None, block.stride, pad)
    q1 = F.conv2d(x, block.simple_conv_q1.weight, None, block.stride, pad)
    simple = torch.relu(q0[:, :ns])
    complex_ = torch.sqrt(q0[:, ns:] ** 2 + q1[:, ns:] ** 2) / math.sqrt(2)
    return torch.relu(block.k_exc * torch.cat((simple, complex_), 1))


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_worker(variant: str, threads: int, queue: mp.Queue) -> None:
    torch.set_num_threads(threads)
    block, x = make_block(), make_input()
    with torch.inference_mode():
        block(x[:1]) if variant == "robustlens" else baseline(block, x[:1])  # lazy set-up
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS high-water mark to the current RSS (Linux >= 4.0)
        before = _status_bytes("VmRSS")
        out = baseline(block, x) if variant == "baseline" else block(x)
        peak = _status_bytes("VmHWM")
    del out
    queue.put(max(peak - before, 0))


def peak_memory(variant: str, threads: int) -> int:
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_peak_worker, args=(variant, threads, queue))
    proc.start()
    value = queue.get(timeout=600)
    proc.join()
    return int(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    block, x = make_block(), make_input()
    times: dict[str, list[float]] = {"baseline": [], "robustlens": []}
    with torch.inference_mode():
        ref, ours = baseline(block, x), block(x)  # warm-up (and oneDNN primitive creation)
        diff = float((ref - ours).abs().max())
        scale = float(ref.abs().max())
        for _ in range(args.repeats):
            for name in times:
                start = time.perf_counter()
                baseline(block, x) if name == "baseline" else block(x)
                times[name].append(time.perf_counter() - start)
    # The attack workload: forward + backward to the input (what PGD / saliency run).
    grad_times: dict[str, list[float]] = {"baseline": [], "robustlens": []}
    grads = {}
    for _ in range(max(2, args.repeats // 2)):
        for name in grad_times:
            xi = x.clone().requires_grad_()
            start = time.perf_counter()
            out = baseline(block, xi) if name == "baseline" else block(xi)
            out.sum().backward()
            grad_times[name].append(time.perf_counter() - start)
            grads[name] = xi.grad
    grad_diff = float((grads["baseline"] - grads["robustlens"]).abs().max())
    grad_scale = float(grads["baseline"].abs().max())
    t_base = statistics.median(times["baseline"])
    t_ours = statistics.median(times["robustlens"])
    ratio = t_base / t_ours
    mem = {name: peak_memory(name, args.threads) for name in times}
    print(f"VOneBlock forward, batch {BATCH} x 3 x {SIZE} x {SIZE}, {SIMPLE}+{COMPLEX} channels, "
          f"ksize {block.ksize}, stride {block.stride}, {args.threads} threads, "
          f"median of {args.repeats}")
    print(f"baseline (two dense convolutions): {t_base * 1e3:9.1f} ms   "
          f"peak memory {mem['baseline'] / 2**20:7.1f} MiB")
    print(f"robustlens VOneBlock:              {t_ours * 1e3:9.1f} ms   "
          f"peak memory {mem['robustlens'] / 2**20:7.1f} MiB")
    print(f"speed-up: {ratio:.2f}x (floor {FLOOR}x)")
    print(f"max |difference|: {diff:.3g} (outputs up to {scale:.3g}; tolerance {TOLERANCE})")
    g_base, g_ours = (statistics.median(grad_times[k]) for k in ("baseline", "robustlens"))
    print(f"forward + input gradient: baseline {g_base * 1e3:.1f} ms, robustlens "
          f"{g_ours * 1e3:.1f} ms, speed-up {g_base / g_ours:.2f}x; max |gradient difference| "
          f"{grad_diff:.3g} (gradients up to {grad_scale:.3g})")
    ok = ratio >= FLOOR and diff <= TOLERANCE
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
