"""Peak memory of recording + dissimilarity for 10,000 images vs 1,000 (target: within 10%).

One process: the Fashion-MNIST test set is loaded once; for each image count the peak RSS is
reset (/proc/self/clear_refs), then every layer of the Fashion-MNIST CNN is recorded on clean
and FGSM images, batch by batch, feeding a LayerDissimilarity reducer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import current_rss_mib, device_line, peak_rss_mib, reset_peak_rss  # noqa: E402
from robustlens import create_model, record  # noqa: E402
from robustlens.analysis import LayerDissimilarity  # noqa: E402
from robustlens.attacks import FGSM  # noqa: E402
from robustlens.data import load_fashion_mnist  # noqa: E402


def run(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int) -> LayerDissimilarity:
    reducer = LayerDissimilarity()
    attack = FGSM(eps=0.1)
    for start in range(0, len(images), batch):
        x, y = images[start:start + batch], labels[start:start + batch]
        x_adv = attack(model, x, y)
        with torch.inference_mode():
            with record(model) as clean:
                model(x)
            clean_acts = dict(clean)
            with record(model) as adv:
                model(x_adv)
            reducer.update(clean_acts, dict(adv))
    return reducer


def main() -> None:
    torch.manual_seed(0)
    data = load_fashion_mnist("test")
    model = create_model("fmnist_cnn").eval()
    print(device_line())
    run(model, data.images[:500], data.labels[:500], 250)  # warm-up: allocator, kernels
    peaks = {}
    for n in (1000, 10000):
        reset_peak_rss()
        base = current_rss_mib()
        reducer = run(model, data.images[:n], data.labels[:n], 250)
        peaks[n] = peak_rss_mib()
        r = reducer.result()
        print(f"{n:>6} images: peak RSS {peaks[n]:.1f} MiB (start {base:.1f} MiB); "
              f"{len(r)} layers, n_images per layer {int(r['n_images'].max())}")
    ratio = peaks[10000] / peaks[1000]
    print(f"peak(10,000) / peak(1,000) = {ratio:.3f} (target <= 1.10)")
    print("PASS" if ratio <= 1.10 else "FAIL")


if __name__ == "__main__":
    main()
