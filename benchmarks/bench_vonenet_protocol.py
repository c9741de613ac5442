"""Time of the VOneNet adversarial protocol per 100 ImageNet images.

The protocol (studies S5): VOneResNet50, PGD L-inf eps 1/255, 64 steps, k = 10 gradient
samples per step (EOT), then accuracy from a fresh stochastic pass; 100 images (ImageNet
val with DS_factor 500). Weights do not change the cost, so the model has its random
initial weights and the images are synthetic 224 x 224 photographs-like arrays.

On a GPU the whole protocol runs (100 images, batch ``--batch``) and its wall time is
printed. On a CPU that would take hours, so a reduced run is timed (``--cpu-images``
images, ``--cpu-steps`` steps, full k = 10) and the time per 100 images is extrapolated
linearly in images x steps (an attack step is one forward + backward of a k x batch
stack; the line says "extrapolated").

Usage: python benchmarks/bench_vonenet_protocol.py [--device auto|cpu|cuda] [--batch 25]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import device_line  # noqa: E402
from robustlens import create_model  # noqa: E402
from robustlens.attacks.presets import vonenet_pgd  # noqa: E402
from robustlens.data import SyntheticImages  # noqa: E402
from robustlens.study.runner import resolve_device  # noqa: E402

N_IMAGES, STEPS, EOT = 100, 64, 10


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _protocol(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int,
              batch: int, device: torch.device) -> tuple[float, float]:
    """(seconds, robust accuracy) of the protocol on ``images`` with ``steps`` PGD steps."""
    attack = vonenet_pgd(1 / 255, steps=steps, eot_samples=EOT)
    generator = torch.Generator(device=device).manual_seed(0)
    correct = 0
    _sync(device)
    t0 = time.perf_counter()
    for lo in range(0, len(images), batch):
        x, y = images[lo:lo + batch].to(device), labels[lo:lo + batch].to(device)
        x_adv = attack(model, x, y, generator=generator)
        with torch.inference_mode():
            correct += int((model(x_adv).argmax(1) == y).sum())
    _sync(device)
    return time.perf_counter() - t0, correct / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--cpu-images", type=int, default=2)
    parser.add_argument("--cpu-steps", type=int, default=2)
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(device_line() + f"; running on {device}")
    torch.manual_seed(0)
    model = create_model("vone_resnet50").to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    full = device.type == "cuda"
    n, steps = (N_IMAGES, STEPS) if full else (args.cpu_images, args.cpu_steps)
    images, labels = SyntheticImages(n, image_shape=(3, 224, 224), num_classes=1000).get_batch(torch.arange(n))
    _protocol(model, images[:1], labels[:1], 1, 1, device)  # warm-up (kernels, allocator)
    seconds, accuracy = _protocol(model, images, labels, steps, min(args.batch, n), device)
    per_100 = seconds * (N_IMAGES / n) * (STEPS / steps)
    how = "measured" if full else f"extrapolated from {n} images x {steps} steps"
    print(f"protocol: PGD L-inf eps 1/255, {STEPS} steps, k = {EOT} EOT samples, VOneResNet50, 224 px")
    print(f"time per {N_IMAGES} images: {per_100 / 60:.1f} min ({how}; this run {seconds:.1f} s, "
          f"accuracy {accuracy:.2f} with random weights)")


if __name__ == "__main__":
    main()
