"""The study runner: models x attacks x eps x analyses -> tables, figures, report.

A run directory holds::

    config.toml         the resolved config (every default filled in)
    manifest.json       library versions, seeds, device, timings, status
    results/*.parquet   tidy tables (accuracy, models, one per analysis table)
    figures/*.png       the report's figures
    report.html         self-contained report

    checkpoints/        resume points (see :mod:`robustlens.study.checkpoints`)

Tables are rewritten after every model, so an error in a later model leaves the finished
models' results on disk, and every file is written atomically. Run again, an interrupted
study resumes; under ``torchrun`` it runs sharded (see :mod:`robustlens.study.distributed`).
"""

from __future__ import annotations

import copy
import gc
import logging
import platform
import re
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from robustlens.attacks import eval_mode
from robustlens.data import Dataset
from robustlens.errors import ConfigError
from robustlens.io import atomic_path, atomic_write_text
from robustlens.study.analyses import (
    ANALYSES,
    COMPARISONS,
    StudyAnalysis,
    load_plugins,
)
from robustlens.study.batch import ModelState, ModelWork, accuracy_rows, run_batch
from robustlens.study.checkpoints import FinishedModel, ResumeStore, config_fingerprint
from robustlens.study.config import ModelConfig, StudyConfig
from robustlens.study.distributed import World, join_world, leave_world
from robustlens.study.memory import (
    default_budget,
    format_size,
    is_out_of_memory,
    process_peak,
    release_free_memory,
)
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
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


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
                     "checkpoint_every": d["checkpoint_every"], "max_memory": d["max_memory"]},
           "data": d["data"], "models": [], "attacks": [], "analyses": d["analyses"]}
    for m in d["models"]:
        m = {k: v for k, v in m.items() if not (k in ("random", "pretrained", "allow_pickle") and not v)}
        out["models"].append(m)
    for a in d["attacks"]:
        if a["type"] == "corruption":  # written back as the config spells it: severities, no eps
            corruption = a["options"]["corruption"]
            entry = {"type": "corruption", "corruptions": [corruption],
                     "severities": [int(e) for e in a["eps"]], "seed": a["options"].get("seed", 0)}
            if a["name"] != corruption:
                entry["name"] = a["name"].rsplit(":", 1)[0]
            out["attacks"].append(entry)
            continue
        out["attacks"].append({"name": a["name"], "type": a["type"], "eps": list(a["eps"]),
                               **a["options"]})
    if d.get("photos") is not None:
        out["photos"] = d["photos"]
    if d.get("comparisons"):
        out["comparisons"] = d["comparisons"]
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
                 progress: bool, config_text: str | None, world: World | None = None,
                 store: ResumeStore | None = None) -> None:
        self.config, self.run_dir, self.cache_dir = config, run_dir, cache_dir
        self.world, self.store = world or World(), store
        self.device, self.progress = device, progress
        self.config_text = config_text
        self.results = run_dir / "results"
        self.figures = run_dir / "figures"
        self.accuracy: list[dict[str, Any]] = []
        self.models: dict[str, nn.Module] = {}
        self.model_info: dict[str, dict[str, Any]] = {}
        self.model_rows: list[dict[str, Any]] = []
        self.finished_names: list[str] = []  # models an earlier run of this study finished
        self.analysis_tables: dict[str, dict[str, list[pd.DataFrame]]] = {}
        self.released: dict[str, list[str]] | None = None  # see release_tables
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

        self.manifest["tables"] = (self.released if self.released is not None else
                                   {key: list(tables) for key, tables in self.analysis_tables.items()})
        atomic_write_text(self.run_dir / "manifest.json", json.dumps(self.manifest, indent=2, default=str))

    def restore(self, name: str, done: FinishedModel) -> None:
        """Take a model finished by an earlier (interrupted) run of this study."""
        self.accuracy.extend(done.accuracy.to_dict("records"))
        self.model_rows.append(done.model_row)
        self.manifest["timings"][name] = done.timings
        for analysis, tables in done.tables.items():
            for tname, df in tables.items():
                self.analysis_tables.setdefault(analysis, {}).setdefault(tname, []).append(df)

    def tables(self) -> dict[str, pd.DataFrame]:
        if self.released is not None:  # results/ holds them all
            return {f.stem: pd.read_parquet(f) for f in sorted(self.results.glob("*.parquet"))}
        out = {"accuracy": pd.DataFrame(self.accuracy), "models": pd.DataFrame(self.model_rows)}
        for per_analysis in self.analysis_tables.values():
            for name, frames in per_analysis.items():
                if len(frames) > 1:  # joined once, in place: the per-model frames are not held twice
                    frames[:] = [pd.concat(frames, ignore_index=True)]
                out[name] = frames[0]
        corruptions = {a.name for a in self.config.attacks if a.type == "corruption"}
        return {name: _with_severity(df, corruptions) for name, df in out.items()} if corruptions else out

    def save_tables(self) -> None:
        if self.released is not None:
            return
        for name, df in self.tables().items():
            if not df.empty:
                _write_parquet(df, self.results / f"{name}.parquet")

    def release_tables(self) -> None:
        """Write every table to ``results/`` and drop the in-memory copies: the report reads them
        from there, and a study's pixel tables (renders, saliency maps) can take gigabytes that
        would otherwise be held twice while the report draws. :meth:`tables` reads them back."""
        self.save_tables()
        self.released = {key: list(tables) for key, tables in self.analysis_tables.items()}
        self.analysis_tables = {}
        release_free_memory()


def _with_severity(df: pd.DataFrame, corruptions: set[str]) -> pd.DataFrame:
    """A table with a ``severity`` column: a corruption's conditions carry their severity in the
    runner's eps slot; in the tables their ``eps`` is NaN (a corruption has no radius)."""
    if "attack" not in df.columns or "eps" not in df.columns:
        return df
    hit = df["attack"].isin(corruptions).to_numpy()
    if not hit.any():
        return df
    severity = pd.array([int(e) if h else pd.NA for e, h in zip(df["eps"], hit, strict=True)], dtype="Int64")
    out = df.assign(eps=df["eps"].where(~hit))
    out.insert(int(out.columns.get_loc("eps")) + 1, "severity", severity)
    return out


def _evaluate_model(run: _Run, name: str, model: nn.Module, data: Dataset,
                    analyses: list[StudyAnalysis], tick: Callable[[], None]) -> ModelState | None:
    """Evaluate ``model`` on this worker's batches; on rank 0 return the merged sums."""
    config, world = run.config, run.world
    attacks = [(a.name, eps, a.build(eps, run.get_model(a.surrogate) if a.surrogate else None))
               for a in config.attacks for eps in a.eps]
    keys = [("clean", 0.0)] + [(a_name, eps) for a_name, eps, _ in attacks]
    state = ModelState(keys, data.num_classes, analyses)
    work = ModelWork.prepare(model, data, attacks, analyses, run.device, config)
    n = len(data)
    n_batches = (n + config.batch_size - 1) // config.batch_size
    mine = [b for b in range(n_batches) if world.owns(b)]
    resumable = True
    saved = run.store.load_units(name) if run.store else None
    if saved is not None:
        state.load_state_dict(saved)
        log.info("%s: resuming after %d of this worker's %d batches", name, state.batches_done, len(mine))
        for _ in range(state.batches_done * (len(attacks) + 1)):
            tick()

    def indices(b: int) -> torch.Tensor:
        return torch.arange(b * config.batch_size, min((b + 1) * config.batch_size, n))

    def save() -> None:
        nonlocal resumable
        if run.store is not None and resumable:
            try:
                run.store.save_units(name, state.state_dict())
            except NotImplementedError as err:
                resumable = False
                log.warning("%s: no resume points for this model (%s)", name, err)

    todo = mine[state.batches_done:]
    budget = config.max_memory if config.max_memory is not None else default_budget(run.device)
    micro = _micro_batch(run, name, work, state, data, budget) if todo else config.batch_size
    run.manifest.setdefault("micro_batch", {})[name] = micro
    last_save = time.monotonic()
    with eval_mode(model), ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(data.get_batch, indices(todo[0])) if todo else None
        for position, index in enumerate(todo):
            assert pending is not None
            x, y = pending.result()
            if position + 1 < len(todo):  # decode the next batch while this one is attacked
                pending = reader.submit(data.get_batch, indices(todo[position + 1]))
            micro = _run_batch_safely(name, work, state, (x, y, index), tick, micro, budget, save)
            release_free_memory()
            tick()
            state.batches_done += 1
            due = time.monotonic() - last_save >= config.checkpoint_every or position + 1 == len(todo)
            if due:
                save()
                last_save = time.monotonic()
    run.manifest["micro_batch"][name] = micro  # the part size the batches ended with
    run.manifest.setdefault("stochastic", {})[name] = work.stochastic
    if world.distributed:
        states = world.gather(state.state_dict())
        if not world.is_main:
            return None
        assert states is not None
        for other in states[1:]:
            state.merge_state(other)
    run.accuracy.extend(accuracy_rows(name, work, state))
    return state


def _micro_batch(run: _Run, name: str, work: ModelWork, state: ModelState, data: Dataset, budget: int) -> int:
    """The images per part of a batch: the config's batch size if it fits the memory budget,
    else the largest that fits (logged once); one clear error if not one image fits."""
    config = run.config
    x, y = data.get_batch(torch.arange(min(2, config.batch_size, len(data))))
    with eval_mode(work.model):
        fit = work.fit(x, y, budget, state)
    run.manifest.setdefault("memory", {})[name] = {
        "budget_bytes": fit.budget, "in_use_bytes": fit.in_use, "per_image_bytes": fit.per_image,
        "batch_size_fits": fit.batch_size}
    if fit.batch_size < 1:
        raise ConfigError(fit.too_small(name) + _kept(state.batches_done))
    if fit.batch_size < config.batch_size:
        log.warning("%s: a batch of %d images needs about %s, over the memory budget of %s (%s in use); "
                    "running each batch in parts of %d images, the largest batch size that fits.",
                    name, config.batch_size, format_size(fit.in_use + fit.per_image * config.batch_size),
                    format_size(fit.budget), format_size(fit.in_use), fit.batch_size)
        return fit.batch_size
    return config.batch_size


def _kept(batches_done: int) -> str:
    if not batches_done:
        return ""
    return f" The {batches_done} batches already done are kept in the resume points: run again to continue."


def _run_batch_safely(name: str, work: ModelWork, state: ModelState,
                      batch: tuple[torch.Tensor, torch.Tensor, int], tick: Callable[[], None], micro: int,
                      budget: int, save: Callable[[], None]) -> int:
    """Run one batch (images, labels, index) in parts of ``micro`` images; on an out-of-memory
    error, go back to the sums before the batch and run it again in parts half as large, down
    to one image; there, save the sums of the batches done and raise one clear error.

    Returns:
        The part size that worked (kept for the next batches).
    """
    x, y, index = batch
    snapshot = copy.deepcopy(state.state_dict())
    shown = 0  # progress ticks already shown for this batch (a retry does not repeat them)

    while True:
        seen = 0

        def part_tick() -> None:
            nonlocal seen, shown
            seen += 1
            if seen > shown:
                shown += 1
                tick()

        failure = ""
        try:
            run_batch(work, state, x, y, index, part_tick, micro)
            return micro
        except Exception as err:  # noqa: BLE001  (only an allocation failure is caught)
            if not is_out_of_memory(err):
                raise
            failure = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        # out of the except block: the failed attempt's tensors are unreachable now
        state.restore(snapshot)
        gc.collect()
        if work.device.type == "cuda":
            torch.cuda.empty_cache()
        size = min(micro, len(x))
        if size <= 1:
            save()
            raise ConfigError(
                f"{name}: one image does not fit in memory on {work.device} (batch {index} failed at 1 image: "
                f"{failure}); the memory budget is {format_size(budget)}. Raise "
                "[study].max_memory (or pass --max-memory) if the device has more, free memory, or record "
                f"fewer layers (the analyses' `layers`).{_kept(state.batches_done)}")
        micro = size // 2
        log.warning("%s: batch %d ran out of memory (%s); running it again in parts of %d images, and the "
                    "next batches too.", name, index, failure, micro)


_PHOTOS = "[photos]"  # the photos part's name among the resume points


def _photos_part(run: _Run) -> None:
    """The ``[photos]`` part: an ImageNet classifier on photographs (rank 0 only)."""
    from robustlens.study.photos import run_photos

    assert run.config.photos is not None
    done = run.store.load_finished(_PHOTOS) if run.store is not None else None
    if done is not None:
        tables = done.tables.get("photos", {})
        run.manifest["timings"]["photos_s"] = done.timings.get("photos_s")
    else:
        t0 = time.perf_counter()
        tables = run_photos(run.config.photos, run.device, progress=run.progress)
        run.manifest["timings"]["photos_s"] = time.perf_counter() - t0
        if run.store is not None:  # (the cost plan's run has no resume points)
            run.store.save_finished(_PHOTOS, FinishedModel(pd.DataFrame(), {}, {"photos": tables},
                                                           {"photos_s": run.manifest["timings"]["photos_s"]}))
    run.analysis_tables["photos"] = {name: [df] for name, df in tables.items()}
    run.save_tables()
    run.write_manifest()


def _build_analysis(config: StudyConfig, key: str, model_name: str, model: nn.Module,
                    class_names: list[str] | tuple[str, ...]) -> StudyAnalysis:
    """Analysis ``key`` of ``config`` for one model, with its validated options."""
    options = config.analysis_options.get(key)
    if options is not None:
        return ANALYSES[key](model_name, model, class_names, options)
    return ANALYSES[key](model_name, model, class_names, **config.analyses[key])


def _compare_models(run: _Run) -> None:
    """Run the config's model comparisons on the per-model tables (rank 0, after every model)."""
    config = run.config
    tables = run.tables()
    for key, raw in config.comparisons.items():
        cls = COMPARISONS[key]
        options = config.comparison_options.get(key)
        comparison = cls(options) if options is not None else cls(**raw)
        models = list(comparison.options.models) or [m.name for m in config.models]
        given = {}
        for name, df in tables.items():  # a table of the compared models only (no copy if all)
            if "model" in df.columns:
                keep = df["model"].isin(models)
                given[name] = df if bool(keep.all()) else df[keep].reset_index(drop=True)
        t0 = time.perf_counter()
        out = comparison.compare(given)
        run.manifest["timings"].setdefault("comparisons_s", {})[key] = time.perf_counter() - t0
        clash = sorted(set(out) & set(tables))
        if clash:
            raise ConfigError(f"comparison {key!r} returned table {clash[0]!r}, which an analysis already "
                              "wrote; a comparison's tables need names of their own.")
        run.analysis_tables[key] = {name: [df] for name, df in out.items()}
    run.save_tables()
    run.write_manifest()


def _obtain_in_turn(run: _Run, names: list[str]) -> None:
    """Obtain models on rank 0 first (it may train and cache them), then on the other workers."""
    if run.world.is_main:
        for n in names:
            run.get_model(n)
    run.world.barrier()
    if not run.world.is_main:
        for n in names:
            run.get_model(n)


def _run_model(run: _Run, mc: ModelConfig, data: Dataset, n_ticks: int) -> None:
    """Obtain one model, evaluate it on this worker's batches and, on rank 0, keep its tables
    and mark it finished."""
    from tqdm.auto import tqdm

    assert run.store is not None
    release_free_memory()  # start from what is in use, not from the last model's peak
    t0 = time.perf_counter()
    _obtain_in_turn(run, [mc.name] + [a.surrogate for a in run.config.attacks if a.surrogate])
    model = run.get_model(mc.name)
    info = run.model_info[mc.name]
    t_model = time.perf_counter() - t0
    analyses = [_build_analysis(run.config, k, mc.name, model, data.class_names) for k in run.config.analyses]
    t0 = time.perf_counter()
    with tqdm(total=n_ticks, disable=not run.progress, desc=f"attacking {mc.name}",
              unit="unit", leave=False) as bar:
        state = _evaluate_model(run, mc.name, model, data, analyses, lambda: bar.update(1))
    if mc.name not in {a.surrogate for a in run.config.attacks}:
        run.models.pop(mc.name, None)  # keep only surrogates of transfer attacks
    if state is None:  # a worker other than rank 0: its sums went to rank 0
        return
    analyses_s: dict[str, float] = {}
    timings = {"model_s": t_model, "evaluate_s": time.perf_counter() - t0, "analyses_s": analyses_s}
    run.manifest["timings"][mc.name] = timings
    model_row = {"model": mc.name, "architecture": mc.architecture, **{
        k: v for k, v in info.items() if k != "path"}, "path": info.get("path")}
    run.model_rows.append(model_row)
    tables_of: dict[str, dict[str, pd.DataFrame]] = {}
    for analysis in analyses:
        t0 = time.perf_counter()
        tables = analysis.tables()
        analyses_s[analysis.name] = time.perf_counter() - t0
        for tname, df in tables.items():
            df = df.copy()
            df.insert(0, "model", mc.name)
            tables_of.setdefault(analysis.name, {})[tname] = df
            run.analysis_tables.setdefault(analysis.name, {}).setdefault(tname, []).append(df)
    accuracy = pd.DataFrame([r for r in run.accuracy if r["model"] == mc.name])
    run.store.save_finished(mc.name, FinishedModel(accuracy, model_row, tables_of, timings))
    run.save_tables()
    run.write_manifest()


def _open_run(config: StudyConfig, run_dir: Path, world: World, *, cache_dir: str | Path | None,
              device: str | None, progress: bool, config_text: str | None,
              fresh: bool) -> tuple[_Run, dict[str, FinishedModel]]:
    """Write the resolved config, prepare the resume points, and read the models an earlier run
    finished (rank 0; every worker learns their names)."""
    config_dict = _config_dict(config)
    if world.is_main:
        for sub in ("results", "figures"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        import tomli_w

        atomic_write_text(run_dir / "config.toml", tomli_w.dumps(config_dict))
        if config_text is not None:
            atomic_write_text(run_dir / "config.original.toml", config_text)
    store = ResumeStore(run_dir, config_fingerprint(config_dict), world)
    if world.is_main:
        store.prepare(fresh)
    world.barrier()
    if not world.is_main:
        store.prepare(False)
    run = _Run(config, run_dir, Path(cache_dir) if cache_dir else default_cache_dir(),
               world.device(resolve_device(device or config.device)), progress and world.is_main, config_text,
               world=world, store=store)
    finished: dict[str, FinishedModel] = {}
    if world.is_main:
        for mc in config.models:
            done = store.load_finished(mc.name)
            if done is not None:
                finished[mc.name] = done
    run.finished_names = world.broadcast(sorted(finished))
    run.manifest["world_size"] = world.size
    run.manifest["resumed_models"] = run.finished_names
    if world.is_main:
        run.write_manifest()
    return run, finished


def run_study(config: StudyConfig, run_dir: str | Path, *, cache_dir: str | Path | None = None,
              progress: bool = False, config_text: str | None = None,
              device: str | None = None, fresh: bool = False, data: Dataset | None = None) -> StudyResult:
    """Run a study and write its run directory; resume it if it was interrupted.

    Run again with the same config on the same ``run_dir``, a study continues from its last
    resume point (see :mod:`robustlens.study.checkpoints`) and ends with the same numbers as an
    uninterrupted run. Launched by ``torchrun``, each process takes its shard of the batches
    and rank 0 merges the results (see :mod:`robustlens.study.distributed`).

    Args:
        config: a validated study config.
        run_dir: output folder (created).
        cache_dir: where trained models are cached (default :func:`default_cache_dir`).
        progress: show progress bars.
        config_text: the original config text, kept beside the resolved one.
        device: overrides ``config.device``.
        fresh: discard the resume points of an earlier run in ``run_dir`` and start over.
        data: the images to use instead of the config's ``[data]`` (any :class:`Dataset`).

    Raises:
        ConfigError: ``run_dir`` holds checkpoints of another config (and not ``fresh``).
    """

    from robustlens.study.preflight import preflight

    load_plugins()
    preflight(config, run_dir, data=data)  # the run folder, files, shapes and layers: before any work
    run_dir = Path(run_dir)
    world = join_world()
    run, finished = _open_run(config, run_dir, world, cache_dir=cache_dir, device=device,
                              progress=progress, config_text=config_text, fresh=fresh)
    finished_names = run.finished_names
    start = time.perf_counter()
    try:
        t0 = time.perf_counter()
        if data is None:
            data = config.data.build()
        run.manifest["data"] = {"name": data.name, "n_images": len(data),
                                "n_classes": len(torch.unique(data.labels)),
                                "n_per_class": config.data.n_per_class, "ds_factor": config.data.ds_factor}
        run.manifest["timings"]["data_s"] = time.perf_counter() - t0
        n_units = sum(len(a.eps) for a in config.attacks) + 1
        n_batches = (len(data) + config.batch_size - 1) // config.batch_size
        n_mine = len([b for b in range(n_batches) if world.owns(b)])
        for mc in config.models:
            if mc.name in finished_names:
                if world.is_main:
                    run.restore(mc.name, finished[mc.name])
                continue
            _run_model(run, mc, data, n_units * n_mine)
        if world.is_main and config.comparisons:
            _compare_models(run)
        if world.is_main and config.photos is not None:
            _photos_part(run)
        if world.is_main:
            from robustlens.report import build_report

            run.release_tables()
            t0 = time.perf_counter()
            build_report(run.run_dir)
            run.manifest["timings"]["report_s"] = time.perf_counter() - t0
            run.manifest["status"] = "complete"
    except BaseException as err:
        if world.is_main:
            run.manifest["status"] = f"failed: {type(err).__name__}: {err}"
            run.save_tables()
        raise
    finally:
        if world.is_main:
            run.manifest["timings"]["total_s"] = time.perf_counter() - start
            run.manifest["peak_memory_bytes"] = process_peak(run.device)
            run.manifest["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
            run.write_manifest()
    world.barrier()
    leave_world(world)
    return StudyResult(run_dir, run.tables() if world.is_main else {})
