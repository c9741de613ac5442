"""The list of built-in study analyses, and the loading of third-party ones.

Built-in plug-in modules are listed in :data:`BUILTIN_MODULES` (the one place to add a new
built-in module); each registers its classes when imported. Third-party packages register
through the Python entry-point group ``robustlens.analyses``: each entry point names a module
(or an object in one) whose import registers analyses or comparisons. In the package's
``pyproject.toml``::

    [project.entry-points."robustlens.analyses"]
    my_analysis = "my_package.my_analysis"

Entry points are loaded once, on first use (:func:`load_plugins`: a config being read, a
study being run).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging

from robustlens.errors import ConfigError

__all__ = ["BUILTIN_MODULES", "ENTRY_POINT_GROUP", "load_builtins", "load_plugins"]

log = logging.getLogger(__name__)

BUILTIN_MODULES = (
    "robustlens.study.analyses.dissimilarity",
    "robustlens.study.analyses.sensitivity",
    "robustlens.study.analyses.rsa",
    "robustlens.study.analyses.manifolds",
    "robustlens.study.analyses.pca_images",
    "robustlens.study.analyses.robustness",
    "robustlens.study.analyses.audit",
    "robustlens.study.analyses.featurevis",
    "robustlens.study.analyses.saliency",
    "robustlens.study.analyses.dissimilarity_images",
    "robustlens.study.analyses.sweet_spot",
    "robustlens.study.analyses.interpretability",
)
"""Modules registering the built-in analyses, in the order the report shows them."""

ENTRY_POINT_GROUP = "robustlens.analyses"
"""The entry-point group third-party analyses register under."""

_loaded: set[str] = set()


def load_builtins() -> None:
    """Import every module of :data:`BUILTIN_MODULES` (registering the built-in analyses)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def load_plugins() -> None:
    """Load the analyses registered under :data:`ENTRY_POINT_GROUP` (each entry point once).

    Raises:
        ConfigError: an entry point fails to import; the message names it and its package.
    """
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in _loaded:
            continue
        _loaded.add(entry.name)
        try:
            entry.load()
        except Exception as err:
            dist = getattr(entry.dist, "name", "?") if getattr(entry, "dist", None) else "?"
            raise ConfigError(f"the study analysis plug-in {entry.name!r} ({entry.value}, package {dist}) "
                              f"failed to load: {type(err).__name__}: {err}. Fix or uninstall that "
                              "package.") from err
        log.debug("loaded study analysis plug-in %s (%s)", entry.name, entry.value)
