"""Gradient attacks against their floor, in one process, same model and batch.

* PGD with K steps vs K x (one forward + backward of the batch), L-inf and L2: target <= 1.05.
* EOT-PGD with k samples per step vs k x K x (forward + backward): target <= 1.05 for the
  automatic choice (``eot_chunk=None``); the stacked k x B pass and k sequential passes are
  shown beside it.

Model: the Fashion-MNIST CNN (``fmnist_cnn``), batch 250 of 1 x 28 x 28 images.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _attack_timing import interleaved, setup_threads  # noqa: E402
from robustlens import create_model  # noqa: E402
from robustlens.attacks import PGD  # noqa: E402

TARGET = 1.05


def main() -> None:
    print(setup_threads())
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = create_model("fmnist_cnn").to(device).eval()
    x = torch.rand(250, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (250,), device=device)

    def forward_backward(n: int) -> None:
        for _ in range(n):
            xx = x.clone().requires_grad_(True)
            loss = F.cross_entropy(model(xx), y, reduction="sum")
            torch.autograd.grad(loss, xx)

    worst = 0.0
    steps = 20
    print("model fmnist_cnn, batch 250; floor = passes x (forward + input-gradient backward)")
    for norm in ("inf", "2"):
        attack = PGD(eps=0.1 if norm == "inf" else 1.0, steps=steps, norm=norm)
        floor, t = interleaved([lambda: forward_backward(steps),
                                lambda a=attack: a(model, x, y)], repeats=9)
        ratio = t / floor
        worst = max(worst, ratio)
        print(f"PGD-{steps} L{norm}: {t * 1e3:7.1f} ms, floor {floor * 1e3:7.1f} ms, "
              f"ratio {ratio:.3f} (target <= {TARGET})")
    k, steps = 8, 5
    variants = {"auto": PGD(eps=0.1, steps=steps, eot_samples=k),
                "one k x B pass": PGD(eps=0.1, steps=steps, eot_samples=k, eot_chunk=k),
                "k passes of B": PGD(eps=0.1, steps=steps, eot_samples=k, eot_chunk=1)}
    floor, *times = interleaved([lambda: forward_backward(k * steps)]
                                + [lambda a=a: a(model, x, y) for a in variants.values()],
                                repeats=5)
    for label, t in zip(variants, times, strict=True):
        print(f"EOT-PGD k={k}, K={steps} ({label}): {t * 1e3:7.1f} ms, floor "
              f"{floor * 1e3:7.1f} ms, ratio {t / floor:.3f} (target <= {TARGET})")
    worst = max(worst, times[0] / floor)
    print("PASS" if worst <= TARGET else "FAIL", f"worst ratio {worst:.3f}")


if __name__ == "__main__":
    main()
