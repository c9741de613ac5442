"""A study's run directory, read back: config, manifest, result tables, and whose tables are whose.

A run directory (written by :func:`robustlens.study.run_study`) holds ``config.toml`` (the
resolved config), ``manifest.json`` (versions, seeds, device, timings, status, and under
``"tables"`` the tables each analysis wrote), ``results/*.parquet`` and ``figures/``. Everything
the report needs is read from these files; nothing of the process that ran the study.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from robustlens.errors import DataError

__all__ = ["PHOTOS", "RunDir", "assign_tables"]

PHOTOS = "photos"
"""The key of the ``[photos]`` part among a run's table owners."""

_BASE_TABLES = ("accuracy", "models")


@dataclass
class RunDir:
    """The contents of a run directory the report is built from.

    Attributes:
        path: the run directory.
        config: the resolved config (``config.toml``, parsed).
        config_text: ``config.toml`` as written.
        manifest: ``manifest.json``, parsed.
        tables: table name -> DataFrame, every ``results/*.parquet``.
        owners: section key (analysis, comparison or ``"photos"``) -> its table names, in
            the order the report shows the sections.
    """

    path: Path
    config: dict[str, Any]
    config_text: str
    manifest: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    owners: dict[str, list[str]] = field(default_factory=dict)

    @property
    def figures(self) -> Path:
        """The folder of the report's PNG figures."""
        return self.path / "figures"

    @classmethod
    def read(cls, path: str | Path) -> RunDir:
        """Read a run directory.

        Args:
            path: the folder a study wrote (``config.toml``, ``manifest.json``, ``results/``).

        Raises:
            DataError: the folder is missing, or is not a run directory (a file missing or
                unreadable); the message names what is missing.
        """
        root = Path(path)
        if not root.is_dir():
            raise DataError(f"run directory not found: {root}; give the folder a study wrote "
                            "(it holds config.toml, manifest.json and results/).")
        missing = [n for n in ("config.toml", "manifest.json", "results/accuracy.parquet")
                   if not (root / n).is_file()]
        if missing:
            raise DataError(f"{root} is not a study run directory with results: it lacks {', '.join(missing)}; "
                            "give the folder a study wrote (robustlens study ... --out FOLDER), after its "
                            "first model finished.")
        try:
            config_text = (root / "config.toml").read_text(encoding="utf-8")
            config = tomllib.loads(config_text)
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise DataError(f"{root / 'config.toml'} is not a valid TOML file ({err}); "
                            "rerun the study to rewrite it.") from None
        try:
            manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{root / 'manifest.json'} is not valid JSON ({err}); "
                            "rerun the study to rewrite it.") from None
        if not isinstance(manifest, dict):
            raise DataError(f"{root / 'manifest.json'} holds a {type(manifest).__name__}, expected an "
                            "object; rerun the study to rewrite it.")
        tables: dict[str, pd.DataFrame] = {}
        for file in sorted((root / "results").glob("*.parquet")):
            try:
                tables[file.stem] = pd.read_parquet(file)
            except Exception as err:  # pyarrow raises several types for a damaged file
                raise DataError(f"{file} is not a readable Parquet table ({type(err).__name__}: {err}); "
                                "rerun the study to rewrite it.") from None
        run = cls(root, config, config_text, manifest, tables)
        run.owners = assign_tables(run.section_keys(), list(tables), manifest.get("tables"))
        return run

    def section_keys(self) -> list[str]:
        """The analyses, comparisons and photos part of the config, in report order."""
        keys = list(self.config.get("analyses", {})) + list(self.config.get("comparisons", {}))
        if self.config.get("photos") is not None or any(t.startswith("photo_") for t in self.tables):
            keys.append(PHOTOS)
        return list(dict.fromkeys(keys))


def _stem(name: str) -> str:
    head = name.split("_")[0]
    return head[:-1] if head.endswith("s") and len(head) > 3 else head


def _matches(key: str, table: str) -> bool:
    return table == key or table.startswith(key + "_") or _stem(table) == _stem(key)


def assign_tables(keys: list[str], tables: list[str],
                  recorded: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Which tables belong to which section.

    The runner records each analysis' tables in the manifest (``"tables"``); that record wins.
    A run directory without it (an older run) falls back to matching names: a table belongs
    to the analysis of the same name, or whose name it extends (``sensitivity_top`` ->
    ``sensitivity``), or whose first word it shares (``manifold_accuracy`` -> ``manifolds``,
    ``photo_saliency`` -> ``photos``), the longest key winning. Tables matching no key are
    left out of the result (the report lists them under "Other tables").

    Args:
        keys: section keys in report order.
        tables: the run's table names.
        recorded: the manifest's record (key -> table names), if any.
    """
    present = set(tables)
    if recorded:
        return {k: [t for t in recorded.get(k, []) if t in present] for k in keys}
    out: dict[str, list[str]] = {k: [] for k in keys}
    for table in tables:
        if table in _BASE_TABLES:
            continue
        candidates = [k for k in keys if _matches(k, table)]
        if candidates:
            exact = [k for k in candidates if table == k or table.startswith(k + "_")]
            best = max(exact or candidates, key=len)
            out[best].append(table)
    return out
