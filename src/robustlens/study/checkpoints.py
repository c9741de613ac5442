"""Resume points of a study run.

A run directory keeps, under ``checkpoints/``:

``run.json``
    the fingerprint of the config that made the checkpoints (everything that changes the
    numbers; not the device or the checkpoint interval) and the number of workers;
``<model>.rank<R>of<W>.pt``
    for the model being evaluated, one file per worker: how many of its batches are done,
    the accuracy counts and every analysis' reducer state after them (``torch.save`` of
    tensors and plain containers, read back with ``weights_only=True``);
``<model>.done/``
    a finished model's tables (Parquet) and facts (JSON), written once it is complete.

Every file is written atomically, so a run killed at any moment leaves either the previous
resume point or the next one, never a torn file. Running the same command again continues
from there and ends with the same numbers as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from robustlens.errors import ConfigError
from robustlens.io import atomic_write_bytes, atomic_write_text
from robustlens.study.distributed import World

__all__ = ["FinishedModel", "ResumeStore", "config_fingerprint"]

log = logging.getLogger(__name__)

_FORMAT = 1
# [study] keys that do not change a run's numbers: a run may resume with other values.
_NEUTRAL_STUDY_KEYS = ("device", "checkpoint_every", "max_memory")


def config_fingerprint(config_dict: dict[str, Any]) -> str:
    """A hash of the resolved config, without the keys that do not change the numbers."""
    d = json.loads(json.dumps(config_dict, default=str))
    for key in _NEUTRAL_STUDY_KEYS:
        d.get("study", {}).pop(key, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@dataclass
class FinishedModel:
    """What a finished model left: its accuracy rows, model row, analysis tables, timings."""

    accuracy: pd.DataFrame
    model_row: dict[str, Any]
    tables: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)  # analysis -> table -> df
    timings: dict[str, Any] = field(default_factory=dict)


class ResumeStore:
    """Reads and writes the resume points of one run directory for one worker."""

    def __init__(self, run_dir: Path, fingerprint: str, world: World) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.fingerprint, self.world = fingerprint, world

    # -- the run as a whole -------------------------------------------------------------
    def prepare(self, fresh: bool) -> bool:
        """Check (rank 0: also write) ``run.json``; return whether earlier work is reused.

        Raises:
            ConfigError: the folder holds checkpoints of another config (and not ``fresh``).
        """
        meta_path = self.dir / "run.json"
        reuse = False
        if meta_path.is_file() and not fresh:
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                meta = {}
            if meta.get("fingerprint") != self.fingerprint:
                raise ConfigError(
                    f"{self.dir.parent} holds a run of a different study config, so it cannot be resumed. "
                    "Pass --fresh to discard its checkpoints and start over, or choose another --out.")
            reuse = True
        if self.world.is_main:
            if not reuse and self.dir.exists():
                shutil.rmtree(self.dir)
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(meta_path, json.dumps({"format": _FORMAT, "fingerprint": self.fingerprint},
                                                    indent=2))
        return reuse

    # -- finished models ----------------------------------------------------------------
    def _done_dir(self, model: str) -> Path:
        return self.dir / f"{_safe_name(model)}.done"

    def save_finished(self, model: str, finished: FinishedModel) -> None:
        """Keep a finished model's outputs (rank 0); its per-batch resume points are dropped."""
        final = self._done_dir(model)
        staging = final.with_name(final.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "tables").mkdir(parents=True)
        finished.accuracy.to_parquet(staging / "accuracy.parquet", index=False)
        names: list[dict[str, str]] = []
        for analysis, tables in finished.tables.items():
            for table, df in tables.items():
                file = f"{len(names):03d}.parquet"
                df.to_parquet(staging / "tables" / file, index=False)
                names.append({"analysis": analysis, "table": table, "file": file})
        (staging / "facts.json").write_text(json.dumps({"model_row": finished.model_row, "tables": names,
                                                        "timings": finished.timings}, default=str))
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)  # atomic: the folder appears complete or not at all
        for path in self.dir.glob(f"{_safe_name(model)}.rank*.pt"):
            path.unlink(missing_ok=True)

    def load_finished(self, model: str) -> FinishedModel | None:
        """A finished model's outputs, or ``None`` if it has not finished (or is unreadable)."""
        folder = self._done_dir(model)
        if not (folder / "facts.json").is_file():
            return None
        try:
            facts = json.loads((folder / "facts.json").read_text())
            tables: dict[str, dict[str, pd.DataFrame]] = {}
            for entry in facts["tables"]:
                df = pd.read_parquet(folder / "tables" / entry["file"])
                tables.setdefault(entry["analysis"], {})[entry["table"]] = df
            return FinishedModel(pd.read_parquet(folder / "accuracy.parquet"), facts["model_row"], tables,
                                 facts.get("timings", {}))
        except Exception as err:  # a damaged folder: evaluate the model again
            log.warning("ignoring the unreadable finished-model checkpoint %s (%s)", folder, err)
            return None

    # -- the model being evaluated --------------------------------------------------------
    def _units_path(self, model: str) -> Path:
        return self.dir / f"{_safe_name(model)}.rank{self.world.rank}of{self.world.size}.pt"

    def save_units(self, model: str, state: dict[str, Any]) -> None:
        """This worker's resume point for ``model`` (reducer states after its done batches)."""
        buffer = io.BytesIO()
        torch.save({"format": _FORMAT, "fingerprint": self.fingerprint, "model": model, **state}, buffer)
        atomic_write_bytes(self._units_path(model), buffer.getvalue())

    def load_units(self, model: str) -> dict[str, Any] | None:
        """This worker's last resume point for ``model``, or ``None``.

        Raises:
            ConfigError: there are resume points of another number of workers.
        """
        path = self._units_path(model)
        if not path.is_file():
            others = sorted(p.name for p in self.dir.glob(f"{_safe_name(model)}.rank*.pt"))
            if others:
                raise ConfigError(
                    f"{self.dir} holds resume points written by another number of workers ({others[0]}); "
                    f"resume with the same number of processes ({self.world.size} now), or pass --fresh.")
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torn or foreign: any unpickling error means "no resume point"
            log.warning("ignoring the unreadable resume point %s (%s); that model starts over", path, err)
            return None
        if state.get("fingerprint") != self.fingerprint:
            return None
        return dict(state)
