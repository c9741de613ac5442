"""What a study will do, before it does it: ``robustlens study CONFIG --plan``.

:func:`plan_study` counts, per model and attack x eps, the images, forward and backward
passes (in images through the model: a batch of 50 is 50), times one real batch on this
device and predicts the run's time, peak memory and disk. Nothing is trained and nothing is
written: each model is its architecture with fresh weights (pass counts and compute do not
depend on the weights).

How exact each figure is:

* passes: counted by hooks while the attack runs on one real batch with early exit off,
  then scaled by the number of images. Exact for attacks whose work per image does not
  depend on the weights (FGSM, PGD, EOT and restarts included) when the study runs without
  early exit (a stochastic model, or an analysis recording activations); an upper bound
  with early exit on, and for attacks that stop once they succeed (DeepFool; FAB, whose
  later target classes run only on the images not yet broken within eps).
* time: the timed batch as the run does it (the clean forward with the layers recorded,
  each attack x eps with the run's early exit, the fresh forwards of the adversarial images,
  a stochastic model's expected-accuracy passes, every analysis fed), scaled by the number
  of batches; plus the model's build and each analysis' end-of-run work (its tables and
  figures: renders, saliency maps, bootstraps), timed once on that batch's sums. An
  estimate: the first batch also pays warm-up costs, so it errs high.
* peak memory: measured on the timed batch: on CUDA ``torch.cuda.max_memory_allocated``,
  on Linux CPUs the process' resident high-water mark (``VmHWM``, reset before each model),
  which counts the interpreter and libraries too; elsewhere parameters plus the recorded
  activations, an estimate.
* batch size that fits: the largest batch the memory budget (``[study].max_memory``, or a
  share of the device's memory) holds, measured by the probe the run itself makes
  (:meth:`~robustlens.study.batch.ModelWork.fit`; its passes are counted); a config batch
  above it runs in parts of that size.
* disk: trained models' weights in the cache, the per-example rows (if that analysis is
  on) and the recorded activations kept by no analysis (none): an estimate of the order
  of magnitude, not a byte count.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from robustlens.attacks import eval_mode, is_stochastic
from robustlens.data import Dataset
from robustlens.evaluation import expected_correct
from robustlens.study.analyses import AnalysisBatch, CleanBatch, StudyAnalysis
from robustlens.study.batch import BatchFit, ModelState, ModelWork
from robustlens.study.config import StudyConfig
from robustlens.study.memory import default_budget
from robustlens.validation import check_model_input

__all__ = ["PassCounter", "StudyPlan", "count_passes", "plan_study"]

_PROBE_IMAGES = 2  # the runner's stochasticity probe: two passes of its first images


@dataclass
class PassCounter:
    """Images through a model, forward and backward (see :func:`count_passes`).

    Attributes:
        forward: images passed forward.
        backward: images whose gradient was propagated back through the model.
    """

    forward: int = 0
    backward: int = 0


@contextmanager
def count_passes(model: nn.Module) -> Iterator[PassCounter]:
    """Count images passing through ``model`` forward and backward while the block runs.

    A forward of a (B, ...) batch adds B; a backward through that output adds B. Meta
    tensors are not counted.

    Args:
        model: the module whose calls are counted (the whole classifier).
    """
    counter = PassCounter()

    def on_forward(_module: nn.Module, inputs: tuple, output: object) -> None:
        x = inputs[0] if inputs else None
        if not isinstance(x, torch.Tensor) or x.is_meta:
            return
        b = int(x.shape[0])
        counter.forward += b
        if isinstance(output, torch.Tensor) and output.requires_grad:
            def on_backward(grad: torch.Tensor) -> None:
                counter.backward += b
            output.register_hook(on_backward)

    handle = model.register_forward_hook(on_forward)
    try:
        yield counter
    finally:
        handle.remove()


@dataclass(frozen=True)
class StudyPlan:
    """What a study will run.

    Attributes:
        rows: one row per model x unit (``clean``, each attack x eps): ``model, attack, eps,
            norm, n_images, forward, backward, early_exit, exact, seconds`` (forward and
            backward in images through the model; ``exact`` False: an upper bound).
        models: one row per model: ``model, n_images, n_batches, forward, backward,
            seconds, peak_memory_bytes, memory_measured, disk_bytes, memory_budget_bytes,
            batch_size_fits, split`` (``split``: the config's batch runs in parts of
            ``batch_size_fits`` images).
        device: where it was timed.
    """

    rows: pd.DataFrame
    models: pd.DataFrame
    device: str

    def text(self) -> str:
        """The plan as a plain-text report."""
        lines = [f"Plan (timed on {self.device}; passes in images through the model):", ""]
        lines.append(self.rows.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        lines.append("")
        m = self.models.copy()
        m["peak_memory"] = [_size(b) + ("" if measured else " (est.)")
                            for b, measured in zip(m["peak_memory_bytes"], m["memory_measured"], strict=True)]
        m["disk"] = [_size(b) + " (est.)" for b in m["disk_bytes"]]
        m["time"] = [_duration(s) + " (est.)" for s in m["seconds"]]
        lines.append(m[["model", "n_images", "n_batches", "forward", "backward", "time", "peak_memory",
                        "disk"]].to_string(index=False))
        if "batch_size_fits" in self.models:
            lines.append("")
            for row in self.models.to_dict("records"):
                fits, budget = int(row["batch_size_fits"]), _size(row["memory_budget_bytes"])
                if fits < 1:
                    lines.append(f"{row['model']}: not one image fits the memory budget of {budget}; raise "
                                 "[study].max_memory or record fewer layers.")
                elif row["split"]:
                    lines.append(f"{row['model']}: batch size that fits the memory budget of {budget}: {fits}; "
                                 f"the config's batch is split into parts of {fits} images.")
                else:
                    lines.append(f"{row['model']}: batch size that fits the memory budget of {budget}: {fits}; "
                                 "the config's batch runs whole.")
        total = float(self.models["seconds"].sum())
        lines += ["", f"Total: {int(self.models['forward'].sum())} forward and "
                  f"{int(self.models['backward'].sum())} backward image passes, about {_duration(total)}, "
                  f"about {_size(int(self.models['disk_bytes'].sum()))} on disk."]
        return "\n".join(lines)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _duration(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _analyses(config: StudyConfig, model_name: str, model: nn.Module,
              class_names: tuple[str, ...]) -> list[StudyAnalysis]:
    from robustlens.study.runner import _build_analysis  # noqa: PLC0415  (one definition)

    return [_build_analysis(config, k, model_name, model, class_names) for k in config.analyses]


def _record_layers(analyses: list[StudyAnalysis]) -> list[str] | None:
    sets = [a.layers() for a in analyses]
    if any(s is None for s in sets):
        return None
    return sorted({layer for s in sets for layer in (s or [])})


def _reset_peak_rss() -> bool:
    """Reset this process' resident high-water mark (Linux); False where it cannot be."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    """This process' resident high-water mark in bytes (``VmHWM``; 0 where unknown)."""
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return 0


def _forward(model: nn.Module, x: torch.Tensor, layers: list[str] | None, want_record: bool
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and recorded activations, as the run's forward of a batch."""
    from robustlens.activations import record

    with torch.inference_mode():
        if not want_record:
            return model(x), {}
        with record(model, layers) as rec:
            logits = model(x)
        return logits, dict(rec)


def _measure(attack: object, model: nn.Module, x: torch.Tensor, y: torch.Tensor, dev: torch.device,
             seed: int) -> tuple[int, int]:
    """Passes (forward, backward) of one attack unit on one batch with early exit off, then a
    fresh forward of the adversarial images."""
    generator = torch.Generator(device=dev).manual_seed(seed)
    with eval_mode(model), count_passes(model) as counted:
        result = attack.run(model, x, y, generator=generator, early_stop=False)  # type: ignore[attr-defined]
        with torch.inference_mode():
            model(result.adversarial)
    return counted.forward, counted.backward


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _end_of_run_seconds(analyses: list[StudyAnalysis]) -> float:
    """Seconds of every analysis' tables and figures on the sums held (one batch's), the
    figures drawn as the report draws them (PNG at its resolution)."""
    import io

    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from robustlens.report.figures import FIGURE_DPI

    t0 = time.perf_counter()
    for analysis in analyses:
        try:
            tables = {k: v.assign(model=analysis.model_name) for k, v in analysis.tables().items()}
            for _, figure in type(analysis).figures(tables):
                FigureCanvasAgg(figure).figure.savefig(io.BytesIO(), dpi=FIGURE_DPI, format="png")
                plt.close(figure)
        except Exception:  # noqa: BLE001  (one batch may be too little for a table; the run decides)
            continue
    return time.perf_counter() - t0


def _time_unit(attack: object, model: nn.Module, analyses: list[StudyAnalysis], clean: CleanBatch,
               layers: list[str] | None, want_record: bool, early_exit: bool, n_passes: int, name: str,
               eps: float, dev: torch.device, seed: int) -> tuple[float, int, int]:
    """Seconds of one attack unit on the clean batch as the run does it: the attack with the
    run's early exit, the fresh (recorded) forward, expected-accuracy passes, the analyses fed;
    and the passes (forward, backward) of the attack and the fresh forward."""
    x, y = clean.images, clean.labels
    generator = torch.Generator(device=dev).manual_seed(seed)
    _sync(dev)
    t0 = time.perf_counter()
    with eval_mode(model):
        with count_passes(model) as counted:
            result = attack.run(model, x, y, generator=generator, early_stop=early_exit)  # type: ignore[attr-defined]
            logits, acts = _forward(model, result.adversarial, layers, want_record)
        if n_passes > 1:
            expected_correct(model, result.adversarial, y, n_passes)
        batch = AnalysisBatch(name, eps, clean, result.adversarial, logits, acts,
                              attack.norm, result)  # type: ignore[attr-defined]
        for analysis in analyses:
            analysis.update(batch)
    _sync(dev)
    return time.perf_counter() - t0, counted.forward, counted.backward


def _fit(config: StudyConfig, name: str, model: nn.Module, data: Dataset, x: torch.Tensor, y: torch.Tensor,
         dev: torch.device, early_exit: bool, stochastic: bool,
         surrogates: dict[str, nn.Module]) -> tuple[PassCounter, BatchFit]:
    """The run's memory probe on this model (its passes counted): the batch size that fits."""
    from robustlens.study.runner import _build_analysis  # noqa: PLC0415  (one definition)

    analyses = [_build_analysis(config, k, name, model, data.class_names) for k in config.analyses]
    attacks = [(a.name, eps, a.build(eps, surrogates[a.surrogate] if a.surrogate else None))
               for a in config.attacks for eps in a.eps]
    state = ModelState([("clean", 0.0)] + [(n, e) for n, e, _ in attacks], data.num_classes, analyses)
    layer_sets = [a.layers() for a in analyses]
    layers = None if any(s is None for s in layer_sets) else sorted({v for s in layer_sets for v in (s or [])})
    work = ModelWork(model, attacks, analyses, layers, stochastic, early_exit,
                     config.expected_passes if stochastic else 1, dev, config.seed, config.batch_size)
    budget = config.max_memory if config.max_memory is not None else default_budget(dev)
    k = min(2, config.batch_size, len(x))
    with eval_mode(model), count_passes(model) as counted:
        fit = work.fit(x[:k], y[:k], budget, state)
    return counted, fit


def plan_study(config: StudyConfig, *, data: Dataset | None = None, device: str | None = None) -> StudyPlan:
    """Count and time what :func:`~robustlens.study.run_study` would do, without doing it.

    Args:
        config: a validated study config.
        data: the images used instead of ``config.data``.
        device: overrides ``config.device``.

    Returns:
        The plan (see :class:`StudyPlan`; its :meth:`StudyPlan.text` prints it).
    """
    from robustlens.study.models import build_seeded
    from robustlens.study.runner import resolve_device

    dev = resolve_device(device or config.device)
    data = data if data is not None else config.data.build()
    n = len(data)
    bs = config.batch_size
    n_batches = (n + bs - 1) // bs
    t0 = time.perf_counter()
    x, y = data.get_batch(torch.arange(min(bs, n)))
    load_s = time.perf_counter() - t0  # the run decodes the next batch while this one runs
    sizes = [min(bs, n - i * bs) for i in range(n_batches)]
    x, y = x.to(dev), y.to(dev)
    scale = n / max(len(x), 1)  # batches of the timed one's size that the run amounts to
    rows, model_rows = [], []
    surrogates: dict[str, nn.Module] = {}
    for mc in config.models:
        _sync(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        rss_measured = dev.type != "cuda" and _reset_peak_rss()
        t0 = time.perf_counter()
        options = dict(mc.options)
        options.pop("pretrained", None)
        model = build_seeded(mc.architecture, options, mc.seed).to(dev).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        build_s = time.perf_counter() - t0
        analyses = _analyses(config, mc.name, model, tuple(data.class_names))
        layers = _record_layers(analyses)
        want_record = layers is None or bool(layers)
        with eval_mode(model):
            stochastic = is_stochastic(model, x[:_PROBE_IMAGES])
        early_exit = not stochastic and not want_record
        n_passes = config.expected_passes if stochastic else 1
        # the runner's own forwards, per image: one fresh pass (+ expected-accuracy passes)
        own = 1 + (n_passes if n_passes > 1 else 0)
        _sync(dev)
        t0 = time.perf_counter()
        with eval_mode(model):
            logits, acts = _forward(model, x, layers, want_record)
            if n_passes > 1:
                expected_correct(model, x, y, n_passes)
            clean = CleanBatch(x, y, logits, acts)
            for analysis in analyses:
                analysis.update_clean(clean)
        _sync(dev)
        clean_s = time.perf_counter() - t0
        recorded_bytes = sum(t.numel() * t.element_size() for t in acts.values())
        model_forward = _PROBE_IMAGES * 2 if n else 0
        model_forward += own * n
        model_backward = 0
        rows.append({"model": mc.name, "attack": "clean", "eps": 0.0, "norm": "", "n_images": n,
                     "forward": own * n, "backward": 0, "early_exit": False, "exact": True,
                     "seconds": clean_s * scale})
        seconds = build_s + load_s + clean_s * scale
        if config.attacks:
            # the attacks' input check runs the model once on one image per model and input
            # signature: warm it here, outside the counted passes, and count it once below
            check_model_input(model, x, y)
            model_forward += 1
        for a in config.attacks:
            surrogate = None
            if a.surrogate:
                if a.surrogate not in surrogates:
                    smc = next(m for m in config.models if m.name == a.surrogate)
                    sopts = dict(smc.options)
                    sopts.pop("pretrained", None)
                    surrogates[a.surrogate] = build_seeded(smc.architecture, sopts, smc.seed).to(dev).eval()
                surrogate = surrogates[a.surrogate]
            for eps in a.eps:
                attack = a.build(eps, surrogate)
                unit_s, f1, b1 = _time_unit(attack, model, analyses, clean, layers, want_record, early_exit,
                                            n_passes, a.name, float(eps), dev, config.seed)
                if early_exit:  # the run's passes are fewer: count them without it, the upper bound
                    f1, b1 = _measure(attack, model, x, y, dev, config.seed)
                b_1 = len(x)
                if len(x) >= 4:  # passes = per image x images + per batch (e.g. a stochasticity probe)
                    half = len(x) // 2
                    f2, b2 = _measure(attack, model, x[:half], y[:half], dev, config.seed)
                    b_2 = half
                    fa, ba = (f1 - f2) / (b_1 - b_2), (b1 - b2) / (b_1 - b_2)
                    fc, bc = f1 - fa * b_1, b1 - ba * b_1
                else:
                    fa, ba, fc, bc = f1 / b_1, b1 / b_1, 0.0, 0.0
                forward = round(sum(fa * b + fc for b in sizes)) + (own - 1) * n
                backward = round(sum(ba * b + bc for b in sizes))
                exact = not early_exit and type(attack).__name__ not in ("DeepFool", "FAB")
                rows.append({"model": mc.name, "attack": a.name, "eps": float(eps), "norm": attack.norm,
                             "n_images": n, "forward": forward, "backward": backward,
                             "early_exit": early_exit, "exact": exact, "seconds": unit_s * scale})
                model_forward += forward
                model_backward += backward
                seconds += unit_s * scale
        tables_s = _end_of_run_seconds(analyses)
        seconds += tables_s
        _sync(dev)
        if dev.type == "cuda":
            peak, measured = int(torch.cuda.max_memory_allocated(dev)), True
        elif rss_measured:
            peak, measured = _peak_rss(), True
        else:
            params = sum(p.numel() * p.element_size() for p in model.parameters())
            peak, measured = params + 3 * recorded_bytes + x.numel() * x.element_size() * 4, False
        t0 = time.perf_counter()
        fit_passes, fit = _fit(config, mc.name, model, data, x, y, dev, early_exit, stochastic, surrogates)
        seconds += time.perf_counter() - t0  # the run makes the same probe
        model_forward += fit_passes.forward
        model_backward += fit_passes.backward
        del analyses, clean, acts, logits
        disk = 0
        if mc.train is not None:
            disk += sum(p.numel() * p.element_size() for p in model.parameters())
        if "per_example" in config.analyses:
            disk += 60 * n * sum(len(a.eps) for a in config.attacks)
        disk += 200_000  # tables, figures, report
        model_rows.append({"model": mc.name, "n_images": n, "n_batches": n_batches, "forward": model_forward,
                           "backward": model_backward, "seconds": seconds, "build_seconds": build_s,
                           "end_seconds": tables_s, "peak_memory_bytes": peak,
                           "memory_measured": measured, "disk_bytes": disk,
                           "memory_budget_bytes": fit.budget, "batch_size_fits": fit.batch_size,
                           "split": 1 <= fit.batch_size < bs})
    return StudyPlan(pd.DataFrame(rows), pd.DataFrame(model_rows), str(dev))
