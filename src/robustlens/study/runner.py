"""The study runner: models x attacks x eps x analyses -> tables, figures, report.

A run directory holds::

    config.toml         the resolved config (every default filled in)
    manifest.json       library versions, seeds, device, timings, status
    results/*.parquet   tidy tables (accuracy, models, one per analysis table)
    figures/*.png       the report's figures
    report.html         self-contained report

Tables are rewritten after every model, so an error in a later model leaves the finished
models' results on disk.
"""

from __future__ import annotations

import logging
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from robustlens.activations import record
from robustlens.attacks import eval_mode, is_stochastic
from robustlens.data import ImageDataset, class_balanced_indices, load_dataset
from robustlens.errors import ConfigError
from robustlens.evaluation import AccuracyCounter, expected_correct
from robustlens.study.analyses import ANALYSES, AnalysisBatch, CleanBatch, StudyAnalysis
from robustlens.study.config import StudyConfig
from robustlens.study.models import default_cache_dir, obtain_model

__all__ = ["StudyResult", "resolve_device", "run_study"]

log = logging.getLogger(__name__)


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` -> the first CUDA device if there is one, else the CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} requested but CUDA is not available; use 'auto' or 'cpu'.")
    return torch.device(spec)


@dataclass
class StudyResult:
    """Where a study wrote its outputs, and its main tables."""

    run_dir: Path
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def report(self) -> Path:
        return self.run_dir / "report.html"


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)


def _config_dict(config: StudyConfig) -> dict[str, Any]:
    """The resolved config as a TOML-ready dict (no ``None`` values)."""

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if x is not None}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    d = asdict(config)
    d.pop("raw")
    out = {"study": {"name": d["name"], "seed": d["seed"], "batch_size": d["batch_size"],
                     "device": d["device"], "expected_passes": d["expected_passes"],
                     "checkpoint_every": d["checkpoint_every"]},
           "data": d["data"], "models": [], "attacks": [], "analyses": d["analyses"]}
    for m in d["models"]:
        m = {k: v for k, v in m.items() if not (k in ("random", "pretrained", "allow_pickle") and not v)}
        out["models"].append(m)
    for a in d["attacks"]:
        out["attacks"].append({"name": a["name"], "type": a["type"], "eps": list(a["eps"]),
                               **a["options"]})
    return clean(out)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("robustlens", "torch", "torchvision", "numpy", "scipy", "scikit-learn", "pandas",
                "pyarrow", "matplotlib", "safetensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


class _Run:
    """State of one study run (kept private: :func:`run_study` is the entry point)."""

    def __init__(self, config: StudyConfig, run_dir: Path, cache_dir: Path, device: torch.device,
                 progress: bool, config_text: str | None) -> None:
        self.config, self.run_dir, self.cache_dir = config, run_dir, cache_dir
        self.device, self.progress = device, progress
        self.config_text = config_text
        self.results = run_dir / "results"
        self.figures = run_dir / "figures"
        self.accuracy: list[dict[str, Any]] = []
        self.models: dict[str, nn.Module] = {}
        self.model_info: dict[str, dict[str, Any]] = {}
        self.model_rows: list[dict[str, Any]] = []
        self.analysis_tables: dict[str, dict[str, list[pd.DataFrame]]] = {}
        self.manifest: dict[str, Any] = {
            "study": config.name, "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "status": "running", "device": str(device), "seeds": {"study": config.seed,
            "data": config.data.seed, "models": {m.name: m.seed for m in config.models}},
            "versions": _versions(), "timings": {}, "torch_threads": torch.get_num_threads(),
        }
        if device.type == "cuda":
            self.manifest["device_name"] = torch.cuda.get_device_name(device)

    def get_model(self, name: str) -> nn.Module:
        """The study's model ``name`` (obtained once, kept for transfer attacks)."""
        if name not in self.models:
            mc = next(m for m in self.config.models if m.name == name)
            model, info = obtain_model(mc, self.config.data, cache_dir=self.cache_dir, device=self.device,
                                       progress=self.progress)
            for p in model.parameters():
                p.requires_grad_(False)
            self.models[name] = model
            self.model_info[name] = info
        return self.models[name]

    def write_manifest(self) -> None:
        import json

        path = self.run_dir / "manifest.json"
        tmp = path.with_name("manifest.json.tmp")
        tmp.write_text(json.dumps(self.manifest, indent=2, default=str))
        tmp.replace(path)

    def tables(self) -> dict[str, pd.DataFrame]:
        out = {"accuracy": pd.DataFrame(self.accuracy), "models": pd.DataFrame(self.model_rows)}
        for per_analysis in self.analysis_tables.values():
            for name, frames in per_analysis.items():
                out[name] = pd.concat(frames, ignore_index=True)
        return out

    def save_tables(self) -> None:
        for name, df in self.tables().items():
            if not df.empty:
                _write_parquet(df, self.results / f"{name}.parquet")


def _evaluate_model(run: _Run, name: str, model: nn.Module, data: ImageDataset,
                    analyses: list[StudyAnalysis], tick: Callable[[], None]) -> None:
    config = run.config
    layer_sets = [a.layers() for a in analyses]
    layers: list[str] | None
    if any(s is None for s in layer_sets):
        layers = None
    else:
        layers = sorted({layer for s in layer_sets for layer in (s or [])})
    want_record = layers is None or bool(layers)
    counters: dict[tuple[str, float], AccuracyCounter] = {("clean", 0.0): AccuracyCounter(data.num_classes)}
    expected: dict[tuple[str, float], float] = {("clean", 0.0): 0.0}
    attacks = [(a.name, eps, a.build(eps, run.get_model(a.surrogate) if a.surrogate else None))
               for a in config.attacks for eps in a.eps]
    for a_name, eps, _ in attacks:
        counters[(a_name, eps)] = AccuracyCounter(data.num_classes)
        expected[(a_name, eps)] = 0.0
    with eval_mode(model):
        stochastic = is_stochastic(model, data.images[:2].to(run.device))
    # Early exit (an example already misclassified keeps its adversarial image and leaves the
    # batch) saves most of the compute of a robust-accuracy evaluation, but it stops those
    # perturbations early: it is used only when no analysis looks at adversarial activations,
    # and never for a stochastic model (its accuracy is read from a fresh pass).
    early_stop = not stochastic and not want_record
    n_passes = run.config.expected_passes if stochastic else 1
    generator = torch.Generator(device=run.device).manual_seed(config.seed)

    rng_devices = [run.device] if run.device.type == "cuda" else []

    def forward(x: torch.Tensor, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # Every pass of one batch (clean, and each attack x eps) starts from the same seed, so a
        # stochastic model (a VOneNet) draws the same noise for the clean and adversarial images
        # and the comparison measures the perturbation, not the noise.
        with torch.inference_mode(), torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(seed)
            if not want_record:
                return model(x), {}
            with record(model, layers) as rec:
                logits = model(x)
            return logits, dict(rec)

    with eval_mode(model):
        for index, (x, y) in enumerate(data.batches(config.batch_size)):
            x, y = x.to(run.device), y.to(run.device)
            noise_seed = config.seed * 1_000_003 + index
            logits, acts = forward(x, noise_seed)
            counters[("clean", 0.0)].update(logits.argmax(1), y)
            if n_passes > 1:
                expected[("clean", 0.0)] += float(expected_correct(model, x, y, n_passes).sum())
            clean = CleanBatch(x, y, logits, acts)
            for analysis in analyses:
                analysis.update_clean(clean)
            for a_name, eps, attack in attacks:
                result = attack.run(model, x, y, generator=generator, early_stop=early_stop)
                x_adv = result.adversarial
                adv_logits, adv_acts = forward(x_adv, noise_seed)
                counters[(a_name, eps)].update(adv_logits.argmax(1), y)
                if n_passes > 1:
                    expected[(a_name, eps)] += float(expected_correct(model, x_adv, y, n_passes).sum())
                batch = AnalysisBatch(a_name, eps, clean, x_adv, adv_logits, adv_acts, attack.norm, result)
                for analysis in analyses:
                    analysis.update(batch)
                tick()
            tick()
    norms = {(a_name, eps): attack.norm for a_name, eps, attack in attacks}
    for key, counter in counters.items():
        row = counter.result().iloc[0].to_dict()
        row["expected_accuracy"] = expected[key] / max(row["n_images"], 1) if n_passes > 1 else row["accuracy"]
        run.accuracy.append({"model": name, "attack": key[0], "eps": key[1], "norm": norms.get(key, ""),
                             **row, "stochastic": stochastic, "n_passes": n_passes})


def run_study(config: StudyConfig, run_dir: str | Path, *, cache_dir: str | Path | None = None,
              progress: bool = False, config_text: str | None = None,
              device: str | None = None) -> StudyResult:
    """Run a study and write its run directory.

    Args:
        config: a validated study config.
        run_dir: output folder (created; existing result files are overwritten).
        cache_dir: where trained models are cached (default :func:`default_cache_dir`).
        progress: show progress bars.
        config_text: the original config text, kept beside the resolved one.
        device: overrides ``config.device``.
    """
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    for sub in ("results", "figures"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    import tomli_w

    (run_dir / "config.toml").write_text(tomli_w.dumps(_config_dict(config)))
    if config_text is not None:
        (run_dir / "config.original.toml").write_text(config_text)
    run = _Run(config, run_dir, Path(cache_dir) if cache_dir else default_cache_dir(),
               resolve_device(device or config.device), progress, config_text)
    run.write_manifest()
    start = time.perf_counter()
    try:
        t0 = time.perf_counter()
        full = load_dataset(config.data.dataset, config.data.split, config.data.root,
                            resize=config.data.resize, crop=config.data.crop)
        if config.data.ds_factor > 1:  # VOneNet's DS_factor: every k-th image of the split
            full = full.subset(torch.arange(0, len(full), config.data.ds_factor))
        if config.data.n_per_class is not None:
            full = full.subset(class_balanced_indices(full.labels, config.data.n_per_class,
                                                      config.data.seed, full.num_classes))
        data = full
        run.manifest["data"] = {"name": data.name, "n_images": len(data),
                                "n_per_class": config.data.n_per_class}
        run.manifest["timings"]["data_s"] = time.perf_counter() - t0
        n_units = sum(len(a.eps) for a in config.attacks) + 1
        n_batches = (len(data) + config.batch_size - 1) // config.batch_size
        for mc in config.models:
            t0 = time.perf_counter()
            model = run.get_model(mc.name)
            info = run.model_info[mc.name]
            t_model = time.perf_counter() - t0
            analyses = [ANALYSES[k](mc.name, model, data.class_names, **opts)
                        for k, opts in config.analyses.items()]
            t0 = time.perf_counter()
            with tqdm(total=n_units * n_batches, disable=not progress, desc=f"attacking {mc.name}",
                      unit="unit", leave=False) as bar:
                _evaluate_model(run, mc.name, model, data, analyses, lambda: bar.update(1))
            analyses_s: dict[str, float] = {}
            run.manifest["timings"][mc.name] = {"model_s": t_model, "evaluate_s": time.perf_counter() - t0,
                                                "analyses_s": analyses_s}
            run.model_rows.append({"model": mc.name, "architecture": mc.architecture, **{
                k: v for k, v in info.items() if k != "path"}, "path": info.get("path")})
            for analysis in analyses:
                t0 = time.perf_counter()
                tables = analysis.tables()
                analyses_s[analysis.name] = time.perf_counter() - t0
                for tname, df in tables.items():
                    df = df.copy()
                    df.insert(0, "model", mc.name)
                    run.analysis_tables.setdefault(analysis.name, {}).setdefault(tname, []).append(df)
            if mc.name not in {a.surrogate for a in config.attacks}:
                run.models.pop(mc.name, None)  # keep only surrogates of transfer attacks
            run.save_tables()
            run.write_manifest()
        from robustlens.study.report import build_report

        t0 = time.perf_counter()
        build_report(run)
        run.manifest["timings"]["report_s"] = time.perf_counter() - t0
        run.manifest["status"] = "complete"
    except BaseException as err:
        run.manifest["status"] = f"failed: {type(err).__name__}: {err}"
        run.save_tables()
        raise
    finally:
        run.manifest["timings"]["total_s"] = time.perf_counter() - start
        run.manifest["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        run.write_manifest()
    return StudyResult(run_dir, run.tables())
