"""The gradient-masking audit as a study analysis: ``[analyses.audit]``.

Wrapping :func:`robustlens.evaluation.audit.audit_gradient_masking`, plus the black-box check
at every eps of the study (:func:`robustlens.evaluation.black_box_check`)::

    [analyses.audit]
    attack = "pgd"              # the white-box attack audited: "pgd", "fgsm", "apgd", "apgd_t",
                                # "deepfool" or "autoattack" (the cascade's white-box stages)
    norm = "inf"                # "inf", "2" or "1"
    eps = 0.0                   # 0: the study's largest eps of that norm
    steps = 20
    restarts = 1
    eot_samples = 1
    n_images = 200
    tolerance = 0.03
    per_example_tolerance = 0.01
    queries = 500               # Square's budget in the audit's own black-box check

The audit runs its own attacks on the study's first ``n_images`` images when the tables are
asked for. The black-box check at every eps needs no attack of its own: it reads the study's
conditions (one small row per image x condition), and flags a (norm, eps) where a black-box
attack of the study (Square, transfer, substitute, or the Square stage of an AutoAttack
cascade) broke more than ``per_example_tolerance`` of the images that every white-box attack
run there failed on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from robustlens.attacks import APGD, FGSM, PGD, Attack, AutoAttack, DeepFool
from robustlens.data.dataset import ImageDataset
from robustlens.errors import ConfigError
from robustlens.evaluation import attack_components, attack_kind, black_box_check, resolved_stages
from robustlens.evaluation.audit import audit_gradient_masking
from robustlens.evaluation.black_box import Kind
from robustlens.models import model_device
from robustlens.study.analyses.contract import (
    AnalysisBatch,
    AnalysisOptions,
    CleanBatch,
    StudyAnalysis,
    choice,
    condition_key,
    condition_str,
    count,
    number,
    option,
    register_analysis,
)

__all__ = ["AUDIT_ATTACKS", "AuditAnalysis", "AuditOptions"]

AUDIT_ATTACKS: tuple[str, ...] = ("pgd", "fgsm", "apgd", "apgd_t", "deepfool", "autoattack")
"""The white-box attack types ``[analyses.audit]`` can audit (the study's attack types)."""

_DEFAULT_EPS = {"inf": 8 / 255, "2": 0.5, "1": 10.0}


@dataclass(frozen=True)
class AuditOptions(AnalysisOptions):
    """Options of ``[analyses.audit]``.

    Attributes:
        attack: the white-box attack audited, one of :data:`AUDIT_ATTACKS`
            (``"autoattack"``: the white-box stages of the AutoAttack cascade the model gets,
            APGD-CE and APGD-T among them, without Square).
        norm: ``"inf"``, ``"2"`` or ``"1"`` (FGSM: ``"inf"``; DeepFool: ``"inf"`` or ``"2"``).
        eps: the audit's radius in pixel units (0: the study's largest eps of ``norm``).
        steps: iterations of the attack (APGD, PGD, DeepFool, the cascade's APGD stages).
        restarts: random restarts (PGD, APGD).
        eot_samples: gradient samples per step (> 1 for stochastic models).
        n_images: how many of the study's first images are audited.
        tolerance: the accuracy gap counted as a warning sign.
        per_example_tolerance: the fraction of images above which the per-example checks
            (noise, black box, zero gradients, and the black-box check at every eps) flag.
        queries: query budget of the Square attack of the audit's own black-box check.
        seed: the attacks' seed.
    """

    attack: str = option("pgd", choice(*AUDIT_ATTACKS))
    norm: str = option("inf", choice("inf", "2", "1"))
    eps: float = option(0.0, number(0, 1e6, hint=" (0: the study's largest eps)"))
    steps: int = option(20, count(1))
    restarts: int = option(1, count(1))
    eot_samples: int = option(1, count(1))
    n_images: int = option(200, count(1))
    tolerance: float = option(0.03, number(0, 1))
    per_example_tolerance: float = option(0.01, number(0, 1))
    queries: int = option(500, count(1))
    seed: int = option(0, count(0))

    def __post_init__(self) -> None:
        try:
            audited_attack(self, _DEFAULT_EPS[self.norm])
        except ConfigError as err:
            raise ConfigError(f"[analyses.audit]: attack {self.attack!r} with norm {self.norm!r}: {err}") from None


def audited_attack(options: AuditOptions, eps: float, model: nn.Module | None = None,
                   images: torch.Tensor | None = None) -> Attack:
    """The attack ``[analyses.audit]`` audits, at ``eps``.

    Args:
        options: the audit's options.
        eps: the radius in pixel units.
        model: the model audited (``"autoattack"``: decides the version of the cascade).
        images: a few of its images (B, C, H, W), for the same purpose.
    """
    o = options
    if o.attack == "fgsm":
        if o.norm != "inf":
            raise ConfigError(f"FGSM is an L-inf attack; received norm {o.norm!r}. Use attack = 'pgd' or "
                              "'apgd' for other norms.")
        return FGSM(eps, eot_samples=o.eot_samples, seed=o.seed)
    if o.attack == "pgd":
        return PGD(eps, steps=o.steps, norm=o.norm, restarts=o.restarts,  # type: ignore[arg-type]
                   eot_samples=o.eot_samples, seed=o.seed)
    if o.attack in ("apgd", "apgd_t"):
        extra: dict[str, Any] = {"loss": "dlr", "targeted": "top"} if o.attack == "apgd_t" else {}
        return APGD(eps, o.norm, steps=o.steps, restarts=o.restarts,  # type: ignore[arg-type]
                    eot_samples=o.eot_samples, seed=o.seed, **extra)
    if o.attack == "deepfool":
        return DeepFool(o.norm, steps=o.steps, eps=eps, eot_samples=o.eot_samples)  # type: ignore[arg-type]
    eot = {"eot_samples": o.eot_samples} if o.eot_samples > 1 else {}
    cascade = AutoAttack(eps, o.norm, steps=o.steps, seed=o.seed, **eot)  # type: ignore[arg-type]
    if model is None or images is None:
        return cascade
    white = tuple(s for s in resolved_stages(cascade, model, images) if attack_kind(s) == "white")
    samples = max(int(getattr(s, "eot_samples", 1)) for s in white)  # what the audit's own checks use
    return AutoAttack(eps, o.norm, version="custom", attacks=white, seed=o.seed,  # type: ignore[arg-type]
                      eot_samples=samples)


_NORMS = ("inf", "2", "1")


@register_analysis
class AuditAnalysis(StudyAnalysis):
    """The gradient-masking audit of :func:`~robustlens.evaluation.audit.audit_gradient_masking`,
    and the black-box check at every eps of the study (:func:`~robustlens.evaluation.black_box_check`)."""

    name = "audit"
    title = "Gradient-masking audit"
    report_text = (
        "The gradient-masking audit: checks that the robust accuracy is not an artefact of "
        "gradients that mislead the attack (accuracy falls with eps and reaches 0 at an "
        "unbounded eps, iterative attacks beat single-step ones, more restarts change little, "
        "attacks beat random noise, transfer and the black-box Square attack, no zero gradients, "
        "EOT for stochastic models). Each row is a check with its status, evidence and a "
        "suggestion; a flag means the accuracy above may overstate the model's robustness until "
        "the suggested stronger evaluation is run. The rows <code>beats_black_box_per_eps</code> "
        "come from the study's own attacks, one per model, norm and eps where both a white-box and "
        "a black-box attack ran (Square, transfer, substitute, or the Square stage of AutoAttack): "
        "<code>count</code> images the black-box attack broke that every white-box attack there "
        "failed on, out of <code>n_images</code>; above the tolerance it is a flag.")
    Options = AuditOptions

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 options: Any = None, **raw: Any) -> None:
        super().__init__(model_name, model, class_names, options, **raw)
        # the study's first n_images images (by position in the data order), with positions
        self._images: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._positions: list[torch.Tensor] = []
        self._max_eps: dict[str, float] = {}
        # the black-box check at every eps: per condition, rows (position, clean_correct,
        # correct, found_by code); found_by names; each label's components and norm
        self._rows: dict[tuple[str, float], list[torch.Tensor]] = {}
        self._found: list[str] = [""]
        self._components: dict[str, dict[str, Kind]] = {}
        self._norms: dict[str, str] = {}

    def update_clean(self, batch: CleanBatch) -> None:
        room = self.options.n_images - batch.offset
        if room > 0:
            self._images.append(batch.images[:room].detach().cpu())
            self._labels.append(batch.labels[:room].detach().cpu())
            self._positions.append(torch.arange(batch.offset, batch.offset + len(self._labels[-1])))

    def _kept(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        positions = torch.cat(self._positions)
        order = positions.argsort()
        return torch.cat(self._images)[order], torch.cat(self._labels)[order], positions[order]

    def _code(self, name: str) -> int:
        if name not in self._found:
            self._found.append(name)
        return self._found.index(name)

    def update(self, batch: AnalysisBatch) -> None:
        if not math.isfinite(batch.eps) or batch.norm not in _NORMS:  # corruptions: their eps is a severity
            return
        self._max_eps[batch.norm] = max(self._max_eps.get(batch.norm, 0.0), float(batch.eps))
        method = batch.method
        if method is None:
            return
        if batch.attack not in self._components:
            stages = resolved_stages(method, self.model, batch.clean.images) \
                if isinstance(method, AutoAttack) else None
            self._components[batch.attack] = attack_components(method, stages)
            self._norms[batch.attack] = batch.norm
        if set(self._components[batch.attack].values()) <= {"other"}:
            return
        y = batch.clean.labels
        found = batch.result.found_by if batch.result is not None else None
        codes = [self._code(f) for f in found] if found is not None else [0] * len(y)
        row = torch.stack([
            torch.arange(batch.clean.offset, batch.clean.offset + len(y)),
            (batch.clean.logits.argmax(1) == y).long().cpu(),
            (batch.logits.argmax(1) == y).long().cpu(),
            torch.tensor(codes, dtype=torch.long)], dim=1)
        self._rows.setdefault((batch.attack, float(batch.eps)), []).append(row)

    def _per_example(self) -> pd.DataFrame:
        frames = []
        for (attack, eps), rows in self._rows.items():
            t = torch.cat(rows).numpy()
            frames.append(pd.DataFrame({
                "example": t[:, 0], "attack": attack, "norm": self._norms[attack], "eps": eps,
                "clean_correct": t[:, 1].astype(bool), "correct": t[:, 2].astype(bool),
                "found_by": [self._found[int(c)] for c in t[:, 3]]}))
        return pd.concat(frames, ignore_index=True)

    def tables(self) -> dict[str, pd.DataFrame]:
        if not self._images:
            return {}
        o = self.options
        eps = float(o.eps) or self._max_eps.get(o.norm, 0.0) or _DEFAULT_EPS[o.norm]
        images, labels, _ = self._kept()
        data = ImageDataset(images, labels, self.class_names)
        device = model_device(self.model)
        attack = audited_attack(o, eps, self.model, images[:2].to(device))
        table = audit_gradient_masking(self.model, data, attack, n_images=o.n_images,
                                       tolerance=o.tolerance, per_example_tolerance=o.per_example_tolerance,
                                       device=device, seed=o.seed, square_queries=o.queries)
        if self._rows:
            per_eps = black_box_check(self._per_example(), self._components, tolerance=o.per_example_tolerance)
            if not per_eps.empty:
                table = pd.concat([table, per_eps], ignore_index=True)
        return {"audit": table}

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "max_eps": dict(self._max_eps),
            "rows": {condition_str(k): torch.cat(r) for k, r in self._rows.items()},
            "found": list(self._found), "norms": dict(self._norms),
            "components": {k: dict(v) for k, v in self._components.items()}}
        if self._images:
            images, labels, positions = self._kept()
            state.update(images=images, labels=labels, positions=positions)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        max_eps = state.get("max_eps", {})
        self._max_eps = dict(max_eps) if isinstance(max_eps, dict) else {"inf": float(max_eps)}
        self._images = [state["images"]] if "images" in state else []
        self._labels = [state["labels"]] if "labels" in state else []
        self._positions = [state["positions"]] if "positions" in state else []
        self._rows = {condition_key(k): [v] for k, v in state.get("rows", {}).items()}
        self._found = list(state.get("found", [""]))
        self._norms = dict(state.get("norms", {}))
        self._components = {k: dict(v) for k, v in state.get("components", {}).items()}

    def merge(self, other: StudyAnalysis) -> None:
        assert isinstance(other, AuditAnalysis)
        self._images += other._images
        self._labels += other._labels
        self._positions += other._positions
        for norm, eps in other._max_eps.items():
            self._max_eps[norm] = max(self._max_eps.get(norm, 0.0), eps)
        remap = torch.tensor([self._code(n) for n in other._found], dtype=torch.long)
        for key, rows in other._rows.items():
            for r in rows:
                r = r.clone()
                r[:, 3] = remap[r[:, 3]]
                self._rows.setdefault(key, []).append(r)
        self._norms.update(other._norms)
        for label, parts in other._components.items():
            self._components.setdefault(label, parts)
