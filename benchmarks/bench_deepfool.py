"""Batched DeepFool vs a per-sample loop of the same algorithm, and vs foolbox's.

A ResNet18 (torchvision, 200 classes: Tiny-ImageNet sized), 64 x 64 inputs, batch 16,
L-inf and L2, candidates 10, overshoot 0.02, at most 50 steps. Target: batched >= 10x faster
than the per-sample loop, and no slower than foolbox (where installed) at the same settings.
Random weights, with the classifier scaled so that the logits are well separated (the
attack then needs several iterations, as on a trained model).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _attack_timing import interleaved, setup_threads  # noqa: E402
from robustlens.attacks import DeepFool  # noqa: E402

TARGET = 10.0


def model_and_batch() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    import torchvision

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = torchvision.models.resnet18(num_classes=200).to(device).eval()
    with torch.no_grad():
        model.fc.weight.mul_(20.0)
    x = torch.rand(16, 3, 64, 64, device=device)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def foolbox_runner(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str):
    try:
        import foolbox as fb
    except ImportError:
        return None, "not installed"
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    cls = fb.attacks.LinfDeepFoolAttack if norm == "inf" else fb.attacks.L2DeepFoolAttack
    attack = cls(steps=50, candidates=10, overshoot=0.02, loss="logits")

    def run() -> torch.Tensor:
        _, clipped, success = attack(fmodel, x, y, epsilons=None)
        return clipped

    return run, fb.__version__


def main() -> None:
    print(setup_threads())
    model, x, y = model_and_batch()
    print("resnet18 (200 classes), batch 16, 3 x 64 x 64, candidates 10, overshoot 0.02, "
          "steps <= 50")
    worst = float("inf")
    for norm in ("inf", "2"):
        attack = DeepFool(norm, steps=50, candidates=10, overshoot=0.02,  # type: ignore[arg-type]
                          warn_stochastic=False)  # no stochasticity probe in either timing
        result = attack.run(model, x, y)

        def per_sample(attack: DeepFool = attack) -> None:
            for i in range(x.shape[0]):
                attack(model, x[i:i + 1], y[i:i + 1])

        fns = [lambda attack=attack: attack(model, x, y), per_sample]
        fool, fb_version = foolbox_runner(model, x, y, norm)
        if fool is not None:
            fns.append(fool)
        times = interleaved(fns, repeats=3)
        speedup = times[1] / times[0]
        worst = min(worst, speedup)
        size = result.minimal_norm.median()
        print(f"DeepFool L{norm}: batched {times[0]:6.2f} s, per-sample loop {times[1]:6.2f} s, "
              f"speed-up {speedup:5.1f}x (target >= {TARGET}); success "
              f"{float(result.success.float().mean()):.3f}, median norm {float(size):.4g}")
        if fool is not None:
            adv = fool()
            with torch.no_grad():
                fb_norm = (adv - x).flatten(1).abs().amax(1) if norm == "inf" \
                    else (adv - x).flatten(1).norm(dim=1)
                fb_success = float((model(adv).argmax(1) != y).float().mean())
            print(f"  foolbox {fb_version}: {times[2]:6.2f} s, ours / foolbox "
                  f"{times[0] / times[2]:.3f} (target <= 1); success {fb_success:.3f}, "
                  f"median norm {float(fb_norm.median()):.4g}")
        else:
            print(f"  foolbox: {fb_version}")
    print("PASS" if worst >= TARGET else "FAIL", f"smallest speed-up {worst:.1f}x")


if __name__ == "__main__":
    main()
