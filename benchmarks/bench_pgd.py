"""PGD's cost against its floor: K steps vs K x (one forward + backward of the same batch).

Target (skeleton issue): ratio <= 1.1. Both are measured here, in one process, on the
Fashion-MNIST CNN with a batch of 250 images.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import device_line, median_time  # noqa: E402
from robustlens import create_model  # noqa: E402
from robustlens.attacks import PGD  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    # subnormal floats make CPU kernels erratically slow on some inputs and not others;
    # flushing them makes the attack and its floor comparable
    torch.set_flush_denormal(True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = create_model("fmnist_cnn").to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(250, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (250,), device=device)
    steps = 20

    def forward_backward() -> None:
        xx = x.clone().requires_grad_(True)
        loss = F.cross_entropy(model(xx), y, reduction="sum")
        torch.autograd.grad(loss, xx)

    attacks = {norm: PGD(eps=0.1, steps=steps, norm=norm) for norm in ("inf", "2")}

    def floor_run() -> None:
        for _ in range(steps):
            forward_backward()

    # floor and attacks are timed in turns, so slow drifts of the machine hit both alike
    for fn in [floor_run, *[lambda a=a: a(model, x, y) for a in attacks.values()]]:
        fn()
    times: dict[str, list[float]] = {"floor": [], **{n: [] for n in attacks}}
    for _ in range(9):
        times["floor"].append(median_time(floor_run, repeats=1, warmup=0))
        for norm, a in attacks.items():
            times[norm].append(median_time(lambda a=a: a(model, x, y), repeats=1, warmup=0))
    floor = statistics.median(times["floor"])
    print(device_line())
    print(f"floor: {steps} x forward+backward = {floor * 1e3:.1f} ms (batch 250, fmnist_cnn)")
    worst = 0.0
    for norm in attacks:
        t = statistics.median(times[norm])
        ratio = t / floor
        worst = max(worst, ratio)
        print(f"PGD-{steps} L{norm}: {t * 1e3:.1f} ms  ratio {ratio:.3f}  (target <= 1.10)")
    print("PASS" if worst <= 1.10 else "FAIL", f"worst ratio {worst:.3f}")


if __name__ == "__main__":
    main()
