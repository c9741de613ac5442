"""Class manifolds at ImageNet scale: 1000 classes x 50 images of ResNet50's 2048 features.

Target: the reducer's state for S3 at 1000 classes, D = 2048, m = 50 stays within 1 GiB (the
dense layout kept a float64 (D, D) sum for every class: 32 GiB). Synthetic features stand in
for the penultimate layer: each class lies near its own 40-dimensional subspace (the
dimension the thesis found) plus small isotropic noise, shifted by a class mean; they arrive
in batches of 100 in class order, as ImageNet's validation set does. Printed: the state's
bytes against the dense layout's, peak resident memory above the starting point, the
state_dict's size on disk, the time to stream and to compute the result, and a check of a
few classes against scikit-learn's PCA.

Run: python benchmarks/bench_manifolds.py [--classes 1000] [--features 2048] [--per-class 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import current_rss_mib, device_line, peak_rss_mib, reset_peak_rss  # noqa: E402
from robustlens.analysis import ClassManifolds  # noqa: E402

GIB = 1024**3


def class_features(c: int, m: int, d: int, rank: int = 40) -> torch.Tensor:
    """(m, d) float32 features of class ``c``: a random ``rank``-dim subspace plus noise."""
    g = torch.Generator().manual_seed(1000 + c)
    basis = torch.randn(rank, d, generator=g) / d**0.5
    spread = torch.linspace(3.0, 0.3, rank)
    coords = torch.randn(m, rank, generator=g) * spread
    mean = torch.rand(d, generator=g) * 2
    return (coords @ basis + 0.05 * torch.randn(m, d, generator=g) + mean).clamp_min(0).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    k, d, m = args.classes, args.features, args.per_class
    print(device_line())
    print(f"classes={k}, features D={d}, images per class m={m}, batch={args.batch}")
    torch.set_num_threads(min(2, torch.get_num_threads()))

    reducer = ClassManifolds(k, 0.95)
    labels = torch.arange(k).repeat_interleave(m)
    base = current_rss_mib()
    reset_peak_rss()
    t0 = time.perf_counter()
    stream_s = 0.0
    pending: list[torch.Tensor] = []
    pending_labels: list[torch.Tensor] = []
    filled = 0
    for c in range(k):  # class order, as the validation set comes; batches cross classes
        pending.append(class_features(c, m, d))
        pending_labels.append(labels[c * m:(c + 1) * m])
        filled += m
        while filled >= args.batch or (c == k - 1 and filled):
            x, y = torch.cat(pending), torch.cat(pending_labels)
            take = min(args.batch, len(x))
            t = time.perf_counter()
            reducer.update({"penultimate": x[:take]}, y[:take])
            stream_s += time.perf_counter() - t
            pending, pending_labels, filled = [x[take:]], [y[take:]], len(x) - take
    total_s = time.perf_counter() - t0
    t = time.perf_counter()
    result = reducer.result()
    result_s = time.perf_counter() - t
    peak = peak_rss_mib() - base

    dense = k * (d * d + d + 1) * 8
    print(f"reducer state: {reducer.nbytes / GIB:.3f} GiB ({reducer.nbytes / 2**20:.0f} MiB); "
          f"dense (D, D) layout: {dense / GIB:.1f} GiB; ratio {dense / reducer.nbytes:.0f}x; "
          f"target <= 1 GiB: {'met' if reducer.nbytes <= GIB else 'NOT met'}")
    print(f"peak resident memory above start: {peak:.0f} MiB (features generated and fed in "
          f"batches; includes result())")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.pt"
        t = time.perf_counter()
        torch.save(reducer.state_dict(), path)
        save_s = time.perf_counter() - t
        size = path.stat().st_size
        t = time.perf_counter()
        copy = ClassManifolds(k, 0.95)
        copy.load_state_dict(torch.load(path, weights_only=True))
        load_s = time.perf_counter() - t
    print(f"state_dict on disk: {size / 2**20:.0f} MiB (save {save_s:.1f} s, load {load_s:.1f} s)")
    print(f"time: streaming {stream_s:.1f} s (feature generation excluded; {total_s:.1f} s with "
          f"it), result() {result_s:.1f} s for {len(result)} classes")
    dims = result["dimension"].to_numpy()
    print(f"dimensions: median {np.median(dims):.0f}, range [{dims.min()}, {dims.max()}] "
          f"(planted: 40-dim subspaces plus noise)")

    from sklearn.decomposition import PCA

    worst = 0.0
    for c in (0, k // 2, k - 1):
        pca = PCA(svd_solver="full").fit(class_features(c, m, d).double().numpy())
        expected = int(np.searchsorted(np.cumsum(pca.explained_variance_ratio_), 0.95,
                                       side="right")) + 1
        row = result[result["class"] == c].iloc[0]
        ours = copy.variances("penultimate", c).numpy()[:len(pca.explained_variance_)]
        worst = max(worst, float(np.abs(ours - pca.explained_variance_).max()
                                 / pca.explained_variance_[0]))
        assert row["dimension"] == expected, (c, row["dimension"], expected)
    print(f"scikit-learn PCA on classes 0, {k // 2}, {k - 1}: same dimensions; largest variance "
          f"difference {worst:.1e} of the top variance (after a save/load round trip)")


if __name__ == "__main__":
    main()
