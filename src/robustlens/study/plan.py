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
* time: the first batch run by the run's own code (the clean forward with the layers
  recorded, each attack x eps with the run's early exit, the fresh forwards of the
  adversarial images, a stochastic model's expected-accuracy passes, every analysis fed,
  in the parts the memory probe chose), scaled by the number of batches; plus the model's
  build, its probes and each analysis' tables on that batch's sums; plus the study's end
  (comparisons, the tables written, every figure and the report), built once on those
  tables. An estimate: the first batch also pays warm-up costs, so it errs high.
* peak memory: measured while each model runs its batch and makes its tables, and while
  the report is built: on CUDA ``torch.cuda.max_memory_allocated`` (the report, on the host,
  by the resident high-water mark), on Linux CPUs the process' resident high-water mark
  (``VmHWM``, reset before each model and before the report), which counts the interpreter
  and libraries too; elsewhere the memory probe's figures, an estimate.
* batch size that fits: the largest batch the memory budget (``[study].max_memory``, or a
  share of the device's memory) holds, measured by the probe the run itself makes
  (:meth:`~robustlens.study.batch.ModelWork.fit`; its passes are counted); a config batch
  above it runs in parts of that size, in the plan's timed batch as in the run.
* disk: trained models' weights in the cache and the per-example rows (estimates), plus the
  tables, figures and report the plan's own report took (measured on one batch's tables).

The ``[photos]`` part runs as in the run, with its own (pretrained) weights, as part of the
study's end; where they cannot be loaded it is left out, with a warning.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from robustlens.attacks import Attack, eval_mode
from robustlens.data import Dataset
from robustlens.errors import RobustlensError
from robustlens.evaluation import expected_correct
from robustlens.study.analyses import StudyAnalysis
from robustlens.study.batch import ModelState, ModelWork, accuracy_rows, batch_seeds, run_part
from robustlens.study.config import StudyConfig
from robustlens.study.memory import default_budget, peak_since_reset, release_free_memory, reset_peak

log = logging.getLogger(__name__)

__all__ = ["PassCounter", "StudyPlan", "count_passes", "plan_study"]


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
        data_seconds: reading the dataset's index (an ImageNet folder's file list).
        report_seconds: the study's end: comparisons, tables written, figures and report.
        report_peak_memory_bytes: the process' peak while the report is built (host memory).
        report_memory_measured: False where that peak is an estimate (the tables' size).
        report_disk_bytes: what the tables, figures and report took on disk.
    """

    rows: pd.DataFrame
    models: pd.DataFrame
    device: str
    data_seconds: float = 0.0
    report_seconds: float = 0.0
    report_peak_memory_bytes: int = 0
    report_memory_measured: bool = False
    report_disk_bytes: int = 0

    @property
    def seconds(self) -> float:
        """The whole run's predicted time: the data's index, every model and the report."""
        return self.data_seconds + float(self.models["seconds"].sum()) + self.report_seconds

    @property
    def peak_memory_bytes(self) -> int:
        """The run's predicted peak: the largest model's, or the report's where that is larger
        (on CUDA the models' figure is device memory and the report's host memory: the larger
        of the two is not one device's peak, so only the models' is given)."""
        models = int(self.models["peak_memory_bytes"].max()) if len(self.models) else 0
        return models if self.device.startswith("cuda") else max(models, self.report_peak_memory_bytes)

    @property
    def disk_bytes(self) -> int:
        """The run directory's and the model cache's predicted growth."""
        return int(self.models["disk_bytes"].sum()) + self.report_disk_bytes

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
        peak = _size(self.report_peak_memory_bytes) + ("" if self.report_memory_measured else " (est.)")
        lines += ["", f"Report (photos, comparisons, tables, figures): about {_duration(self.report_seconds)}, peak "
                  f"{peak} of host memory, {_size(self.report_disk_bytes)} on disk."]
        lines += ["", f"Total: {int(self.models['forward'].sum())} forward and "
                  f"{int(self.models['backward'].sum())} backward image passes, about {_duration(self.seconds)}, "
                  f"peak {_size(self.peak_memory_bytes)}, about {_size(self.disk_bytes)} on disk."]
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


def _measure(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, dev: torch.device,
             seed: int, n_passes: int) -> tuple[int, int]:
    """Passes (forward, backward) of one attack unit on one batch (or part) with early exit off:
    the attack, the fresh forward of the adversarial images and a stochastic model's
    expected-accuracy passes."""
    generator = torch.Generator(device=dev).manual_seed(seed)
    with eval_mode(model), count_passes(model) as counted:
        result = attack.run(model, x, y, generator=generator, early_stop=False)
        with torch.inference_mode():
            model(result.adversarial)
        if n_passes > 1:
            expected_correct(model, result.adversarial, y, n_passes)
    return counted.forward, counted.backward


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _mark(marks: list[tuple[float, int, int]], counted: PassCounter, dev: torch.device) -> None:
    _sync(dev)
    marks.append((time.perf_counter(), counted.forward, counted.backward))


def _timed_batch(work: ModelWork, state: ModelState, x: torch.Tensor, y: torch.Tensor, part: int
                 ) -> tuple[list[float], list[tuple[int, int]]]:
    """Run the first batch as the run does (in parts of ``part`` images, the run's own code),
    timing each unit: seconds per unit (clean, then each attack x eps) summed over the parts,
    and the passes (forward, backward) of each unit on the first part."""
    seconds = [0.0] * (1 + len(work.attacks))
    first: list[tuple[int, int]] = []
    for j, start in enumerate(range(0, len(x), part)):
        marks: list[tuple[float, int, int]] = []
        with count_passes(work.model) as counted:
            mark = functools.partial(_mark, marks, counted, work.device)
            mark()
            run_part(work, state, x[start:start + part], y[start:start + part],
                     batch_seeds(work.seed, 0, start), j, start, mark, mark)
        for u in range(len(marks) - 1):
            seconds[u] += marks[u + 1][0] - marks[u][0]
        if j == 0:
            first = [(marks[u + 1][1] - marks[u][1], marks[u + 1][2] - marks[u][2]) for u in range(len(marks) - 1)]
    return seconds, first


def _tables(analyses: list[StudyAnalysis], name: str, into: dict[str, dict[str, list[pd.DataFrame]]]) -> float:
    """Every analysis' tables on the sums held (one batch's), kept ``into`` as the run keeps them
    for its report; returns their seconds."""
    t0 = time.perf_counter()
    for analysis in analyses:
        try:
            tables = analysis.tables()
        except Exception:  # noqa: BLE001  (one batch may be too little for a table; the run decides)
            continue
        for tname, df in tables.items():
            df = df.copy()
            df.insert(0, "model", name)
            into.setdefault(analysis.name, {}).setdefault(tname, []).append(df)
    return time.perf_counter() - t0


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _report_cost(config: StudyConfig, dev: torch.device, accuracy: list[dict[str, Any]],
                 model_rows: list[dict[str, Any]], tables: dict[str, dict[str, list[pd.DataFrame]]]
                 ) -> tuple[float, int, bool, int]:
    """Build the run's end (the photos part, the model comparisons, the tables written, the
    report) on the timed batches' tables, in a temporary run directory: seconds, peak host memory (bytes;
    resident high-water mark where it can be reset, else the tables' size), whether it was
    measured, and the bytes the run directory's tables, figures and report took."""
    import tempfile

    import tomli_w

    from robustlens.report import build_report
    from robustlens.study.runner import (  # noqa: PLC0415  (one definition)
        _compare_models,
        _config_dict,
        _photos_part,
        _Run,
    )

    if not accuracy:
        return 0.0, 0, False, 0
    with tempfile.TemporaryDirectory(prefix="robustlens_plan_") as tmp:
        root = Path(tmp)
        for sub in ("results", "figures"):
            (root / sub).mkdir()
        (root / "config.toml").write_text(tomli_w.dumps(_config_dict(config)), encoding="utf-8")
        run = _Run(config, root, root / "cache", dev, False, None)
        run.accuracy, run.model_rows, run.analysis_tables = accuracy, model_rows, tables
        run.manifest["status"] = "complete"
        held = sum(int(df.memory_usage(deep=True).sum()) for per in tables.values()
                   for frames in per.values() for df in frames)
        release_free_memory()
        measured = reset_peak(torch.device("cpu"))
        t0 = time.perf_counter()
        if config.photos is not None:
            try:
                _photos_part(run)
            except RobustlensError as err:  # its weights not at hand yet: planned without it
                log.warning("the plan leaves out [photos]: %s", err)
        try:
            if config.comparisons:
                _compare_models(run)
            run.release_tables()
            run.write_manifest()
            build_report(root)
        except Exception as err:  # noqa: BLE001  (one batch's tables may be too few; the run decides)
            log.warning("the plan could not build the study's end on one batch's tables (%s: %s); its time "
                        "and memory are counted up to there", type(err).__name__, err)
        seconds = time.perf_counter() - t0
        peak = (peak_since_reset(torch.device("cpu")) or held) if measured else held
        return seconds, peak, measured, _dir_bytes(root)


def plan_study(config: StudyConfig, *, data: Dataset | None = None, device: str | None = None) -> StudyPlan:
    """Count and time what :func:`~robustlens.study.run_study` would do, without doing it.

    Each model runs the run's own code on the first batch: the stochasticity probe, the
    memory probe (and so the same split of a batch that would not fit), the batch in the
    run's parts, every analysis fed and its tables made. After the last model, the study's
    end (comparisons, the tables written, the report) is built on those tables in a temporary
    folder, timed and measured.

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
    t0 = time.perf_counter()
    data = data if data is not None else config.data.build()
    data_s = time.perf_counter() - t0  # the run reads its data's index once, as here
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
    accuracy: list[dict[str, Any]] = []
    tables: dict[str, dict[str, list[pd.DataFrame]]] = {}
    surrogates: dict[str, nn.Module] = {}
    budget = config.max_memory if config.max_memory is not None else default_budget(dev)
    for mc in config.models:
        _sync(dev)
        release_free_memory()  # as the run does before each model
        measured = reset_peak(dev)
        t0 = time.perf_counter()
        options = dict(mc.options)
        options.pop("pretrained", None)
        model = build_seeded(mc.architecture, options, mc.seed).to(dev).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        build_s = time.perf_counter() - t0
        for a in config.attacks:
            if a.surrogate and a.surrogate not in surrogates:
                smc = next(m for m in config.models if m.name == a.surrogate)
                sopts = dict(smc.options)
                sopts.pop("pretrained", None)
                surrogates[a.surrogate] = build_seeded(smc.architecture, sopts, smc.seed).to(dev).eval()
        attacks: list[tuple[str, float, Attack]] = [
            (a.name, float(eps), a.build(eps, surrogates[a.surrogate] if a.surrogate else None))
            for a in config.attacks for eps in a.eps]
        analyses = _analyses(config, mc.name, model, tuple(data.class_names))
        state = ModelState([("clean", 0.0)] + [(name, eps) for name, eps, _ in attacks], data.num_classes,
                           analyses)
        t0 = time.perf_counter()
        with count_passes(model) as setup:  # the stochasticity probe and the memory probe
            work = ModelWork.prepare(model, data, attacks, analyses, dev, config)
            k = min(2, bs, n)
            with eval_mode(model):
                fit = work.fit(x[:k], y[:k], budget, state)
        setup_s = time.perf_counter() - t0
        part = fit.batch_size if 1 <= fit.batch_size < bs else bs
        unit_s, first = _timed_batch(work, state, x, y, part)
        accuracy.extend(accuracy_rows(mc.name, work, state))
        n_passes = work.n_passes
        own = 1 + (n_passes if n_passes > 1 else 0)  # the fresh pass (+ expected-accuracy passes)
        rows.append({"model": mc.name, "attack": "clean", "eps": 0.0, "norm": "", "n_images": n,
                     "forward": own * n, "backward": 0, "early_exit": False, "exact": True,
                     "seconds": unit_s[0] * scale})
        model_forward, model_backward = setup.forward + own * n, setup.backward
        seconds = build_s + load_s + setup_s + unit_s[0] * scale
        # every part of every batch the run will run: passes = per image x images + per part
        parts = [min(part, b - s) for b in sizes for s in range(0, b, part)]
        x0, y0 = x[:part], y[:part]
        for u, (a_name, eps, attack) in enumerate(attacks, start=1):
            f1, b1 = first[u] if not work.early_stop else _measure(attack, model, x0, y0, dev, config.seed,
                                                                   n_passes)
            if len(x0) >= 4:
                half = len(x0) // 2
                f2, b2 = _measure(attack, model, x0[:half], y0[:half], dev, config.seed, n_passes)
                fa, ba = (f1 - f2) / (len(x0) - half), (b1 - b2) / (len(x0) - half)
                fc, bc = f1 - fa * len(x0), b1 - ba * len(x0)
            else:
                fa, ba, fc, bc = f1 / len(x0), b1 / len(x0), 0.0, 0.0
            forward = round(sum(fa * b + fc for b in parts))
            backward = round(sum(ba * b + bc for b in parts))
            exact = not work.early_stop and type(attack).__name__ not in ("DeepFool", "FAB")
            rows.append({"model": mc.name, "attack": a_name, "eps": eps, "norm": attack.norm,
                         "n_images": n, "forward": forward, "backward": backward,
                         "early_exit": work.early_stop, "exact": exact, "seconds": unit_s[u] * scale})
            model_forward += forward
            model_backward += backward
            seconds += unit_s[u] * scale
        tables_s = _tables(analyses, mc.name, tables)
        seconds += tables_s
        seen = peak_since_reset(dev) if measured else None
        if seen is not None:
            peak = seen
        else:  # an estimate: the model, the probe's in-use bytes and one batch at the probe's rate
            peak, measured = int(fit.in_use + min(fit.per_image * part, 2**62)), False
        del work, state, analyses
        disk = 0
        if mc.train is not None:
            disk += sum(p.numel() * p.element_size() for p in model.parameters())
        if "per_example" in config.analyses:
            disk += 60 * n * sum(len(a.eps) for a in config.attacks)
        model_rows.append({"model": mc.name, "n_images": n, "n_batches": n_batches, "forward": model_forward,
                           "backward": model_backward, "seconds": seconds, "build_seconds": build_s,
                           "end_seconds": tables_s, "peak_memory_bytes": peak,
                           "memory_measured": measured, "disk_bytes": disk,
                           "memory_budget_bytes": fit.budget, "batch_size_fits": fit.batch_size,
                           "split": 1 <= fit.batch_size < bs})
        del model
    info = [{"model": mc.name, "architecture": mc.architecture} for mc in config.models]
    report_s, report_peak, report_measured, report_disk = _report_cost(config, dev, accuracy, info, tables)
    return StudyPlan(pd.DataFrame(rows), pd.DataFrame(model_rows), str(dev), data_seconds=data_s,
                     report_seconds=report_s,
                     report_peak_memory_bytes=report_peak, report_memory_measured=report_measured,
                     report_disk_bytes=report_disk)
