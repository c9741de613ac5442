"""Peak memory of the class-manifold and sensitivity reducers: 10,000 images vs 1,000.

Target (issue 5): the peak resident memory while streaming 10,000 images through a reducer is
within 10% of that for 1,000 images. Both runs happen in this process on the real
Fashion-MNIST test set: the fmnist_cnn's activations of every layer (sensitivity, clean vs
sign-noise-perturbed images) and of its penultimate layer (class manifolds), batch by batch.
The peak is reset between runs (/proc/self/clear_refs) and read from VmHWM. Above-baseline
figures (peak minus the resident memory just before the run) are printed too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import current_rss_mib, device_line, peak_rss_mib, reset_peak_rss  # noqa: E402
from robustlens import create_model  # noqa: E402
from robustlens.activations import penultimate_layer, record  # noqa: E402
from robustlens.analysis import ChannelSensitivity, ClassManifolds  # noqa: E402
from robustlens.data import load_fashion_mnist  # noqa: E402

BATCH = 250


def stream(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
           feed: Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor], None]
           ) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for lo in range(0, len(images), BATCH):
            x, y = images[lo:lo + BATCH], labels[lo:lo + BATCH]
            noise = torch.sign(torch.randn(x.shape, generator=g))
            x_adv = (x + 0.1 * noise).clamp(0, 1)
            with record(model) as rec:
                model(x)
            clean = dict(rec)
            with record(model) as rec:
                model(x_adv)
            feed(clean, dict(rec), y)


def main() -> None:
    torch.manual_seed(0)
    data = load_fashion_mnist("test")
    model = create_model("fmnist_cnn").eval()
    penultimate = penultimate_layer(model, data.images[:1])

    def sensitivity_run(n: int) -> ChannelSensitivity:
        red = ChannelSensitivity(neurons=True)
        stream(model, data.images[:n], data.labels[:n], lambda c, a, _y: red.update(c, a))
        red.result()
        return red

    def manifold_run(n: int) -> ClassManifolds:
        red = ClassManifolds(10)
        stream(model, data.images[:n], data.labels[:n],
               lambda c, _a, y: red.update({penultimate: c[penultimate]}, y))
        red.result()
        return red

    print(device_line())
    worst = 0.0
    for name, run in (("ChannelSensitivity(neurons=True), every layer", sensitivity_run),
                      (f"ClassManifolds, {penultimate!r}", manifold_run)):
        run(500)  # warm-up: imports, allocator pools
        peaks, extra = {}, {}
        for n in (1_000, 10_000):
            base = current_rss_mib()
            reset_peak_rss()
            run(n)
            peaks[n] = peak_rss_mib()
            extra[n] = peaks[n] - base
        ratio = peaks[10_000] / peaks[1_000]
        worst = max(worst, ratio)
        print(f"{name}: peak RSS {peaks[1_000]:.0f} MiB for 1,000 images, "
              f"{peaks[10_000]:.0f} MiB for 10,000 (above baseline: {extra[1_000]:.1f} / "
              f"{extra[10_000]:.1f} MiB)  ratio {ratio:.3f}  (target <= 1.10)")
    print("PASS" if worst <= 1.10 else "FAIL", f"worst ratio {worst:.3f}")


if __name__ == "__main__":
    main()
