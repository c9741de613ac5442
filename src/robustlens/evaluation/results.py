"""Robustness evaluation with per-example, per-class and worst-case results.

:func:`evaluate_robustness` attacks a dataset with several attacks (each possibly swept over
eps) and keeps one row per example x attack x eps: whether the model is still right, whether
the attack succeeded, the L-inf and L2 size of the perturbation and, for minimisation attacks
(DeepFool), the minimal norm found. Summary and per-class tables are groupbys of that table,
so they always agree with it (per-class accuracies weighted by class counts give the overall
accuracy exactly).

Early exit: for deterministic models an example already misclassified keeps its adversarial
image and leaves the batch between steps and restarts, so the compute goes to the examples
still standing. Stochastic models (two passes of one image differ) are evaluated without early
exit; their robust accuracy is read from one fresh forward pass, and ``expected_accuracy`` is
the mean accuracy over ``n_passes`` passes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from robustlens.attacks import Attack, RandomNoise, Transfer, eval_mode, is_stochastic
from robustlens.data.dataset import ImageDataset
from robustlens.errors import ConfigError, DataError
from robustlens.evaluation.accuracy import AccuracyCounter, ThreatKey, accuracy_tables, topk_correct
from robustlens.validation import check_model_input

__all__ = ["RobustnessResults", "evaluate_robustness", "eps_sweep", "expected_correct",
           "with_eps", "worst_case", "worst_case_accuracy"]

AttackSpec = Attack | Sequence[Attack]


def with_eps(attack: Attack, eps: float) -> Attack:
    """The same attack at another ``eps`` (pixel units)."""
    if isinstance(attack, Transfer):
        return Transfer(with_eps(attack.attack, eps), attack.surrogate)
    if not dataclasses.is_dataclass(attack):
        raise ConfigError(f"cannot change eps of {type(attack).__name__}: not a dataclass attack.")
    return dataclasses.replace(attack, eps=eps)


def eps_sweep(attack: Attack, epsilons: Sequence[float]) -> list[Attack]:
    """One copy of ``attack`` per eps: an accuracy-vs-eps curve for :func:`evaluate_robustness`."""
    return [with_eps(attack, float(e)) for e in epsilons]


def expected_correct(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     n_passes: int) -> torch.Tensor:
    """Fraction (B,) of ``n_passes`` forward passes that classify each image correctly.

    For a deterministic model this is 0 or 1; for a stochastic one, the per-example
    expected accuracy over its noise.
    """
    hits = torch.zeros(images.shape[0], device=images.device)
    with torch.inference_mode():
        for _ in range(n_passes):
            hits += (model(images).argmax(1) == labels).float()
    return hits / n_passes


@dataclass(frozen=True)
class RobustnessResults:
    """Tidy tables of one evaluation.

    Attributes:
        summary: one row per attack x eps, plus ``attack="clean"``: ``attack, eps, norm,
            n_images, n_correct, accuracy, top5_accuracy, expected_accuracy, n_passes,
            stochastic, early_exit, seconds``.
        per_class: one row per attack x eps x class: ``attack, eps, norm, class_index,
            class_name, n_images, n_correct, accuracy, top5_accuracy, expected_accuracy``.
        per_example: one row per attack x eps x example: ``example, label, attack, eps,
            norm, clean_prediction, clean_correct, prediction, correct, top5_correct,
            success, attack_success, target, linf, l2, l1, minimal_norm, expected_correct,
            found_by``. Top-5 counts a class among the 5 highest logits (every class when a
            model has fewer than 5). ``correct`` and ``success`` come from a fresh forward
            pass of the adversarial image; ``attack_success`` is the attack's own verdict;
            ``target`` is -1 when untargeted; ``minimal_norm`` is ``inf`` where the attack
            failed; ``found_by`` is, for an ensemble (AutoAttack), the component attack whose
            image was kept (``"clean"``: misclassified already, ``""``: none succeeded), else
            ``""``.
        stochastic: whether the model was detected as stochastic.
    """

    summary: pd.DataFrame
    per_class: pd.DataFrame
    per_example: pd.DataFrame
    stochastic: bool

    def worst_case(self) -> pd.DataFrame:
        """Per-example worst case over attacks: see :func:`worst_case`."""
        return worst_case(self.per_example)


def _flatten(attacks: Mapping[str, AttackSpec]) -> list[tuple[str, Attack]]:
    out: list[tuple[str, Attack]] = []
    for label, spec in attacks.items():
        items = [spec] if isinstance(spec, Attack) else list(spec)
        for a in items:
            if not isinstance(a, Attack):
                raise ConfigError(f"attacks[{label!r}] must be an attack or a list of attacks; "
                                  f"received {type(a).__name__}.")
            out.append((label, a))
    labels = [label for label, a in out if a.norm == "none"]
    if len(set(labels)) != len(labels):  # a corruption has no eps (nan): one severity per label
        raise ConfigError("a corruption has no eps to sweep, so each label may hold one corruption at one "
                          f"severity; received several under {sorted(set(labels))}. Give each severity its "
                          "own label, e.g. {'gaussian_noise_3': Corruption('gaussian_noise', severity=3)}.")
    keys = [(label, float(a.eps)) for label, a in out]
    if len(set(keys)) != len(keys):
        raise ConfigError("each attack label may list every eps once; received duplicates in "
                          f"{sorted(keys)}.")
    return out


def _noise_baselines(attacks: list[tuple[str, Attack]], seed: int) -> list[tuple[str, Attack]]:
    sizes = sorted({(a.norm, float(a.eps)) for _, a in attacks
                    if math.isfinite(a.eps) and a.eps > 0 and not isinstance(a, RandomNoise)})
    return [("noise" + ("_l2" if norm == "2" else ""), RandomNoise(eps, norm, seed=seed))
            for norm, eps in sizes]


def evaluate_robustness(model: nn.Module, data: ImageDataset, attacks: Mapping[str, AttackSpec],
                        *, batch_size: int = 256, device: torch.device | str = "cpu",
                        early_exit: bool | None = None, n_passes: int = 1,
                        noise_baseline: bool = False, seed: int = 0,
                        generator: torch.Generator | None = None) -> RobustnessResults:
    """Attack every image with every attack and keep per-example results.

    Args:
        model: any classifier taking pixels in [0, 1].
        data: the images to attack.
        attacks: label -> an attack, or a list of the same attack at several eps (see
            :func:`eps_sweep`); the label names the rows.
        batch_size: images per batch.
        device: where to run.
        early_exit: let misclassified examples leave the attack early; ``None``: on for
            deterministic models, off for stochastic ones (a single noisy pass is no
            proof of success).
        n_passes: forward passes averaged for ``expected_accuracy`` (stochastic models;
            ``expected_accuracy == accuracy`` for deterministic ones).
        noise_baseline: add a :class:`~robustlens.attacks.RandomNoise` attack of every
            norm and eps used (labels ``"noise"``, ``"noise_l2"``).
        seed: seed of the attacks' generator when ``generator`` is ``None``.
        generator: randomness for the attacks' random starts and targets.
    """
    if not isinstance(n_passes, int) or n_passes < 1:
        raise ConfigError(f"n_passes must be an integer >= 1; received {n_passes!r}.")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1; received {batch_size!r}.")
    if len(data) == 0:
        raise DataError("the dataset holds no images, so there is no accuracy to measure; check the "
                        "data selection (classes, n_images).")
    device = torch.device(device)
    model.to(device)
    todo = _flatten(attacks)
    if noise_baseline:
        todo += _noise_baselines(todo, seed)
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(seed)
    columns: dict[str, list[torch.Tensor]] = {"example": []}
    found_by: list[str] = []
    labels_all: list[tuple[str, float, str]] = []
    seconds: dict[tuple[str, float], float] = {}
    clean_key: ThreatKey = ("clean", 0.0, "")
    order: list[ThreatKey] = [clean_key] + [(label, float(a.eps), a.norm) for label, a in todo]
    counters = {key: AccuracyCounter(data.num_classes) for key in order}
    stochastic = False
    offset = 0

    def add(label: str, eps: float, norm: str, values: dict[str, torch.Tensor]) -> None:
        labels_all.append((label, eps, norm))
        for k, v in values.items():
            columns.setdefault(k, []).append(v.detach().to("cpu", torch.float64)
                                             if v.is_floating_point() else v.detach().cpu())

    with eval_mode(model):
        for i, (x, y) in enumerate(data.batches(batch_size)):
            x, y = x.to(device), y.to(device)
            if i == 0:
                check_model_input(model, x, y)
                stochastic = is_stochastic(model, x)
                if early_exit is None:
                    early_exit = not stochastic
            several = stochastic and n_passes > 1
            b = x.shape[0]
            index = torch.arange(offset, offset + b)
            offset += b
            with torch.inference_mode():
                clean_logits = model(x)
            clean_pred = clean_logits.argmax(1)
            clean_exp = expected_correct(model, x, y, n_passes) if several else None
            counters[clean_key].update_logits(clean_logits, y, clean_exp)
            for label, attack in todo:
                start = time.perf_counter()
                result = attack.run(model, x, y, generator=generator,
                                    early_stop=bool(early_exit))
                with torch.inference_mode():
                    logits = model(result.adversarial)
                pred = logits.argmax(1)
                key = (label, float(attack.eps))
                seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start
                correct = pred == y
                exp = expected_correct(model, result.adversarial, y, n_passes) if several \
                    else correct.float()
                counters[(label, float(attack.eps), attack.norm)].update_logits(logits, y, exp)
                target = result.targets if result.targets is not None else torch.full_like(y, -1)
                success = ~correct if result.targets is None else pred == result.targets
                add(label, float(attack.eps), attack.norm, {
                    "example": index, "label": y, "clean_prediction": clean_pred,
                    "clean_correct": clean_pred == y, "prediction": pred, "correct": correct,
                    "top5_correct": topk_correct(logits, y),
                    "success": success, "attack_success": result.success, "target": target,
                    "linf": result.linf, "l2": result.l2,
                    "l1": result.l1 if result.l1 is not None
                    else torch.full_like(result.l2, math.nan),
                    "minimal_norm": result.minimal_norm,
                    "expected_correct": exp,
                })
                found_by.extend(result.found_by if result.found_by is not None else [""] * b)
    summary, per_class = accuracy_tables(counters, data.class_names, order)
    summary["n_passes"] = n_passes
    summary["stochastic"] = stochastic
    summary["early_exit"] = bool(early_exit)
    summary["seconds"] = [seconds.get((a, float(e)), 0.0)
                          for a, e in zip(summary["attack"], summary["eps"], strict=True)]
    return RobustnessResults(summary, per_class, _per_example(columns, labels_all, found_by),
                             stochastic)


def _per_example(columns: dict[str, list[torch.Tensor]], keys: list[tuple[str, float, str]],
                 found_by: list[str]) -> pd.DataFrame:
    """The per-example table from the collected batch columns."""
    if not keys:
        return pd.DataFrame(columns=["example", "label", "attack", "eps", "norm", "clean_prediction",
                                     "clean_correct", "prediction", "correct", "top5_correct",
                                     "success", "attack_success", "target", "linf", "l2", "l1",
                                     "minimal_norm", "expected_correct", "found_by"])
    sizes = [len(t) for t in columns["example"]]
    frame = pd.DataFrame({k: torch.cat(v).numpy() for k, v in columns.items()})
    for pos, name in ((2, "attack"), (3, "eps"), (4, "norm")):
        values = [key[pos - 2] for key, n in zip(keys, sizes, strict=True) for _ in range(n)]
        frame.insert(pos, name, values)
    for col in ("example", "label", "clean_prediction", "prediction", "target"):
        frame[col] = frame[col].astype(int)
    frame["found_by"] = found_by
    return frame


def worst_case(per_example: pd.DataFrame) -> pd.DataFrame:
    """Per example, the worst case over every attack of the same norm and eps.

    An example counts as robust at (norm, eps) only if it survives every attack there.

    Args:
        per_example: :attr:`RobustnessResults.per_example` (any subset of its attacks).

    Returns:
        One row per example x norm x eps: ``example, label, norm, eps, n_attacks, correct,
        attacks_succeeded`` (the labels of the attacks that fooled it, comma-separated).
    """
    df = per_example.assign(_fooled=lambda d: ~d["correct"].astype(bool))
    g = df.groupby(["example", "label", "norm", "eps"], sort=True)
    out = g.agg(n_attacks=("attack", "size"), correct=("correct", "all")).reset_index()
    fooled = df[df["_fooled"]].groupby(["example", "norm", "eps"])["attack"] \
        .agg(lambda s: ",".join(sorted(s))).rename("attacks_succeeded")
    out = out.merge(fooled, on=["example", "norm", "eps"], how="left")
    out["attacks_succeeded"] = out["attacks_succeeded"].fillna("")
    out["correct"] = out["correct"].astype(bool)
    return out


def worst_case_accuracy(per_example: pd.DataFrame) -> pd.DataFrame:
    """Robust accuracy under the worst case over attacks: the mean of per-example minima.

    Returns:
        One row per norm x eps: ``norm, eps, n_images, n_correct, accuracy, n_attacks,
        attacks``.
    """
    wc = worst_case(per_example)
    g = wc.groupby(["norm", "eps"], sort=True)
    out = g.agg(n_images=("correct", "size"), n_correct=("correct", "sum")).reset_index()
    out["n_correct"] = out["n_correct"].astype(int)
    out["accuracy"] = out["n_correct"] / out["n_images"]
    attacks = per_example.groupby(["norm", "eps"])["attack"].agg(lambda s: sorted(set(s)))
    keys = list(zip(out["norm"], out["eps"], strict=True))
    out["n_attacks"] = [len(attacks[k]) for k in keys]
    out["attacks"] = [",".join(attacks[k]) for k in keys]
    return out
