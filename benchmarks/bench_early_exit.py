"""Early exit in robust-accuracy evaluation: compute goes to the examples still standing.

The standard Fashion-MNIST CNN (``fmnist_cnn``, trained 2 epochs, cached), PGD-20 L-inf at
eps 0.1 on 2,000 test images, batch 500 (``ROBUSTLENS_BENCH_BATCH``): evaluation with early
exit (an example already misclassified keeps its adversarial image and leaves the batch,
between steps and restarts) vs attacking every example for every step. Target: <= 0.3x
the time, same or lower robust accuracy. The number of images that go through the model is
printed too: the cost a faster device sees (on a CPU, the shrinking batches run less
efficiently per image).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _attack_timing import setup_threads  # noqa: E402
from robustlens import create_model  # noqa: E402
from robustlens.attacks import PGD  # noqa: E402
from robustlens.data import load_fashion_mnist  # noqa: E402
from robustlens.evaluation import robust_accuracy  # noqa: E402
from robustlens.training import TrainConfig, train_model  # noqa: E402

TARGET = 0.3
BATCH = int(os.environ.get("ROBUSTLENS_BENCH_BATCH", "500"))


def trained_model() -> torch.nn.Module:
    cache = Path(os.environ.get("ROBUSTLENS_BENCH_CACHE", Path.home() / ".cache" / "robustlens"))
    path = cache / "bench_fmnist_cnn_2ep.pt"
    torch.manual_seed(0)
    model = create_model("fmnist_cnn")
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        train_model(model, load_fashion_mnist("train"), TrainConfig(epochs=2))
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return model.eval()


class Counting(torch.nn.Module):
    """Counts the images that go through the model (the hardware-independent cost)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        out: torch.Tensor = self.model(x)
        return out


def main() -> None:
    print(setup_threads())
    model = Counting(trained_model())
    data = load_fashion_mnist("test").subset(torch.arange(2000))
    attack = {"pgd": PGD(eps=0.1, steps=20)}
    runs = {}
    images = {}
    for early in (True, False, True, False):
        model.images = 0
        t = time.perf_counter()
        table = robust_accuracy(model, data, attack, batch_size=BATCH, early_exit=early)
        wall = time.perf_counter() - t
        images[early] = model.images
        row = table.set_index("attack").loc["pgd"]
        best = runs.get(early)
        if best is None or wall < best[0]:
            runs[early] = (wall, float(row.seconds), float(row.accuracy),
                           float(table.accuracy.iloc[0]))
    (w_e, a_e, acc_e, clean), (w_f, a_f, acc_f, _) = runs[True], runs[False]
    print(f"fmnist_cnn, clean accuracy {clean:.4f}; PGD-20 Linf eps 0.1, 2000 images, "
          f"batch {BATCH}")
    print(f"every example every step: attack {a_f:6.2f} s (evaluation {w_f:6.2f} s), "
          f"robust accuracy {acc_f:.4f}")
    print(f"early exit:               attack {a_e:6.2f} s (evaluation {w_e:6.2f} s), "
          f"robust accuracy {acc_e:.4f}")
    ratio = a_e / a_f
    print(f"time ratio {ratio:.3f} attack, {w_e / w_f:.3f} evaluation (target <= {TARGET}); "
          f"accuracy {'same or lower' if acc_e <= acc_f else 'HIGHER'}")
    print(f"images through the model (clean, attack and evaluation passes): {images[True]} "
          f"vs {images[False]}, ratio "
          f"{images[True] / images[False]:.3f}")
    print("PASS" if ratio <= TARGET and acc_e <= acc_f else "FAIL")


if __name__ == "__main__":
    main()
