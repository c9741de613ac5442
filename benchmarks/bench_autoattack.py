"""APGD-CE, APGD-T, FAB-T, Square and the AutoAttack ensemble: robustlens beside torchattacks.

Part 1, the demo's PGD-trained Fashion-MNIST CNN (``robustlens demo``'s ``pgd_trained``
model, trained once through the study's model cache), ``--images`` test images (the first
ones), L-inf eps 0.1 and L2 eps 1.0. The same settings go to both libraries: APGD 100 steps,
1 restart (cross-entropy; APGD-T: targeted DLR towards the 9 most likely other classes),
FAB-T 100 steps towards the 9 most likely other classes (alpha_max 0.1, eta 1.05, beta 0.9),
Square 5,000 queries with p_init 0.8, seed 0; the ensemble is those four as a cascade on the
survivors (torchattacks: ``MultiAttack`` of the same four objects; its ``AutoAttack`` class
would run APGD, APGD-T and FAB with its default 10 steps). Printed per component and for the
ensemble: robust accuracy of each library, the difference (ours minus theirs; the target is
<= +0.5 points), wall times and their ratio (target for the ensemble: <= 1), then the
cascade's stages: accuracy after each, images attacked, images broken, seconds and seconds
per image attacked (the cost is proportional to the survivors when that is flat per stage).

Part 2, the demo's VOneNet (stochastic), ``--vone-images`` images, L-inf eps 0.05:
AutoAttack "rand" (APGD-CE and APGD-DLR with 20 EOT samples per step) against PGD-20 with 8
EOT samples; accuracy from one fresh stochastic pass each (target: rand <= PGD, within 1
point).

``--models quick`` replaces the demo's trainings (minutes on a free machine, hours on a busy
one) by short ones of the same architectures, cached beside them: fmnist_cnn PGD-trained for
1 epoch (PGD-3, eps 0.1) and vone_fmnist_cnn trained for 1 epoch, both on the first 12,000
training images. ``--quick`` is ``--models quick --images 100 --vone-images 100``. The
output says which models ran.

Usage: python benchmarks/bench_autoattack.py [--images 1000] [--vone-images 400]
       [--models demo|quick] [--quick] [--norms inf,2] [--skip-vone] [--skip-components]
       [--batch 500] [--threads 2] [--repeats 1] [--skip-ensembles] [--components-images N]

The whole benchmark at full size takes hours on 2 CPU cores (Square's 5,000 queries are
forward passes of the survivors, most of the time); parts of it can run in separate processes
(``--skip-ensembles``, ``--skip-components``, ``--skip-vone``), each printing its own ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import device_line  # noqa: E402
from robustlens.attacks import APGD, FAB, PGD, AutoAttack, Square  # noqa: E402
from robustlens.data import load_fashion_mnist  # noqa: E402
from robustlens.study.config import load_config  # noqa: E402
from robustlens.study.models import default_cache_dir, obtain_model  # noqa: E402

Runner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def quick_model(name: str) -> torch.nn.Module:
    """A short training of the demo model ``name``'s architecture, cached."""
    from robustlens.study.models import build_seeded
    from robustlens.training import AdversarialTraining, TrainConfig, train_model

    arch, adv = {"pgd_trained": ("fmnist_cnn", AdversarialTraining(eps=0.1, steps=3)),
                 "vonenet": ("vone_fmnist_cnn", None)}[name]
    path = default_cache_dir() / f"bench_{arch}_{name}_quick.pt"
    model = build_seeded(arch, {}, 0)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        print(f"model {name} (quick): cache ({path})", flush=True)
    else:
        train = load_fashion_mnist("train").subset(torch.arange(12000))
        train_model(model, train, TrainConfig(epochs=1, adversarial=adv))
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
        print(f"model {name} (quick): trained, 1 epoch on 12,000 images ({path})", flush=True)
    return model.eval()


def get_model(name: str, which: str) -> torch.nn.Module:
    return demo_model(name) if which == "demo" else quick_model(name)


def demo_model(name: str) -> torch.nn.Module:
    """The demo study's model ``name``, from the cache (trained there on first use)."""
    path = Path(str(resources.files("robustlens.study").joinpath("demo.toml")))
    config = load_config(path)
    mc = next(m for m in config.models if m.name == name)
    model, info = obtain_model(mc, config.data, cache_dir=default_cache_dir(),
                               device=torch.device("cpu"))
    print(f"model {name}: {info.get('source')} ({info.get('path', '')})", flush=True)
    return model.eval()


def evaluate(model: torch.nn.Module, run: Runner, x: torch.Tensor, y: torch.Tensor,
             batch: int) -> tuple[float, float, torch.Tensor]:
    """(accuracy, seconds, per-example correctness) of ``run`` over batches."""
    seconds, correct = 0.0, []
    for lo in range(0, len(y), batch):
        xb, yb = x[lo:lo + batch], y[lo:lo + batch]
        t = time.perf_counter()
        adv = run(xb, yb)
        seconds += time.perf_counter() - t
        with torch.inference_mode():
            correct.append(model(adv.float()).argmax(1) == yb)
    c = torch.cat(correct)
    return float(c.float().mean()), seconds, c


def ours(model: torch.nn.Module, attack: object) -> Runner:
    gen = torch.Generator().manual_seed(0)
    return lambda x, y: attack.run(model, x, y, generator=gen,  # type: ignore[attr-defined]
                                   early_stop=True).adversarial


def theirs(model: torch.nn.Module, norm: str, eps: float, components: bool
           ) -> dict[str, Runner]:
    """torchattacks' attacks with our settings (the ensemble: a MultiAttack of the four)."""
    import torchattacks as ta

    n = "Linf" if norm == "inf" else "L2"
    parts = {
        "apgd_ce": ta.APGD(model, norm=n, eps=eps, steps=100, n_restarts=1, loss="ce", seed=0),
        "apgd_t": ta.APGDT(model, norm=n, eps=eps, steps=100, n_restarts=1, n_classes=10, seed=0),
        "fab_t": ta.FAB(model, norm=n, eps=eps, steps=100, n_restarts=1, alpha_max=0.1, eta=1.05,
                        beta=0.9, multi_targeted=True, n_classes=10, seed=0),
        "square": ta.Square(model, norm=n, eps=eps, n_queries=5000, n_restarts=1, p_init=0.8,
                            seed=0),
    }
    made: dict[str, object] = {**(parts if components else {}),
                               "autoattack": ta.MultiAttack(list(parts.values()))}
    return {k: (lambda x, y, a=a: a(x, y)) for k, a in made.items()}  # type: ignore[misc]


def cascade(model: torch.nn.Module, attack: AutoAttack, x: torch.Tensor, y: torch.Tensor,
            batch: int) -> tuple[float, float, list[tuple[str, int, int, float]]]:
    """(accuracy, seconds, per stage (name, attacked, broken, seconds)) of the ensemble."""
    gen = torch.Generator().manual_seed(0)
    seconds, correct, stages = 0.0, [], {}
    for lo in range(0, len(y), batch):
        xb, yb = x[lo:lo + batch], y[lo:lo + batch]
        t = time.perf_counter()
        adv, res = attack.run_cascade(model, xb, yb, generator=gen, early_stop=True)
        seconds += time.perf_counter() - t
        with torch.inference_mode():
            correct.append(model(adv).argmax(1) == yb)
        for name, n_in, n_out, sec in zip(res.stages, res.attacked, res.broken, res.seconds,
                                          strict=True):
            a, b_, s_ = stages.get(name, (0, 0, 0.0))
            stages[name] = (a + n_in, b_ + n_out, s_ + sec)
    c = torch.cat(correct)
    return float(c.float().mean()), seconds, [(k, *v) for k, v in stages.items()]


def part_one(args: argparse.Namespace) -> None:
    model = get_model("pgd_trained", args.models)
    data = load_fashion_mnist("test").subset(torch.arange(args.images))
    x, y = data.images, data.labels
    with torch.inference_mode():
        clean = float((model(x).argmax(1) == y).float().mean())
    print(f"\nPGD-trained fmnist_cnn ({args.models}), {len(y)} test images, clean accuracy {clean:.3f}")
    settings = {"inf": 0.1, "2": 1.0}
    header = (f"{'attack':<12}{'ours':>8}{'torchattacks':>14}{'diff (pts)':>12}"
              f"{'ours s':>9}{'theirs s':>10}{'ratio':>8}")

    def line(key: str, acc: float, sec: float, acc_t: float, sec_t: float) -> None:
        print(f"{key:<12}{acc:>8.3f}{acc_t:>14.3f}{100 * (acc - acc_t):>+12.1f}"
              f"{sec:>9.1f}{sec_t:>10.1f}{sec / sec_t:>8.2f}", flush=True)

    # the ensembles first (the headline numbers), then each component alone
    for norm in args.norms.split(",") if not args.skip_ensembles else []:
        eps = settings[norm]
        print(f"\nensemble, {'L-inf' if norm == 'inf' else 'L2'} eps {eps:g}\n{header}", flush=True)
        peers = theirs(model, norm, eps, False)
        aa = AutoAttack(eps, norm, version="standard")
        acc, sec, stages = cascade(model, aa, x, y, args.batch)
        acc_t, sec_t, _ = evaluate(model, peers["autoattack"], x, y, args.batch)
        for _ in range(args.repeats - 1):  # alternate the two, keep each one's fastest
            sec_t = min(sec_t, evaluate(model, peers["autoattack"], x, y, args.batch)[1])
            again = cascade(model, aa, x, y, args.batch)
            if again[1] < sec:
                sec, stages = again[1], again[2]
        line("autoattack", acc, sec, acc_t, sec_t)
        print("  cascade (ours): stage, accuracy after, attacked, broken, seconds, "
              "s per image attacked")
        left = len(y)
        for name, n_in, n_out, s_ in stages:
            left -= n_out
            print(f"    {name:<12}{left / len(y):>7.3f}{n_in:>7d}{n_out:>7d}{s_:>9.1f}"
                  f"{s_ / max(n_in, 1):>9.3f}", flush=True)
    if args.skip_components:
        return
    if args.components_images and args.components_images < len(y):
        x, y = x[:args.components_images], y[:args.components_images]
        print(f"\ncomponents on the first {len(y)} of these images")
    for norm in args.norms.split(","):
        eps = settings[norm]
        print(f"\ncomponents, {'L-inf' if norm == 'inf' else 'L2'} eps {eps:g}\n{header}", flush=True)
        peers = theirs(model, norm, eps, True)
        mine = {"apgd_ce": APGD(eps, norm, "ce", steps=100),
                "apgd_t": APGD(eps, norm, "dlr", targeted="top", n_targets=9, steps=100),
                "fab_t": FAB(eps, norm, targeted="top", n_targets=9, steps=100),
                "square": Square(eps, norm, queries=5000, p_init=0.8)}
        for key, attack in mine.items():
            acc, sec, _ = evaluate(model, ours(model, attack), x, y, args.batch)
            acc_t, sec_t, _ = evaluate(model, peers[key], x, y, args.batch)
            for _ in range(args.repeats - 1):
                sec_t = min(sec_t, evaluate(model, peers[key], x, y, args.batch)[1])
                sec = min(sec, evaluate(model, ours(model, attack), x, y, args.batch)[1])
            line(key, acc, sec, acc_t, sec_t)


def part_two(args: argparse.Namespace) -> None:
    model = get_model("vonenet", args.models)
    data = load_fashion_mnist("test").subset(torch.arange(args.vone_images))
    x, y = data.images, data.labels
    eps = 0.05
    print(f"\nVOneNet (stochastic), {len(y)} test images, L-inf eps {eps:g}; accuracy from one "
          "fresh stochastic pass")
    torch.manual_seed(0)
    rand = AutoAttack(eps, "inf")  # version None -> "rand" for a stochastic model
    pgd = PGD(eps, steps=20, eot_samples=8)
    acc_r, sec_r, _ = evaluate(model, ours(model, rand), x, y, args.batch)
    acc_p, sec_p, _ = evaluate(model, ours(model, pgd), x, y, args.batch)
    print(f"autoattack rand {acc_r:.3f} ({sec_r:.0f} s), PGD-20 EOT-8 {acc_p:.3f} "
          f"({sec_p:.0f} s): rand minus PGD {100 * (acc_r - acc_p):+.1f} points "
          f"(target: <= +0.0, within 1 point)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", "--n-images", type=int, default=1000)
    parser.add_argument("--models", default="demo", choices=["demo", "quick"])
    parser.add_argument("--vone-images", type=int, default=400)
    parser.add_argument("--quick", action="store_true",
                        help="quick models, 100 images in each part")
    parser.add_argument("--norms", default="inf,2", help="threat models of part 1, in order")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--skip-vone", action="store_true")
    parser.add_argument("--skip-one", action="store_true", help="only part 2 (the VOneNet)")
    parser.add_argument("--skip-ensembles", action="store_true",
                        help="part 1 without the ensembles (components only)")
    parser.add_argument("--components-images", type=int, default=0,
                        help="run the components on the first N images only (0: all)")
    parser.add_argument("--skip-components", action="store_true",
                        help="only the ensembles (the components cost as much again)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1,
                        help="time each attack this many times, the two libraries alternately, "
                             "and keep the fastest (a shared machine's load varies)")
    args = parser.parse_args()
    if args.quick:
        args.models, args.images, args.vone_images = "quick", 100, 100
    if set(args.norms.split(",")) - {"inf", "2"}:
        parser.error(f"--norms takes 'inf' and/or '2'; received {args.norms!r}")
    torch.set_num_threads(args.threads)
    print(device_line())
    import torchattacks

    print(f"torchattacks {torchattacks.__version__}")
    print("command: python benchmarks/bench_autoattack.py " + " ".join(sys.argv[1:]), flush=True)
    if not args.skip_one:
        part_one(args)
    if not args.skip_vone:
        part_two(args)


if __name__ == "__main__":
    main()
