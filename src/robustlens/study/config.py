"""Study configuration: a TOML file validated into frozen dataclasses.

A study names its data subset, its models (trained, loaded from a checkpoint, or left
random), its attacks with their epsilons, and its analyses. Unknown keys are an error that
suggests the closest known key. See ``robustlens demo --print-config`` for a full example.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from robustlens.attacks import Attack, check_eps
from robustlens.errors import ConfigError, RobustlensError, suggest
from robustlens.study.attack_types import ATTACK_TYPES
from robustlens.training import AdversarialTraining, TrainConfig

if TYPE_CHECKING:
    from robustlens.data import Dataset
    from robustlens.study.analyses import AnalysisOptions, ComparisonOptions
    from robustlens.study.photos import PhotosConfig

__all__ = ["AttackConfig", "DataConfig", "ModelConfig", "StudyConfig", "load_config", "parse_config"]


def _check_keys(table: Any, allowed: dict[str, type | tuple[type, ...]], where: str,
                required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table; received {type(table).__name__}.")
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"unknown key {key!r} in {where}.{suggest(key, allowed)} "
                              f"Known keys: {', '.join(sorted(allowed))}.")
        kinds = allowed[key]
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{where}.{key} must be {names}; received {value!r}.")
        if key == "seed" and isinstance(value, int) and not 0 <= value < 2**63:
            raise ConfigError(f"{where}.seed must be an integer from 0 to 2**63 - 1 (as for `robustlens "
                              f"train --seed`); received {value}.")
    for key in required:
        if key not in table:
            raise ConfigError(f"{where} needs the key {key!r}.")
    return table


def _parse_classes(spec: Any) -> int | tuple[int | str, ...] | str:
    """``[data].classes``: a number of classes to draw, a list of classes, or "folders"."""
    where = "[data].classes"
    if isinstance(spec, int) and spec < 1:
        raise ConfigError(f"{where} must be >= 1 classes to draw (leave it out for every class); "
                          f"received {spec}.")
    if isinstance(spec, str) and spec != "folders":
        raise ConfigError(f"{where} must be a number of classes, a list of classes or \"folders\"; "
                          f"received {spec!r}.{suggest(spec, ['folders'])} For one class, write a "
                          f"list: [{spec!r}].")
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where} must not be an empty list; leave it out for every class.")
        bad = [v for v in spec if isinstance(v, bool) or not isinstance(v, int | str)]
        if bad:
            raise ConfigError(f"{where} lists WordNet ids, class indices or names; received {bad[0]!r}.")
        return tuple(spec)
    return spec


@dataclass(frozen=True)
class DataConfig:
    """Which images a study attacks: a dataset split, every ``ds_factor``-th image of it, and a
    class-balanced subset of ``n_per_class`` per class (``None``: all).

    ``resize`` and ``crop`` apply to ImageNet-style folders (shorter side, then centre crop).
    """

    dataset: str = "fashion_mnist"
    split: str = "test"
    n_per_class: int | None = 50
    seed: int = 0
    root: str | None = None
    ds_factor: int = 1
    resize: int = 256
    crop: int = 224
    classes: int | tuple[int | str, ...] | str | None = None

    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images this config gives, known without reading them."""
        if self.dataset == "imagenet":
            return (3, self.crop, self.crop)
        return (1, 8, 8) if self.dataset == "digits" else (1, 28, 28)

    def build(self) -> Dataset:
        """The images this config describes: the split (its ``classes`` only, if given), every
        ``ds_factor``-th image of it, then
        ``n_per_class`` per class (drawn with ``seed``); the one place a study's data is made."""
        from robustlens.data import class_balanced_indices, load_dataset

        data = load_dataset(self.dataset, self.split, self.root, resize=self.resize, crop=self.crop,
                            classes=self.classes, seed=self.seed)
        if self.ds_factor > 1:  # VOneNet's DS_factor: every k-th image of the split
            data = data.subset(torch.arange(0, len(data), self.ds_factor))
        if self.n_per_class is not None:
            data = data.subset(class_balanced_indices(data.labels, self.n_per_class, self.seed,
                                                      data.num_classes))
        return data


@dataclass(frozen=True)
class ModelConfig:
    """One model of a study: exactly one of ``train``, ``checkpoint`` (a robustlens checkpoint),
    ``weights`` (a released weights file: torchvision, VOneNet, CORnet formats),
    ``pretrained`` (weights shipped by a package) and ``random``.

    ``allow_pickle`` lets ``weights`` be a full pickle (only for files you trust).
    """

    name: str
    architecture: str
    options: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    train: TrainConfig | None = None
    random: bool = False
    seed: int = 0
    weights: str | None = None
    pretrained: bool = False
    allow_pickle: bool = False

    @property
    def source(self) -> str:
        if self.checkpoint:
            return "checkpoint"
        if self.weights:
            return "weights"
        return "train" if self.train else "pretrained" if self.pretrained else "random"


@dataclass(frozen=True)
class AttackConfig:
    """One attack swept over several epsilons (pixel units)."""

    name: str
    type: str
    eps: tuple[float, ...]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def surrogate(self) -> str | None:
        """The study model the images are crafted on (transfer attacks), else ``None``."""
        key = ATTACK_TYPES[self.type].surrogate_key
        return self.options.get(key) if key else None

    def build(self, eps: float, surrogate: nn.Module | None = None) -> Attack:
        """The attack at ``eps``; a transfer attack needs its ``surrogate`` model.

        Args:
            eps: the radius (pixel units).
            surrogate: the model named by :attr:`surrogate` (``None``: validation only).
        """
        return ATTACK_TYPES[self.type].build(eps, dict(self.options), surrogate)


@dataclass(frozen=True)
class StudyConfig:
    """A whole study."""

    name: str
    data: DataConfig
    models: tuple[ModelConfig, ...]
    attacks: tuple[AttackConfig, ...]
    analyses: dict[str, dict[str, Any]]
    seed: int = 0
    batch_size: int = 250
    device: str = "auto"
    expected_passes: int = 8
    checkpoint_every: float = 60.0
    max_memory: int | None = None  # bytes; None: robustlens.study.memory.default_budget
    raw: dict[str, Any] = field(default_factory=dict, compare=False)
    photos: PhotosConfig | None = None  # the optional [photos] table (robustlens.study.photos)
    comparisons: dict[str, dict[str, Any]] = field(default_factory=dict)
    analysis_options: dict[str, AnalysisOptions] = field(default_factory=dict, compare=False)
    comparison_options: dict[str, ComparisonOptions] = field(default_factory=dict, compare=False)


_TRAIN_KEYS: dict[str, type | tuple[type, ...]] = {
    "epochs": int, "batch_size": int, "lr": float, "weight_decay": float, "seed": int,
    "adversarial": dict, "max_batches": int,
}
_ADV_KEYS: dict[str, type | tuple[type, ...]] = {
    "eps": float, "steps": int, "step_size": float, "random_start": bool, "warmup_epochs": float, "norm": str,
}
def _parse_model(table: Any, i: int) -> ModelConfig:
    where = f"[[models]] #{i + 1}"
    t = _check_keys(table, {"name": str, "architecture": str, "options": dict, "checkpoint": str,
                            "train": dict, "random": bool, "seed": int, "weights": str,
                            "pretrained": bool, "allow_pickle": bool}, where,
                    required=("name", "architecture"))
    from robustlens.models import list_models, model_defaults

    arch = t["architecture"]
    if arch not in list_models():
        raise ConfigError(f"{where}: unknown architecture {arch!r}.{suggest(arch, list_models())} "
                          "Run `robustlens models` for the list.")
    options = t.get("options", {})
    _check_keys(options, {k: object for k in model_defaults(arch)}, f"{where}.options")
    if "weights" in options:
        raise ConfigError(f"{where}: give a released weights file as the model's `weights = \"PATH\"` "
                          "key, not inside options.")
    sources = [k for k in ("checkpoint", "train", "weights") if k in t] + [
        k for k in ("random", "pretrained") if t.get(k)]
    if len(sources) != 1:
        raise ConfigError(f"{where} ({t['name']!r}) needs exactly one of `train = {{...}}`, "
                          f"`checkpoint = \"PATH\"`, `weights = \"PATH\"`, `pretrained = true` or "
                          f"`random = true`; received {', '.join(sources) or 'none'}.")
    if "weights" in t and "weights" not in model_defaults(arch):
        raise ConfigError(f"{where}: architecture {arch!r} takes no released weights file; use "
                          "`checkpoint` (a robustlens checkpoint) or `train`.")
    if t.get("pretrained") and model_defaults(arch).get("pretrained") is None:
        raise ConfigError(f"{where}: architecture {arch!r} ships no pretrained weights; give "
                          "`weights = \"PATH\"` or `checkpoint = \"PATH\"`.")
    train = None
    if "train" in t:
        tr = dict(_check_keys(t["train"], _TRAIN_KEYS, f"{where}.train"))
        adv = tr.pop("adversarial", None)
        if adv is not None:
            adv = AdversarialTraining(**_check_keys(adv, _ADV_KEYS, f"{where}.train.adversarial"))
        train = TrainConfig(**tr, adversarial=adv)
    return ModelConfig(name=t["name"], architecture=arch, options=dict(options),
                       checkpoint=t.get("checkpoint"), train=train, random=bool(t.get("random")),
                       seed=t.get("seed", 0), weights=t.get("weights"),
                       pretrained=bool(t.get("pretrained")), allow_pickle=bool(t.get("allow_pickle")))


CORRUPTION_KEYS: dict[str, type | tuple[type, ...]] = {"name": str, "type": str, "corruptions": list,
                                                     "severities": list, "seed": int}


def _parse_corruptions(table: dict[str, Any], where: str) -> list[AttackConfig]:
    """``type = "corruption"``: one attack per corruption, its severities in the eps slot."""
    from robustlens.attacks.corruption import CORRUPTIONS, check_corruption

    if "eps" in table:
        raise ConfigError(f"{where}: a corruption has no eps; give its strengths as severities = [1, 2, 3, 4, 5] "
                          "(and the types as corruptions = [...]).")
    t = _check_keys(table, CORRUPTION_KEYS, where, required=("type", "corruptions"))
    names, severities = t["corruptions"], t.get("severities", [1, 2, 3, 4, 5])
    if names == ["all"]:
        names = list(CORRUPTIONS)
    if not names or not all(isinstance(c, str) for c in names):
        raise ConfigError(f"{where}.corruptions must be a non-empty list of names (or [\"all\"]); received "
                          f"{names!r}. Known: {', '.join(CORRUPTIONS)}.")
    if not severities or len(set(severities)) != len(severities):
        raise ConfigError(f"{where}.severities must be a non-empty list of distinct integers 1..5; "
                          f"received {severities!r}.")
    out = []
    for c in names:
        for severity in severities:
            try:
                check_corruption(c, severity)
            except ConfigError as err:
                raise ConfigError(f"{where}: {err}") from None
        label = f"{t['name']}:{c}" if "name" in t else c
        out.append(AttackConfig(name=label, type="corruption", eps=tuple(float(v) for v in severities),
                                options={"corruption": c, "seed": t.get("seed", 0)}))
    return out


def _image_features(data: dict[str, Any]) -> int | None:
    """``C * H * W`` of the images ``[data]`` describes (bounds L2 and L1 eps), if known."""
    sizes = {"fashion_mnist": 28 * 28, "digits": 8 * 8}
    dataset = data.get("dataset", "fashion_mnist")
    if dataset == "imagenet":
        crop = data.get("crop", 224)
        return 3 * crop * crop if isinstance(crop, int) else None
    return sizes.get(dataset)


def _parse_attacks(table: Any, i: int, model_names: list[str], n_features: int | None = None) -> list[AttackConfig]:
    if isinstance(table, dict) and table.get("type") == "corruption":
        return _parse_corruptions(table, f"[[attacks]] #{i + 1}")
    return [_parse_attack(table, i, model_names, n_features)]


def _parse_attack(table: Any, i: int, model_names: list[str], n_features: int | None = None) -> AttackConfig:
    where = f"[[attacks]] #{i + 1}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table (type = \"pgd\", eps = [...]); received {table!r}.")
    if not isinstance(table.get("type"), str) or table["type"] not in ATTACK_TYPES:
        kind = str(table.get("type"))
        raise ConfigError(f"{where}: unknown attack type {table.get('type')!r}."
                          f"{suggest(kind, ATTACK_TYPES)} Known: {', '.join(ATTACK_TYPES)}.")
    kind_spec = ATTACK_TYPES[table["type"]]
    options = dict(kind_spec.options)
    t = _check_keys(table, {"name": str, "type": str, "eps": list, **options}, where,
                    required=("type", "eps"))
    eps = t["eps"]
    if not eps or not all(isinstance(e, int | float) and not isinstance(e, bool) for e in eps):
        raise ConfigError(f"{where}.eps must be a non-empty list of numbers; received {eps!r}.")
    unbounded_ok = kind_spec.unbounded  # a minimal-perturbation attack may run unbounded
    opts = {k: v for k, v in t.items() if k in options}
    norm = opts.get("norm", "inf")
    for e in eps:  # by threat model: L-inf <= 1, L2 <= sqrt(C*H*W), L1 <= C*H*W (pixel units)
        try:
            check_eps(e, allow_inf=unbounded_ok, norm=str(norm) if norm in ("inf", "2", "1") else "inf",
                      n_features=n_features)
        except ConfigError as err:
            raise ConfigError(f"{where}.eps: {err}") from None
    if kind_spec.check is not None:
        kind_spec.check(opts, where, model_names)
    config = AttackConfig(name=t.get("name", t["type"]), type=t["type"],
                          eps=tuple(float(e) for e in eps), options=opts)
    config.build(max(config.eps))  # validates the options now, before any work starts
    return config


def _parse_analyses(raw: dict[str, Any], model_names: list[str]) -> tuple[
        dict[str, dict[str, Any]], dict[str, AnalysisOptions], dict[str, dict[str, Any]],
        dict[str, ComparisonOptions]]:
    """The ``[analyses]`` and ``[comparisons]`` tables: raw tables and validated options."""
    from robustlens.study.analyses import ANALYSES, COMPARISONS, load_plugins, parse_options

    load_plugins()
    analyses = dict(raw.get("analyses", {}))
    comparisons = dict(raw.get("comparisons", {}))
    # A model comparison may also be given among the analyses ([analyses.sweet_spot]); it runs
    # after the models all the same.
    for key in [k for k in analyses if k in COMPARISONS and k not in ANALYSES]:
        if key in comparisons:
            raise ConfigError(f"model comparison {key!r} is given twice, as [analyses.{key}] and "
                              f"[comparisons.{key}]; keep one of them.")
        comparisons[key] = analyses.pop(key)
    options: dict[str, AnalysisOptions] = {}
    for key, table in analyses.items():
        if key not in ANALYSES:
            raise ConfigError(f"unknown analysis {key!r} in [analyses].{suggest(key, [*ANALYSES, *COMPARISONS])} "
                              f"Known: {', '.join(sorted([*ANALYSES, *COMPARISONS]))}.")
        options[key] = parse_options(ANALYSES[key].Options, table, f"[analyses.{key}]")
    compare_options: dict[str, ComparisonOptions] = {}
    for key, table in comparisons.items():
        if key not in COMPARISONS:
            raise ConfigError(f"unknown model comparison {key!r} in [comparisons].{suggest(key, COMPARISONS)} "
                              f"Known: {', '.join(sorted(COMPARISONS)) or 'none'}.")
        opts = parse_options(COMPARISONS[key].Options, table, f"[comparisons.{key}]")
        unknown = [m for m in opts.models if m not in model_names]
        if unknown:
            raise ConfigError(f"[comparisons.{key}].models names {unknown[0]!r}, which is not a model of "
                              f"this study ({', '.join(model_names)}).{suggest(unknown[0], model_names)}")
        compare_options[key] = opts
    return ({k: dict(v) for k, v in analyses.items()}, options,
            {k: dict(v) for k, v in comparisons.items()}, compare_options)


def parse_config(raw: dict[str, Any], base_dir: Path | None = None) -> StudyConfig:
    """Validate a study config given as a dict (the parsed TOML).

    Relative checkpoint and data paths are resolved against ``base_dir``.
    """
    _check_keys(raw, {"study": dict, "data": dict, "models": list, "attacks": list,
                      "analyses": dict, "comparisons": dict, "photos": dict}, "the study config",
                required=("models",))
    study = _check_keys(raw.get("study", {}), {"name": str, "seed": int, "batch_size": int,
                                               "device": str, "expected_passes": int,
                                               "checkpoint_every": float,
                                               "max_memory": (str, int, float)}, "[study]")
    if study.get("checkpoint_every", 0) < 0:
        raise ConfigError(f"[study].checkpoint_every must be >= 0 seconds (0: after every batch); "
                          f"received {study['checkpoint_every']}.")
    max_memory = None
    if "max_memory" in study:
        from robustlens.study.memory import parse_memory

        max_memory = parse_memory(study["max_memory"])
    if study.get("expected_passes", 1) < 1:
        raise ConfigError(f"[study].expected_passes must be >= 1; received {study['expected_passes']}.")
    data = _check_keys(raw.get("data", {}), {"dataset": str, "split": str, "n_per_class": int,
                                             "seed": int, "root": str, "ds_factor": int, "resize": int,
                                             "crop": int, "classes": (int, list, str)}, "[data]")
    if "classes" in data:
        data = {**data, "classes": _parse_classes(data["classes"])}
    from robustlens.data import DATASETS

    if data.get("dataset", "fashion_mnist") not in DATASETS:
        name = data["dataset"]
        raise ConfigError(f"[data] unknown dataset {name!r}.{suggest(name, DATASETS)} "
                          f"Known: {', '.join(DATASETS)}.")
    for key in ("n_per_class", "ds_factor", "resize", "crop"):
        if data.get(key, 1) < 1:
            raise ConfigError(f"[data].{key} must be >= 1; received {data[key]}.")
    if data.get("crop", 224) > data.get("resize", 256):
        raise ConfigError(f"[data].crop ({data['crop']}) must not exceed [data].resize "
                          f"({data.get('resize', 256)}).")
    if "n_per_class" not in data and data.get("ds_factor", 1) > 1:
        data = {**data, "n_per_class": None}  # ds_factor alone picks the images
    base = base_dir or Path.cwd()
    if "root" in data:
        data = {**data, "root": str((base / Path(data["root"]).expanduser()).resolve())}
    models = tuple(_parse_model(m, i) for i, m in enumerate(raw["models"]))
    names = [m.name for m in models]
    if not models:
        raise ConfigError("the study config lists no [[models]].")
    if len(set(names)) != len(names):
        raise ConfigError(f"model names must be unique; received {names}.")
    def resolve(path: str | None) -> str | None:
        return None if path is None else str((base / Path(path).expanduser()).resolve())

    models = tuple(ModelConfig(**{**m.__dict__, "checkpoint": resolve(m.checkpoint), "weights": resolve(m.weights)})
                   for m in models)
    n_features = _image_features(data)
    attacks = tuple(c for i, a in enumerate(raw.get("attacks", []))
                    for c in _parse_attacks(a, i, names, n_features))
    if len({a.name for a in attacks}) != len(attacks):
        raise ConfigError(f"attack names must be unique; received {[a.name for a in attacks]}.")
    analyses, analysis_options, comparisons, comparison_options = _parse_analyses(raw, names)
    batch_size = study.get("batch_size", 250)
    if batch_size < 1:
        raise ConfigError(f"[study].batch_size must be >= 1; received {batch_size}.")
    device = study.get("device", "auto")
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"[study].device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; received {device!r}.")
    photos = None
    if "photos" in raw:
        from robustlens.study.photos import parse_photos

        photos = parse_photos(raw["photos"], base)
    return StudyConfig(
        name=study.get("name", "study"), data=DataConfig(**data), models=models, attacks=attacks,
        analyses=analyses, seed=study.get("seed", 0),
        batch_size=batch_size, device=device, expected_passes=study.get("expected_passes", 8),
        checkpoint_every=float(study.get("checkpoint_every", 60.0)), max_memory=max_memory, raw=raw, photos=photos,
        comparisons=comparisons, analysis_options=analysis_options, comparison_options=comparison_options,
    )


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study config file (TOML)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"study config not found: {p}.")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p} is not valid TOML: {err}.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p} is not a text file.") from None
    try:
        return parse_config(raw, base_dir=p.parent)
    except TypeError as err:  # a dataclass rejecting a value
        raise ConfigError(f"{p}: {err}") from None
    except RobustlensError as err:
        raise type(err)(f"{p}: {err}") from None
