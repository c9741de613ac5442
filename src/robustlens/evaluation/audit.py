"""Gradient-masking audit: is a robustness number trustworthy?

Runs the checks of Carlini et al. 2019 ("On evaluating adversarial robustness"), Athalye et
al. 2018 (obfuscated gradients), AutoAttack's flags, Popovic et al. 2022 (noise-injection
defences) and Zimmermann et al. 2022 (an active test) against one attack configuration, on a
class-balanced subset of the data. Each check passes, is flagged with its evidence and what
it suggests, or is skipped where it does not apply. The result is a tidy table.

Checks (``check`` column):

* ``monotonic_in_eps``: accuracy does not increase with eps.
* ``unbounded_attack``: an attack with an eps covering the whole pixel box reaches chance or
  below.
* ``iterative_vs_single_step``: the iterative attack is at least as strong as one step.
* ``more_iterations`` / ``more_restarts``: doubling the steps, or 5 random restarts, does not
  lower accuracy noticeably (the attack has converged).
* ``beats_random_noise`` / ``beats_transfer``: per example, random noise of the same size, or
  a transfer attack from a surrogate, never succeeds where the white-box attack fails.
* ``beats_black_box``: per example, the score-based Square attack (logits only, no
  gradients) never succeeds where the white-box attack fails (L-inf and L2).
* ``stochastic_without_eot``: a stochastic model is attacked with EOT.
* ``fixed_noise``: for a stochastic model, attacking it with its noise frozen to one sample
  (and evaluating the result on the noisy model) is not stronger than the EOT attack.
* ``zero_gradients``: the fraction of inputs whose loss gradient is all zero or not finite.
* ``active_test``: for each image, an adversarial example is guaranteed to exist (a point on
  the segment to an image of another class, found by bisection); the attack, given that
  point's norm as its eps, finds one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import pandas as pd
import torch
from torch import nn

from robustlens.attacks import (
    APGD,
    FGSM,
    PGD,
    Attack,
    Criterion,
    DeepFool,
    EotPlan,
    FixedNoise,
    RandomNoise,
    Square,
    Transfer,
    criterion_gradient,
    eval_mode,
    gradient_attack,
    is_stochastic,
    perturbation_norm,
)
from robustlens.data.dataset import ImageDataset
from robustlens.data.subset import class_balanced_indices
from robustlens.errors import ConfigError
from robustlens.evaluation.results import with_eps

__all__ = ["AUDIT_CHECKS", "AUDIT_COLUMNS", "audit_gradient_masking"]

AUDIT_CHECKS: tuple[str, ...] = (
    "monotonic_in_eps", "unbounded_attack", "iterative_vs_single_step", "more_iterations",
    "more_restarts", "beats_random_noise", "beats_transfer", "beats_black_box",
    "stochastic_without_eot",
    "fixed_noise", "zero_gradients", "active_test",
)
AUDIT_COLUMNS: tuple[str, ...] = ("check", "status", "attack", "norm", "eps", "value",
                                  "threshold", "evidence", "suggestion")

Status = Literal["pass", "flag", "skipped"]


class _Auditor:
    """Shared state of one audit: the subset, the model's nature, and cached accuracies."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack,
                 batch_size: int, seed: int, num_classes: int) -> None:
        self.model, self.x, self.y, self.attack = model, x, y, attack
        self.batch_size, self.seed, self.num_classes = batch_size, seed, num_classes
        self.stochastic = is_stochastic(model, x)
        self.rows: list[dict[str, Any]] = []
        self._cache: dict[tuple[int, Attack], torch.Tensor] = {}

    def correct(self, attack: Attack, target_model: nn.Module | None = None,
                craft_model: nn.Module | None = None) -> torch.Tensor:
        """Per-example correctness (N,) of ``target_model`` on images crafted on ``craft_model``."""
        target = self.model if target_model is None else target_model
        craft = target if craft_model is None else craft_model
        key = (id(craft) * 31 + id(target), attack)
        if key in self._cache:
            return self._cache[key]
        out = []
        gen = torch.Generator(device=self.x.device).manual_seed(self.seed)
        early = not self.stochastic and craft is target
        for s in range(0, len(self.y), self.batch_size):
            x, y = self.x[s:s + self.batch_size], self.y[s:s + self.batch_size]
            adv = attack.run(craft, x, y, generator=gen, early_stop=early).adversarial
            with torch.inference_mode():
                out.append(target(adv).argmax(1) == y)
        self._cache[key] = torch.cat(out)
        return self._cache[key]

    def accuracy(self, attack: Attack, **kwargs: nn.Module) -> float:
        return float(self.correct(attack, **kwargs).float().mean())

    def add(self, check: str, status: Status, value: float, threshold: float, evidence: str,
            suggestion: str = "", attack: Attack | None = None) -> None:
        a = self.attack if attack is None else attack
        self.rows.append({"check": check, "status": status, "attack": a.name, "norm": a.norm,
                          "eps": float(a.eps), "value": float(value),
                          "threshold": float(threshold), "evidence": evidence,
                          "suggestion": suggestion if status == "flag" else ""})

    def skip(self, check: str, why: str) -> None:
        self.add(check, "skipped", math.nan, math.nan, why)


def _is_iterative(attack: Attack) -> bool:
    return isinstance(attack, PGD | APGD) and attack.steps > 1


def _single_step(attack: Attack) -> Attack:
    if isinstance(attack, APGD):  # one step of length eps, same loss; APGD-T's sweep untargeted
        targeted = None if attack.targeted == "top" else attack.targeted
        loss = "ce" if attack.targeted == "top" else attack.loss
        return PGD(attack.eps, steps=1, step_size=attack.eps, norm=attack.norm,
                   random_start=False, seed=attack.seed, targeted=targeted,
                   eot_samples=attack.eot_samples, loss=loss)
    if attack.norm == "inf" and isinstance(attack, PGD):
        return FGSM(attack.eps, targeted=attack.targeted, eot_samples=attack.eot_samples,
                    loss=attack.loss, seed=attack.seed)
    assert isinstance(attack, PGD)
    return dataclasses.replace(attack, steps=1, step_size=attack.eps, random_start=False,
                               restarts=1)


def _whole_box(attack: Attack, x: torch.Tensor) -> float:
    return 1.0 if attack.norm == "inf" else math.sqrt(x[0].numel())


def _check_monotonic(a: _Auditor, epsilons: Sequence[float], tol: float) -> None:
    eps_list = sorted({0.0, *map(float, epsilons)})
    with torch.inference_mode():
        clean = float((a.model(a.x).argmax(1) == a.y).float().mean())
    accs = [clean if e == 0 else a.accuracy(with_eps(a.attack, e)) for e in eps_list]
    rises = [accs[i + 1] - accs[i] for i in range(len(accs) - 1)]
    worst = max(rises) if rises else 0.0
    curve = ", ".join(f"{e:g}: {v:.3f}" for e, v in zip(eps_list, accs, strict=True))
    a.add("monotonic_in_eps", "flag" if worst > tol else "pass", worst, tol,
          f"accuracy vs eps: {curve}; largest rise {worst:+.3f}",
          "accuracy rising with eps means the attack gets lost at larger eps: gradient "
          "masking or a step size that does not scale with eps; try more steps, restarts and "
          "a margin loss")


def _check_unbounded(a: _Auditor) -> None:
    atk = a.attack
    big = _whole_box(atk, a.x)
    if isinstance(atk, DeepFool):
        unbounded: Attack = dataclasses.replace(atk, eps=math.inf)
    elif isinstance(atk, PGD):
        unbounded = dataclasses.replace(atk, eps=big, step_size=None, steps=max(atk.steps, 20))
    elif isinstance(atk, Transfer):
        return a.skip("unbounded_attack", "transfer attacks are not white-box")
    else:
        unbounded = with_eps(atk, big)
    chance = 1.0 / a.num_classes
    acc = a.accuracy(unbounded)
    a.add("unbounded_attack", "flag" if acc > chance else "pass", acc, chance,
          f"accuracy {acc:.3f} under {unbounded.name} with eps {unbounded.eps:g} (the whole "
          f"pixel box); chance is {chance:.3f}",
          "an attack that may change every pixel should always win: its gradients carry "
          "no useful signal (masked, quantised or saturated); use a margin loss, EOT or BPDA",
          unbounded)


def _check_iterative(a: _Auditor, tol: float) -> None:
    if not _is_iterative(a.attack):
        return a.skip("iterative_vs_single_step", f"{a.attack.name} is not an iterative attack")
    single = _single_step(a.attack)
    acc_i, acc_s = a.accuracy(a.attack), a.accuracy(single)
    a.add("iterative_vs_single_step", "flag" if acc_i > acc_s + tol else "pass", acc_i - acc_s,
          tol, f"accuracy {acc_i:.3f} under {a.attack.name} vs {acc_s:.3f} under one step",
          "one step beating many points to a rugged, masked loss surface or a too-large step "
          "size; lower the step size and add restarts")


def _check_convergence(a: _Auditor, tol: float) -> None:
    atk = a.attack
    if not isinstance(atk, PGD | APGD):
        a.skip("more_iterations", f"{atk.name} has no iterations to double")
        a.skip("more_restarts", f"{atk.name} has no random restarts")
        return
    base = a.accuracy(atk)
    longer: Attack = dataclasses.replace(atk, steps=2 * atk.steps) if isinstance(atk, APGD) \
        else dataclasses.replace(atk, steps=2 * atk.steps, step_size=atk.effective_step_size)
    acc = a.accuracy(longer)
    a.add("more_iterations", "flag" if base - acc > tol else "pass", base - acc, tol,
          f"accuracy {base:.3f} with {atk.steps} steps, {acc:.3f} with {2 * atk.steps}",
          "the attack has not converged: report the stronger setting (more steps)", longer)
    runs = max(5, 2 * atk.restarts)
    more: Attack = dataclasses.replace(atk, restarts=runs) if isinstance(atk, APGD) else \
        dataclasses.replace(atk, restarts=runs, random_start=True)
    acc = a.accuracy(more)
    a.add("more_restarts", "flag" if base - acc > tol else "pass", base - acc, tol,
          f"accuracy {base:.3f} with {atk.restarts} run(s), {acc:.3f} with {runs} "
          "random restarts",
          "restarts find adversarials a single run misses: report the attack with restarts",
          more)


def _per_example_check(a: _Auditor, check: str, other: Attack, other_correct: torch.Tensor,
                       tol: float, suggestion: str) -> None:
    white = a.correct(a.attack)
    only_other = float((white & ~other_correct).float().mean())
    a.add(check, "flag" if only_other > tol else "pass", only_other, tol,
          f"{only_other:.3f} of images fooled by {other.name} but not by {a.attack.name} "
          f"(accuracy {float(white.float().mean()):.3f} white-box vs "
          f"{float(other_correct.float().mean()):.3f})", suggestion)


def _check_noise(a: _Auditor, tol: float) -> None:
    if not math.isfinite(a.attack.eps):
        return a.skip("beats_random_noise", "unbounded attack: no noise of the same size")
    noise = RandomNoise(a.attack.eps, a.attack.norm, trials=10, seed=a.seed)
    _per_example_check(a, "beats_random_noise", noise, a.correct(noise), tol,
                       "random noise of the same size succeeding where gradients fail is the "
                       "signature of gradient masking; check the model's gradients")


def _check_transfer(a: _Auditor, surrogate: nn.Module | None, tol: float) -> None:
    if surrogate is None:
        return a.skip("beats_transfer", "no surrogate model given (surrogate=...)")
    transfer = Transfer(a.attack, surrogate)
    with eval_mode(surrogate):
        correct = a.correct(transfer)
    _per_example_check(a, "beats_transfer", transfer, correct, tol,
                       "a black-box transfer attack beating the white-box one means the "
                       "model's own gradients mislead: gradient masking")


def _check_black_box(a: _Auditor, queries: int, tol: float) -> None:
    atk = a.attack
    if isinstance(atk, Square):
        return a.skip("beats_black_box", "the audited attack is the black-box one")
    if atk.norm not in ("inf", "2") or not math.isfinite(atk.eps) or atk.eps <= 0:
        return a.skip("beats_black_box", "Square needs a finite L-inf or L2 eps")
    eot = int(getattr(atk, "eot_samples", 1)) if a.stochastic else 1
    square = Square(atk.eps, atk.norm, queries=queries, seed=a.seed, eot_samples=eot)
    _per_example_check(a, "beats_black_box", square, a.correct(square), tol,
                       "a black-box attack that never sees a gradient succeeding where the "
                       "white-box one fails means the gradients mislead (masked, shattered or "
                       "noisy): report the worst case over both, e.g. AutoAttack")


def _check_stochastic(a: _Auditor, tol: float) -> None:
    eot = int(getattr(a.attack, "eot_samples", 1))
    if not a.stochastic:
        a.add("stochastic_without_eot", "pass", 0.0, 0.0,
              "the model is deterministic (two passes of the same images agree)")
        return a.skip("fixed_noise", "the model is deterministic")
    a.add("stochastic_without_eot", "flag" if eot == 1 else "pass", eot, 2,
          f"the model is stochastic and the attack averages {eot} gradient sample(s) per step",
          "attack with expectation over transformation (eot_samples >= 10); single-sample "
          "gradients of a noisy model underestimate its vulnerability")
    fixed = FixedNoise(a.model, seed=a.seed)
    if is_stochastic(fixed, a.x):
        return a.skip("fixed_noise", "the model's noise does not come from the global torch "
                      "RNG, so it cannot be frozen to one sample")
    plain = dataclasses.replace(a.attack, eot_samples=1, warn_stochastic=False) \
        if isinstance(a.attack, PGD | FGSM | DeepFool | APGD) else a.attack
    acc_fixed = float(a.correct(plain, craft_model=fixed).float().mean())
    acc = a.accuracy(a.attack)
    a.add("fixed_noise", "flag" if acc_fixed < acc - tol else "pass", acc - acc_fixed, tol,
          f"accuracy {acc:.3f} under the attack vs {acc_fixed:.3f} when it is crafted on the "
          "model with its noise frozen to one sample and evaluated with noise",
          "the noise obfuscates gradients (Popovic et al. 2022): report the fixed-noise "
          "transfer result and raise eot_samples")


def _check_zero_gradients(a: _Auditor, tol: float) -> None:
    plan = EotPlan.create(int(getattr(a.attack, "eot_samples", 1)), None, a.x[:a.batch_size])
    bad = []
    for s in range(0, len(a.y), a.batch_size):
        x, y = a.x[s:s + a.batch_size], a.y[s:s + a.batch_size]
        g, _, _ = criterion_gradient(a.model, x, Criterion(y), plan)
        flat = g.flatten(1)
        bad.append((flat == 0).all(1) | ~torch.isfinite(flat).all(1))
    frac = float(torch.cat(bad).float().mean())
    a.add("zero_gradients", "flag" if frac > tol else "pass", frac, tol,
          f"{frac:.3f} of images have an all-zero or non-finite cross-entropy input gradient",
          "zero or NaN gradients (quantisation, thresholding, saturated softmax) stop gradient "
          "attacks: use BPDA for non-differentiable layers, a margin loss for saturation")


def _active_eps(a: _Auditor, norm: str, steps: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example radius within which an adversarial example surely exists, and a mask."""
    model, x, y = a.model, a.x, a.y
    with torch.inference_mode():
        pred = model(x).argmax(1)
    # partner: an image of another class the model gets right (next class in label order)
    order = torch.argsort(y, stable=True)
    partner = torch.empty_like(order)
    partner[order] = order.roll(-int((y == y[order[0]]).sum()))
    z = x[partner]
    lo = torch.zeros(len(y), device=x.device)
    hi = torch.ones(len(y), device=x.device)
    valid = (pred == y) & (y[partner] != y)
    with torch.inference_mode():
        valid &= model(z).argmax(1) != y
        for _ in range(steps):
            mid = (lo + hi) / 2
            wrong = model(x + mid.view(-1, 1, 1, 1) * (z - x)).argmax(1) != y
            hi = torch.where(wrong, mid, hi)
            lo = torch.where(wrong, lo, mid)
    radius = perturbation_norm(hi.view(-1, 1, 1, 1) * (z - x), norm)  # type: ignore[arg-type]
    return radius, valid


def _check_active(a: _Auditor, tol: float) -> None:
    atk = a.attack
    if not isinstance(atk, PGD | FGSM) or a.stochastic:
        why = "needs a deterministic model" if a.stochastic else f"{atk.name} is not PGD/FGSM"
        return a.skip("active_test", why)
    radius, valid = _active_eps(a, atk.norm)
    if not bool(valid.any()):
        return a.skip("active_test", "no correctly classified pair of classes to build on")
    x, y, r = a.x[valid], a.y[valid], radius[valid] * 1.001
    steps = atk.steps if isinstance(atk, PGD) else 1
    rel = (atk.effective_step_size / atk.eps) if isinstance(atk, PGD) and atk.eps > 0 else 1.0
    random_init = atk.random_start if isinstance(atk, PGD) else False
    gen = torch.Generator(device=x.device).manual_seed(a.seed)
    with eval_mode(a.model):
        out = gradient_attack(a.model, x, Criterion(y), eps=r.view(-1, 1, 1, 1), steps=steps,
                              step_size=(rel * r).view(-1, 1, 1, 1), norm=atk.norm,
                              random_init=random_init, generator=gen, check_success=True)
    assert out.success is not None
    missed = float((~out.success).float().mean())
    a.add("active_test", "flag" if missed > tol else "pass", missed, tol,
          f"the attack missed {missed:.3f} of {int(valid.sum())} adversarial examples known to "
          f"exist (median radius {float(r.median()):.3g}, {atk.norm} norm)",
          "the attack fails on a problem with a known solution: its gradients or its "
          "settings (steps, step size) are not up to this model")


def audit_gradient_masking(model: nn.Module, data: ImageDataset, attack: Attack, *,
                           epsilons: Sequence[float] | None = None,
                           surrogate: nn.Module | None = None, n_images: int = 200,
                           tolerance: float = 0.03, per_example_tolerance: float = 0.01,
                           checks: Sequence[str] | None = None, batch_size: int = 256,
                           device: torch.device | str = "cpu", seed: int = 0,
                           square_queries: int = 500) -> pd.DataFrame:
    """Audit ``attack`` on ``model`` for the signs of gradient masking.

    Args:
        model: the classifier (pixels in [0, 1] in, logits out).
        data: images to audit on; a class-balanced subset of ``n_images`` is used (the
            first ``n_images`` where some class is too rare for that).
        attack: the attack whose numbers are to be trusted (e.g. the study's PGD).
        epsilons: the sweep for ``monotonic_in_eps``; default ``eps * (1/4, 1/2, 1, 2)``.
        surrogate: a model for ``beats_transfer`` (skipped without one).
        n_images: size of the subset.
        tolerance: accuracy difference (fraction of images) above which a check flags.
        per_example_tolerance: fraction of images above which per-example checks
            (noise, transfer, black box, zero gradients) flag.
        checks: which checks to run (default all of :data:`AUDIT_CHECKS`).
        batch_size: images per batch.
        device: where to run.
        seed: randomness of the attacks and the subset.
        square_queries: query budget of the Square attack of ``beats_black_box``.

    Returns:
        One row per check: ``check, status ("pass" | "flag" | "skipped"), attack, norm, eps,
        value, threshold, evidence, suggestion``.
    """
    wanted = list(AUDIT_CHECKS if checks is None else checks)
    unknown = [c for c in wanted if c not in AUDIT_CHECKS]
    if unknown:
        raise ConfigError(f"unknown audit checks {unknown}; known: {', '.join(AUDIT_CHECKS)}.")
    if not isinstance(attack, Attack):
        raise ConfigError(f"attack must be a robustlens attack; received {type(attack).__name__}.")
    device = torch.device(device)
    model.to(device)
    counts = torch.bincount(data.labels, minlength=data.num_classes)
    per_class = min(math.ceil(n_images / max(data.num_classes, 1)), int(counts.min()))
    if per_class >= 1 and per_class * data.num_classes >= min(n_images, len(data)) // 2:
        idx = class_balanced_indices(data.labels, per_class, seed, data.num_classes)[:n_images]
    else:  # some class is missing or rare: the first images instead
        idx = torch.arange(min(n_images, len(data)))
    x, y = data.images[idx].to(device), data.labels[idx].to(device)
    eps = float(attack.eps)
    if epsilons is None:
        epsilons = [eps * f for f in (0.25, 0.5, 1.0, 2.0)] if math.isfinite(eps) else []
    with eval_mode(model):
        a = _Auditor(model, x, y, attack, batch_size, seed, data.num_classes)
        runners: dict[str, Callable[[], None]] = {
            "monotonic_in_eps": lambda: _check_monotonic(a, epsilons, tolerance)
            if epsilons else a.skip("monotonic_in_eps", "no finite eps to sweep"),
            "unbounded_attack": lambda: _check_unbounded(a),
            "iterative_vs_single_step": lambda: _check_iterative(a, tolerance),
            "more_iterations": lambda: None,
            "more_restarts": lambda: _check_convergence(a, tolerance),
            "beats_random_noise": lambda: _check_noise(a, per_example_tolerance),
            "beats_transfer": lambda: _check_transfer(a, surrogate, per_example_tolerance),
            "beats_black_box": lambda: _check_black_box(a, square_queries,
                                                        per_example_tolerance),
            "stochastic_without_eot": lambda: _check_stochastic(a, tolerance),
            "fixed_noise": lambda: None,
            "zero_gradients": lambda: _check_zero_gradients(a, per_example_tolerance),
            "active_test": lambda: _check_active(a, tolerance),
        }
        # paired checks run together
        for pair in (("more_iterations", "more_restarts"),
                     ("stochastic_without_eot", "fixed_noise")):
            if any(c in wanted for c in pair):
                wanted += [c for c in pair if c not in wanted]
        for check in AUDIT_CHECKS:
            if check in wanted:
                runners[check]()
    table = pd.DataFrame(a.rows, columns=list(AUDIT_COLUMNS))
    return table[table["check"].isin(wanted)].reset_index(drop=True)
