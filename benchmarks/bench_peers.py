"""robustlens attacks side by side with torchattacks, foolbox and ART, where installed.

Same model (the standard Fashion-MNIST CNN, trained 2 epochs, cached), same 1,000 test
images, batch 250, same settings: FGSM eps 0.1; PGD-20 L-inf eps 0.1 step 0.0125 and PGD-20
L2 eps 1.0 step 0.125, random start; DeepFool L2 (overshoot 0.02, 50 steps). Prints our time
/ theirs and the robust accuracies, which should agree within sampling noise (random starts
differ; torchattacks' L2 random start is not uniform in the ball). Target: ours no slower
than torchattacks on PGD.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _attack_timing import setup_threads, timed  # noqa: E402
from bench_early_exit import trained_model  # noqa: E402
from robustlens.attacks import FGSM, PGD, Attack, DeepFool  # noqa: E402
from robustlens.data import load_fashion_mnist  # noqa: E402

Runner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ours(model: torch.nn.Module, attack: Attack) -> Runner:
    gen = torch.Generator().manual_seed(0)
    return lambda x, y: attack(model, x, y, generator=gen)


def torchattacks_runners(model: torch.nn.Module) -> dict[str, Runner]:
    try:
        import torchattacks as ta
    except ImportError:
        return {}
    made = {"fgsm": ta.FGSM(model, eps=0.1),
            "pgd_linf": ta.PGD(model, eps=0.1, alpha=0.0125, steps=20, random_start=True),
            "pgd_l2": ta.PGDL2(model, eps=1.0, alpha=0.125, steps=20, random_start=True),
            "deepfool_l2": ta.DeepFool(model, steps=50, overshoot=0.02)}
    return {k: (lambda x, y, a=a: a(x, y)) for k, a in made.items()}


def foolbox_runners(model: torch.nn.Module) -> dict[str, Runner]:
    try:
        import foolbox as fb
    except ImportError:
        return {}
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    made = {"fgsm": (fb.attacks.FGSM(random_start=False), 0.1),
            "pgd_linf": (fb.attacks.LinfPGD(abs_stepsize=0.0125, steps=20), 0.1),
            "pgd_l2": (fb.attacks.L2PGD(abs_stepsize=0.125, steps=20), 1.0),
            "deepfool_l2": (fb.attacks.L2DeepFoolAttack(steps=50, overshoot=0.02,
                                                        loss="logits"), None)}
    return {k: (lambda x, y, a=a, e=e: a(fmodel, x, y, epsilons=e)[1])
            for k, (a, e) in made.items()}


def art_runners(model: torch.nn.Module) -> dict[str, Runner]:
    try:
        import numpy as np
        from art.attacks.evasion import DeepFool as ArtDeepFool
        from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        return {}
    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(),
                            input_shape=(1, 28, 28), nb_classes=10, clip_values=(0.0, 1.0))
    made = {
        "fgsm": FastGradientMethod(clf, norm=np.inf, eps=0.1, batch_size=250),
        "pgd_linf": ProjectedGradientDescent(clf, norm=np.inf, eps=0.1, eps_step=0.0125,
                                             max_iter=20, num_random_init=1, batch_size=250,
                                             verbose=False),
        "pgd_l2": ProjectedGradientDescent(clf, norm=2, eps=1.0, eps_step=0.125, max_iter=20,
                                           num_random_init=1, batch_size=250, verbose=False),
        "deepfool_l2": ArtDeepFool(clf, max_iter=50, epsilon=0.02, nb_grads=10, batch_size=250,
                                   verbose=False),
    }

    def wrap(a):  # type: ignore[no-untyped-def]
        def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            kwargs = {} if isinstance(a, ArtDeepFool) else {"y": y.numpy()}
            return torch.from_numpy(a.generate(x.numpy(), **kwargs))
        return run

    return {k: wrap(a) for k, a in made.items()}


def versions() -> str:
    out = []
    for mod, name in (("torchattacks", "torchattacks"), ("foolbox", "foolbox"),
                      ("art", "adversarial-robustness-toolbox")):
        try:
            out.append(f"{name} {__import__(mod).__version__}")
        except ImportError:
            out.append(f"{name} not installed")
    return ", ".join(out)


def main() -> None:
    print(setup_threads())
    print(versions())
    model = trained_model()
    data = load_fashion_mnist("test").subset(torch.arange(1000))
    batches = list(data.batches(250))
    mine = {"fgsm": ours(model, FGSM(0.1)),
            "pgd_linf": ours(model, PGD(0.1, steps=20, step_size=0.0125)),
            "pgd_l2": ours(model, PGD(1.0, steps=20, step_size=0.125, norm="2")),
            "deepfool_l2": ours(model, DeepFool("2", steps=50, overshoot=0.02))}
    peers = {"torchattacks": torchattacks_runners(model), "foolbox": foolbox_runners(model),
             "art": art_runners(model)}

    def evaluate(run: Runner) -> tuple[float, float]:
        seconds, correct = 0.0, 0
        for x, y in batches:
            out: list[torch.Tensor] = []
            seconds += timed(lambda x=x, y=y, out=out: out.append(run(x, y)))
            with torch.no_grad():
                correct += int((model(out[0].float()).argmax(1) == y).sum())
        return seconds, correct / len(data)

    ok = True
    for name, run in mine.items():
        t_ours, acc_ours = evaluate(run)
        print(f"{name:12s} robustlens   {t_ours:7.2f} s  robust accuracy {acc_ours:.3f}")
        for peer, runners in peers.items():
            if name not in runners:
                continue
            t, acc = evaluate(runners[name])
            print(f"{'':12s} {peer:12s} {t:7.2f} s  robust accuracy {acc:.3f}   "
                  f"ours / theirs {t_ours / t:.2f}")
            if peer == "torchattacks" and name.startswith("pgd") and t_ours > t * 1.05:
                ok = False
    print("PASS" if ok else "FAIL", "(PGD no slower than torchattacks)")


if __name__ == "__main__":
    main()
