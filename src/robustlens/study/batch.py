"""One batch of a study: the clean forward, every attack x eps, and feeding the analyses.

:class:`ModelWork` is what is fixed for one model (its attacks, the layers recorded, early
exit, the passes of a stochastic model); :func:`run_batch` runs one batch of it into a
:class:`ModelState`, the model's running sums on this worker (accuracy counters and every
analysis' reducers), which is checkpointed for resuming and merged across workers.

A batch too large for the memory budget runs in parts (``micro_batch`` images each), one
after the other, each through the whole pipeline (clean forward, every attack unit, every
analysis), so that only one part's activations are held at a time. The analyses see each
part as a batch of its own: ``offset`` is the part's first image in the data order, and
``index`` counts parts as if every batch were cut the same way (the first part of the first
batch is still index 0; an analysis that keeps "the first batch" keeps that part). The
streaming reducers, the accuracy counts and the per-example rows are the same as in one
batch; a part's random draws (an attack's random start, a stochastic model's noise) come
from seeds of its own (see :func:`batch_seeds`), so only those differ from an uncut batch.
:meth:`ModelWork.fit` measures what one image costs and the largest batch that fits.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustlens.activations import record
from robustlens.attacks import Attack, eval_mode, is_stochastic
from robustlens.data import Dataset
from robustlens.evaluation import AccuracyCounter, accuracy_tables, expected_correct
from robustlens.study.analyses import (
    AnalysisBatch,
    CleanBatch,
    StudyAnalysis,
    condition_key,
    condition_str,
)
from robustlens.study.config import StudyConfig
from robustlens.study.memory import PeakMemory, format_size, is_out_of_memory, release_free_memory

__all__ = ["BatchFit", "ModelState", "ModelWork", "accuracy_rows", "batch_seeds", "run_batch", "run_part"]


def batch_seeds(seed: int, index: int, start: int = 0) -> tuple[int, int, int]:
    """Seeds of batch ``index``: model noise, the global RNG, the attacks' generator.

    Each batch's randomness depends on its index only, so a batch gives the same numbers in a
    resumed run and on whichever worker runs it. A batch run in parts gives each part seeds
    of its own (``start > 0``); its first part keeps the batch's.

    Args:
        seed: the study's seed.
        index: the batch's position in the data order.
        start: the part's first image within the batch (0: the whole batch, or its first part).
    """
    base = seed * 1_000_003 + index
    if start:
        base = (base + start * 0x9E3779B1) % 2**62
    return base, base ^ 0x2545F491, base ^ 0x5DEECE66


@dataclass(frozen=True)
class BatchFit:
    """What one image costs in memory, and the largest batch that fits the budget.

    Attributes:
        budget: the memory budget (bytes on the run's device; see :mod:`robustlens.study.memory`).
        in_use: bytes held before the batch (the model, the data, the running sums).
        per_image: bytes one more image adds at the batch's peak (measured on a probe of
            ``probe_images`` images; it includes the probe's fixed costs, so it errs high).
        batch_size: the largest number of images one batch (or part) may hold (0: not one).
        probe_images: images of the probe.
    """

    budget: int
    in_use: int
    per_image: float
    batch_size: int
    probe_images: int

    def too_small(self, model: str) -> str:
        """The message for a budget in which not one image fits.

        Args:
            model: the model's name in the study.
        """
        need = ("ran out of memory on the device" if math.isinf(self.per_image)
                else f"needs about {format_size(self.per_image)}")
        return (f"{model}: one image does not fit in the memory budget: it {need} "
                f"on top of the {format_size(self.in_use)} already in use, "
                f"and the budget is {format_size(self.budget)}. Raise [study].max_memory (or pass "
                "--max-memory) if the device has more, free memory, or record fewer layers (the "
                "analyses' `layers`).")


_QUICK_FIELDS = ("steps", "restarts", "queries", "rounds", "epochs")


def _quick(attack: Attack) -> Attack:
    """``attack`` with one step, restart, query, round and epoch (and so its inner attack, for a
    transfer attack): the same memory per step, a fraction of the time. A shortened substitute
    is never written to the cache (``cache_dir`` cleared), where no run would reuse it."""
    if not dataclasses.is_dataclass(attack):
        return attack
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(attack):
        if not f.init:
            continue
        value = getattr(attack, f.name)
        if isinstance(value, Attack):
            changes[f.name] = _quick(value)
        elif f.name == "cache_dir" and value is not None:
            changes[f.name] = None
        elif (f.name in _QUICK_FIELDS and isinstance(value, int) and not isinstance(value, bool)
              and value > 1):
            changes[f.name] = 1
    if not changes:
        return attack
    try:
        return dataclasses.replace(attack, **changes)
    except (TypeError, ValueError):
        return attack


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

    def fresh(self) -> ModelState:
        """Empty sums of the same kind (new counters and new, empty analyses)."""
        twins = [type(a)(a.model_name, a.model, a.class_names, a.options) for a in self.analyses]
        return ModelState(list(self.counters), self.num_classes, twins)

    def restore(self, state: dict[str, Any]) -> None:
        """Go back to ``state`` (a :meth:`state_dict`), dropping every update made since.

        The analyses are replaced in place in :attr:`analyses` (a list shared with the
        model's :class:`ModelWork`) by new ones loaded from ``state``.

        Args:
            state: the sums to go back to.
        """
        twin = self.fresh()
        twin.load_state_dict(state)
        self.counters = twin.counters
        self.analyses[:] = twin.analyses
        self.batches_done = twin.batches_done

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

    def fit(self, x: torch.Tensor, y: torch.Tensor, budget: int, state: ModelState) -> BatchFit:
        """Measure one image's memory on a probe and find the largest batch that fits ``budget``.

        The probe runs the whole pipeline of a batch (clean forward, every attack unit with
        one step and one restart and no early exit, every analysis) on ``x`` into fresh,
        discarded sums, and measures the device's peak (:class:`PeakMemory`). Its passes
        through the model are real ones (counted by ``robustlens study --plan``).

        Args:
            x: (k, C, H, W) probe images (1 or 2 are enough).
            y: (k,) their labels.
            budget: the memory budget in bytes.
            state: the model's sums (their kind is copied; they are not changed).
        """
        quick = dataclasses.replace(self, attacks=[(n, e, _quick(a)) for n, e, a in self.attacks],
                                    early_stop=False, analyses=[])
        k = len(x)
        while True:
            probe = state.fresh()
            quick.analyses = probe.analyses
            try:
                with PeakMemory(self.device) as peak:
                    run_batch(quick, probe, x[:k], y[:k], 0)
                break
            except Exception as err:  # noqa: BLE001  (only an allocation failure is caught)
                if not is_out_of_memory(err):
                    raise
            del probe
            if k == 1:
                return BatchFit(budget, peak.start, math.inf, 0, 1)
            k = 1
        del probe
        per_image = max(peak.peak - peak.start, 1) / k
        # 10% of the room is kept free: the allocator's slack and a measurement that errs low
        fits = int(max(0.9 * (budget - peak.start), 0) // per_image)
        return BatchFit(budget, peak.start, per_image, fits, k)


def accuracy_rows(name: str, work: ModelWork, state: ModelState) -> list[dict[str, Any]]:
    """The rows of the accuracy table for model ``name``: one per condition (clean, each attack
    x eps), from the sums in ``state``.

    Args:
        name: the model's name in the study.
        work: the model's fixed settings (its attacks' norms, stochasticity, passes).
        state: the model's sums after its batches.
    """
    norms = {(a_name, eps): attack.norm for a_name, eps, attack in work.attacks}
    summary, _ = accuracy_tables({(a, e, norms.get((a, e), "")): c for (a, e), c in state.counters.items()})
    return [{"model": name, **row, "stochastic": work.stochastic, "n_passes": work.n_passes}
            for row in summary.to_dict("records")]


def _rng_devices(device: torch.device) -> list[torch.device]:
    return [device] if device.type == "cuda" else []


def run_batch(work: ModelWork, state: ModelState, x: torch.Tensor, y: torch.Tensor, index: int,
              tick: Callable[[], None] = lambda: None, micro_batch: int | None = None) -> None:
    """Run batch ``index``: the clean forward, every attack unit, every analysis fed.

    Args:
        work: the model's fixed settings.
        state: the running sums updated.
        x: (B, C, H, W) images of the batch (any device; moved to the work's device one part
            at a time).
        y: (B,) their labels.
        index: the batch's position in the data order (its seeds and image offsets).
        tick: called after each attack unit (progress; once per unit, on the batch's last part).
        micro_batch: run the batch in parts of this many images (``None``: in one piece);
            see the module docstring for what the analyses see.
    """
    size = len(x)
    if micro_batch is None or micro_batch >= size:
        run_part(work, state, x, y, batch_seeds(work.seed, index), index, index * work.batch_size, tick)
        return
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1; received {micro_batch}.")
    parts = -(-work.batch_size // micro_batch)
    for j, start in enumerate(range(0, size, micro_batch)):
        stop = min(start + micro_batch, size)
        run_part(work, state, x[start:stop], y[start:stop], batch_seeds(work.seed, index, start),
                  index * parts + j, index * work.batch_size + start,
                  tick if stop == size else lambda: None)


def run_part(work: ModelWork, state: ModelState, x: torch.Tensor, y: torch.Tensor,
              seeds: tuple[int, int, int], index: int, offset: int, tick: Callable[[], None],
              clean_tick: Callable[[], None] = lambda: None) -> None:
    """Run one batch, or one part of a batch, with the given seeds (see :func:`run_batch`).

    Args:
        work: the model's fixed settings.
        state: the running sums updated.
        x: (B, C, H, W) the part's images.
        y: (B,) their labels.
        seeds: model noise, global RNG and attack seeds (:func:`batch_seeds`).
        index: the part's index, as the analyses see it.
        offset: the part's first image in the data order.
        tick: called after each attack unit.
        clean_tick: called after the clean forward has fed the analyses.
    """
    model, device = work.model, work.device
    x, y = x.to(device), y.to(device)
    noise_seed, rng_seed, attack_seed = seeds
    several = work.n_passes > 1
    with eval_mode(model), torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(rng_seed)
        generator = torch.Generator(device=device).manual_seed(attack_seed)
        logits, acts = work.forward(x, noise_seed)
        state.counters[("clean", 0.0)].update_logits(
            logits, y, expected_correct(model, x, y, work.n_passes) if several else None)
        clean = CleanBatch(x, y, logits, acts, index=index, offset=offset)
        for analysis in work.analyses:
            analysis.update_clean(clean)
        clean_tick()
        for a_name, eps, attack in work.attacks:
            result = attack.run(model, x, y, generator=generator, early_stop=work.early_stop)
            x_adv = result.adversarial
            adv_logits, adv_acts = work.forward(x_adv, noise_seed)
            state.counters[(a_name, eps)].update_logits(
                adv_logits, y, expected_correct(model, x_adv, y, work.n_passes) if several else None)
            batch = AnalysisBatch(a_name, eps, clean, x_adv, adv_logits, adv_acts, attack.norm, result, attack)
            for analysis in work.analyses:
                analysis.update(batch)
            # this unit's activations go before the next unit's attack runs: one unit's at a time
            del batch, adv_acts, adv_logits, x_adv, result
            # and their pages go back to the system, or the next unit's differently shaped
            # allocations pile on top of them (S1 on the full rehearsal: 6.44 -> 5.61 GiB)
            release_free_memory(collect=False)
            tick()
