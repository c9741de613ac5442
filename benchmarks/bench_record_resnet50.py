"""Recording every layer of a ResNet50 into memory, against a plain forward pass.

Target (issue 5): a forward pass that records every leaf call of torchvision's resnet50
(random weights, 158 activations per pass, about 1 GiB for a batch of 8) takes <= 1.3x a plain
forward pass. The recorder's default copy-on-write strategy copies only the activations that
a later in-place operation would overwrite (each BatchNorm output before its in-place ReLU,
each block's last BatchNorm output before ``out += identity``); the eager strategy (a copy of
every output as it is recorded) is shown for comparison. Runs are interleaved in one process
under ``torch.inference_mode`` and the best of each is kept, so a loaded machine affects all
alike. The CPU time of this process (all threads) is printed too: on a machine shared with
other work it is the steadier measure of what recording costs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).parent))
from _common import device_line  # noqa: E402
from robustlens.activations import record  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = torchvision.models.resnet50().to(device).eval()
    batch = 32 if device.type == "cuda" else 8
    x = torch.rand(batch, 3, 224, 224, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sizes: dict[str, int] = {}

    def recorded(copy: str) -> Callable[[], None]:
        def run() -> None:
            with record(model, copy=copy) as rec:  # type: ignore[arg-type]
                model(x)
            sizes[copy] = len(rec)
            sizes[f"{copy}_bytes"] = sum(v.numel() * v.element_size() for v in rec.values())

        return run

    fns: dict[str, Callable[[], object]] = {"plain": lambda: model(x),
                                            "lazy": recorded("lazy"), "eager": recorded("eager")}
    best = {k: float("inf") for k in fns}
    cpu = {k: float("inf") for k in fns}
    with torch.inference_mode():
        for fn in fns.values():
            fn()
        for _ in range(5):
            for name, fn in fns.items():
                sync()
                t, c = time.perf_counter(), time.process_time()
                fn()
                sync()
                best[name] = min(best[name], time.perf_counter() - t)
                cpu[name] = min(cpu[name], time.process_time() - c)
    print(device_line())
    print(f"plain forward, resnet50, batch {batch} x 3 x 224 x 224: {best['plain'] * 1e3:.0f} ms "
          f"(CPU time {cpu['plain'] * 1e3:.0f} ms)")
    print(f"recorded {sizes['lazy']} activations, {sizes['lazy_bytes'] / 2**30:.2f} GiB per pass")
    for copy in ("lazy", "eager"):
        ratio = best[copy] / best["plain"]
        target = "  (target <= 1.30)" if copy == "lazy" else "  (for comparison)"
        print(f"record(model, copy={copy!r}): {best[copy] * 1e3:.0f} ms  ratio {ratio:.2f}"
              f"{target}; CPU time ratio {cpu[copy] / cpu['plain']:.2f}")
    ratio = best["lazy"] / best["plain"]
    print("PASS" if ratio <= 1.3 else "FAIL", f"ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
