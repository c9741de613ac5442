"""One batch of a study: the clean forward, every attack x eps, and feeding the analyses.

:class:`ModelWork` is what is fixed for one model (its attacks, the layers recorded, early
exit, the passes of a stochastic model); :func:`run_batch` runs one batch of it into a
:class:`ModelState`, the model's running sums on this worker (accuracy counters and every
analysis' reducers), which is checkpointed for resuming and merged across workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustlens.activations import record
from robustlens.attacks import Attack, eval_mode, is_stochastic
from robustlens.data import Dataset
from robustlens.evaluation import AccuracyCounter, expected_correct
from robustlens.study.analyses import (
    AnalysisBatch,
    CleanBatch,
    StudyAnalysis,
    condition_key,
    condition_str,
)
from robustlens.study.config import StudyConfig

__all__ = ["ModelState", "ModelWork", "batch_seeds", "run_batch"]


def batch_seeds(seed: int, index: int) -> tuple[int, int, int]:
    """Seeds of batch ``index``: model noise, the global RNG, the attacks' generator.

    Each batch's randomness depends on its index only, so a batch gives the same numbers in a
    resumed run and on whichever worker runs it.

    Args:
        seed: the study's seed.
        index: the batch's position in the data order.
    """
    base = seed * 1_000_003 + index
    return base, base ^ 0x2545F491, base ^ 0x5DEECE66


class ModelState:
    """One model's running sums on this worker: accuracy counts and every analysis' reducers.

    Checkpointed for resuming, and merged across workers on rank 0.
    """

    def __init__(self, keys: list[tuple[str, float]], num_classes: int, analyses: list[StudyAnalysis]) -> None:
        self.num_classes = num_classes
        self.counters = {key: AccuracyCounter(num_classes) for key in keys}
        self.analyses = analyses
        self.batches_done = 0

    def state_dict(self) -> dict[str, Any]:
        return {"batches_done": self.batches_done,
                "counters": {condition_str(k): c.state_dict() for k, c in self.counters.items()},
                "analyses": {a.name: a.state_dict() for a in self.analyses}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches_done = int(state["batches_done"])
        for text, counter_state in state["counters"].items():
            self.counters[condition_key(text)].load_state_dict(counter_state)
        for analysis in self.analyses:
            analysis.load_state_dict(state["analyses"][analysis.name])

    def merge_state(self, state: dict[str, Any]) -> None:
        """Add another worker's sums (its :meth:`state_dict`)."""
        for text, counter_state in state["counters"].items():
            other = AccuracyCounter(self.num_classes)
            other.load_state_dict(counter_state)
            self.counters[condition_key(text)].merge(other)
        for analysis in self.analyses:
            twin = type(analysis)(analysis.model_name, analysis.model, analysis.class_names, analysis.options)
            twin.load_state_dict(state["analyses"][analysis.name])
            analysis.merge(twin)


@dataclass
class ModelWork:
    """What is fixed while one model runs its batches.

    Attributes:
        model: the classifier.
        attacks: (attack label, eps, attack) units.
        analyses: the model's analyses.
        layers: layers recorded (``None``: every leaf; empty: none).
        stochastic: whether two passes of one image differ.
        early_stop: let fooled examples leave the attack (deterministic models whose
            adversarial activations no analysis reads).
        n_passes: forward passes averaged for the expected accuracy (1: deterministic).
        device: where the batches run.
        seed: the study's seed.
        batch_size: images per batch.
    """

    model: nn.Module
    attacks: list[tuple[str, float, Attack]]
    analyses: list[StudyAnalysis]
    layers: list[str] | None
    stochastic: bool
    early_stop: bool
    n_passes: int
    device: torch.device
    seed: int
    batch_size: int

    @classmethod
    def prepare(cls, model: nn.Module, data: Dataset, attacks: list[tuple[str, float, Attack]],
                analyses: list[StudyAnalysis], device: torch.device, config: StudyConfig) -> ModelWork:
        """Decide the layers, stochasticity, early exit and passes of one model.

        Args:
            model: the classifier (on ``device``).
            data: the study's images (two are probed for stochasticity).
            attacks: (attack label, eps, attack) units.
            analyses: the model's analyses.
            device: where the batches run.
            config: the study config (seed, batch size, expected passes).
        """
        layer_sets = [a.layers() for a in analyses]
        layers: list[str] | None
        if any(s is None for s in layer_sets):
            layers = None
        else:
            layers = sorted({layer for s in layer_sets for layer in (s or [])})
        with eval_mode(model), torch.random.fork_rng(devices=_rng_devices(device)):
            torch.manual_seed(config.seed)
            probe, _ = data.get_batch(torch.arange(min(2, len(data))))
            stochastic = is_stochastic(model, probe.to(device))
        # Early exit (an example already misclassified keeps its adversarial image and leaves the
        # batch) saves most of the compute of a robust-accuracy evaluation, but it stops those
        # perturbations early: it is used only when no analysis looks at adversarial activations,
        # and never for a stochastic model (its accuracy is read from a fresh pass).
        want_record = layers is None or bool(layers)
        return cls(model, attacks, analyses, layers, stochastic, not stochastic and not want_record,
                   config.expected_passes if stochastic else 1, device, config.seed, config.batch_size)

    def forward(self, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and recorded activations of ``x``, the model's noise drawn from ``seed``.

        Every pass of one batch (clean, and each attack x eps) starts from the same seed, so a
        stochastic model (a VOneNet) draws the same noise for the clean and adversarial images
        and the comparison measures the perturbation, not the noise.

        Args:
            x: (B, C, H, W) images.
            seed: the batch's noise seed.
        """
        with torch.inference_mode(), torch.random.fork_rng(devices=_rng_devices(self.device)):
            torch.manual_seed(seed)
            if self.layers is not None and not self.layers:
                return self.model(x), {}
            with record(self.model, self.layers) as rec:
                logits = self.model(x)
            return logits, dict(rec)


def _rng_devices(device: torch.device) -> list[torch.device]:
    return [device] if device.type == "cuda" else []


def run_batch(work: ModelWork, state: ModelState, x: torch.Tensor, y: torch.Tensor, index: int,
              tick: Callable[[], None] = lambda: None) -> None:
    """Run batch ``index``: the clean forward, every attack unit, every analysis fed.

    Args:
        work: the model's fixed settings.
        state: the running sums updated.
        x: (B, C, H, W) images of the batch (any device).
        y: (B,) their labels.
        index: the batch's position in the data order (its seeds and image offsets).
        tick: called after each attack unit (progress).
    """
    model, device = work.model, work.device
    x, y = x.to(device), y.to(device)
    noise_seed, rng_seed, attack_seed = batch_seeds(work.seed, index)
    several = work.n_passes > 1
    with eval_mode(model), torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(rng_seed)
        generator = torch.Generator(device=device).manual_seed(attack_seed)
        logits, acts = work.forward(x, noise_seed)
        state.counters[("clean", 0.0)].update_logits(
            logits, y, expected_correct(model, x, y, work.n_passes) if several else None)
        clean = CleanBatch(x, y, logits, acts, index=index, offset=index * work.batch_size)
        for analysis in work.analyses:
            analysis.update_clean(clean)
        for a_name, eps, attack in work.attacks:
            result = attack.run(model, x, y, generator=generator, early_stop=work.early_stop)
            x_adv = result.adversarial
            adv_logits, adv_acts = work.forward(x_adv, noise_seed)
            state.counters[(a_name, eps)].update_logits(
                adv_logits, y, expected_correct(model, x_adv, y, work.n_passes) if several else None)
            batch = AnalysisBatch(a_name, eps, clean, x_adv, adv_logits, adv_acts, attack.norm, result)
            for analysis in work.analyses:
                analysis.update(batch)
            tick()
