"""Activation maximization cost per step vs one forward + backward of the same input.

Setting of issue 6: EfficientNet-Lite0 (ImageNet weights), a 512-step render of a 128 x 128
image (Fourier parameterization, Lucid's transforms, ReLU gradient redirection), upsampled
bilinearly to 224 x 224 as Lucent does for ImageNet models, objective = channel 0 of the last
MBConv block (``_blocks.15``; the forward pass stops there, skipping only the head).
Floor: one forward + backward to the input of the model on a 224 x 224 image with parameters
frozen (what every optimisation step must at least pay), sampled every 16 steps during the
render itself so that both see the same machine load. Target: per step <= 1.3x the floor.
A second, informational line renders a class logit (the full forward pass).

Run: ``python benchmarks/bench_render.py [--steps 512] [--threads 2]``; exits 1 on FAIL.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from robustlens.models import create_model
from robustlens.visualization import objectives, render

sys.path.insert(0, str(Path(__file__).parent))
from _common import device_line, median_time  # noqa: E402

FLOOR = 1.3


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = create_model("efficientnet_lite0").eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    print(device_line())
    x = torch.rand(1, 3, 224, 224, device=device)

    def forward_backward() -> None:
        xi = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xi)[0, 0], xi)
        g.sum().item()

    # The machine is shared: the floor is sampled *during* the render (every 16 steps, from
    # the render's callback, its time excluded from the render's), so both see the same load.
    results = {}
    for label, objective, steps in (("channel _blocks.15#0", "_blocks.15#0",
                                     args.steps),
                                    ("class logit 207 (full pass)", objectives.class_logit(207),
                                     max(32, args.steps // 8))):
        render(model, objective, input_size=224, steps=3)  # warm-up
        floors: list[float] = []
        excluded = [0.0]

        def sample_floor(step: int, loss: torch.Tensor, floors: list[float] = floors,
                         excluded: list[float] = excluded) -> None:
            if step % 16 == 0:
                t0 = time.perf_counter()
                floors.append(median_time(forward_backward, repeats=1, warmup=0))
                excluded[0] += time.perf_counter() - t0

        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        result = render(model, objective, input_size=224, steps=steps, callback=sample_floor)
        float(result.losses[-1])
        per_step = (time.perf_counter() - t - excluded[0]) / steps
        floor = statistics.median(floors)
        results[label] = per_step / floor
        print(f"render {label}: {steps} steps at 128 px -> 224 px, {per_step * 1e3:.1f} ms/step; "
              f"forward+backward (1x3x224x224, input gradient, {len(floors)} samples during the "
              f"render): {floor * 1e3:.1f} ms; ratio {per_step / floor:.2f}x "
              f"(loss {float(result.losses[0]):.3g} -> {float(result.losses[-1]):.3g})")
    ratio = results["channel _blocks.15#0"]
    verdict = "PASS" if ratio <= FLOOR else "FAIL"
    print(f"{verdict}: render step / forward+backward = {ratio:.2f}x (target <= {FLOOR}x)")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
