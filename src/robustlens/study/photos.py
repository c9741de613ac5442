"""Photographs through an ImageNet classifier: predictions, saliency and sensitive channels.

The photos part of a study (issue 8.2) looks at one ImageNet classifier (by default the
packaged EfficientNet-Lite0) on a few natural photographs (scikit-image's bundled ones, or
local image files). Each photo is resized and centre-cropped like ImageNet val, attacked with
L-inf PGD, and compared clean vs adversarial. The attack is untargeted (away from the photo's
true class given in ``labels``, else from the model's own clean top-1 class) or, for the
photos ``target`` names, targeted: towards a chosen class, the lecture's panda -> gibbon.

- the top-k predicted classes with their names and probabilities (``photo_predictions``;
  with the class attacked from, the target, its probability and whether the attack reached
  it);
- saliency maps of each image's own top-1 class (``photo_saliency``, tidy pixel rows; the
  photos themselves are the rows with ``method = "input"``);
- the S2 sensitivity of every channel of the ranked layers, over the photo pairs
  (``photo_sensitivity``), and activation-maximization renders of the ``featurevis_top_k``
  most sensitive channels (``photo_featurevis``, ``"layer#C"`` units).

In a study config it is the optional ``[photos]`` table::

    [photos]
    images = ["chelsea", "coffee", "rocket"]   # scikit-image names or image files
    eps = 0.00784                              # 2/255, pixel units
    steps = 10
    saliency_methods = ["gradient", "smoothgrad"]
    featurevis_top_k = 3
    featurevis_steps = 48
    featurevis_size = 96
    target = "gibbon"                          # or { chelsea = "gibbon", coffee = 504 }
    labels = { coffee = "espresso" }           # true classes, where known

A class is named by its index, its ImageNet WordNet id (``"n02483362"``) or its name
(``"gibbon"``; exact, else ignoring case). An unknown name (close matches are suggested), a
target equal to a photo's true class, or a photo the config does not list is a
:class:`~robustlens.errors.ConfigError` when the config is read; a target equal to the
model's clean top-1 class of a photo without a label is one before the attack runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from robustlens.errors import ConfigError, RobustlensError, suggest
from robustlens.study.config import _check_keys

__all__ = ["SKIMAGE_PHOTOS", "PhotosConfig", "load_photo", "parse_photos", "photos_figures", "run_photos"]

log = logging.getLogger(__name__)

#: scikit-image's bundled photographs that load without a download (grey ones become RGB).
SKIMAGE_PHOTOS = ("astronaut", "brick", "camera", "cat", "cell", "chelsea", "clock", "coffee", "coins",
                  "colorwheel", "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "logo",
                  "moon", "page", "retina", "rocket", "text")
ClassName = str | int
"""A class: its index, its ImageNet WordNet id or its name."""
_SALIENCY = ("gradient", "gradient_x_input", "guided_backprop", "smoothgrad", "integrated_gradients")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class PhotosConfig:
    """What the photos part looks at, and how hard.

    Attributes:
        architecture: a registered ImageNet classifier (``robustlens models``).
        weights: a local weights file for it; ``None`` uses the weights its package ships
            (``pretrained``), as for ``efficientnet_lite0``.
        images: scikit-image photo names (:data:`SKIMAGE_PHOTOS`) or image file paths.
        resize: ImageNet val geometry: the shorter side is resized to this (px).
        crop: then the centre ``crop`` x ``crop`` square is kept (px).
        eps: L-inf radius of the PGD attack, pixel units (2/255 by default).
        steps: PGD steps.
        step_size: PGD step (``None``: ``2.5 * eps / steps``).
        random_start: PGD from a random point of the eps-ball.
        top_classes: predicted classes kept per image (>= 3: the figure titles show 3).
        saliency_methods: any of ``gradient, gradient_x_input, guided_backprop, smoothgrad,
            integrated_gradients``.
        saliency_samples: SmoothGrad's noisy copies.
        saliency_sigma: SmoothGrad's noise (fraction of the pixel range).
        layers: layers whose channels are ranked (names, globs, ``"type:Name"``); ``None``:
            every ReLU and ReLU6 of the model.
        featurevis_top_k: most sensitive channels rendered.
        featurevis_steps: render steps per channel.
        featurevis_size: side of the rendered image, px (upsampled to ``crop`` for the model).
        seed: seeds the attack's random start, SmoothGrad's noise and the renders.
        target: the class the attack pushes the photos towards (targeted PGD): one class for
            every photo, or ``(photo, class)`` pairs for some photos (the others are attacked
            untargeted); ``None``: every photo untargeted. Photos are named as in
            ``photo_predictions`` (scikit-image names; files by their names without the
            extension).
        labels: ``(photo, class)`` pairs giving the true class of some photos: their
            untargeted attack pushes away from it (instead of the clean top-1 class), and a
            target must differ from it.
    """

    architecture: str = "efficientnet_lite0"
    weights: str | None = None
    images: tuple[str, ...] = ("chelsea", "coffee", "rocket")
    resize: int = 256
    crop: int = 224
    eps: float = 2 / 255
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    top_classes: int = 5
    saliency_methods: tuple[str, ...] = ("gradient", "smoothgrad")
    saliency_samples: int = 8
    saliency_sigma: float = 0.15
    layers: tuple[str, ...] | None = None
    featurevis_top_k: int = 3
    featurevis_steps: int = 48
    featurevis_size: int = 96
    seed: int = 0
    target: ClassName | tuple[tuple[str, ClassName], ...] | None = None
    labels: tuple[tuple[str, ClassName], ...] = ()

    def __post_init__(self) -> None:
        from robustlens.models import list_models, model_defaults

        where = "[photos]"
        if self.architecture not in list_models():
            raise ConfigError(f"{where}.architecture: unknown architecture {self.architecture!r}."
                              f"{suggest(self.architecture, list_models())} Run `robustlens models` for the list.")
        defaults = model_defaults(self.architecture)
        if self.weights is None and defaults.get("pretrained") is None:
            raise ConfigError(f"{where}: architecture {self.architecture!r} ships no pretrained weights; "
                              "give `weights = \"PATH\"`.")
        if self.weights is not None and "weights" not in defaults:
            raise ConfigError(f"{where}: architecture {self.architecture!r} takes no weights file.")
        if not self.images:
            raise ConfigError(f"{where}.images must list at least one photo.")
        for image in self.images:
            if image not in SKIMAGE_PHOTOS and not Path(image).is_file():
                raise ConfigError(f"{where}.images: {image!r} is neither a scikit-image photo "
                                  f"nor an image file.{suggest(image, SKIMAGE_PHOTOS)} "
                                  f"Photos: {', '.join(SKIMAGE_PHOTOS)}.")
        labels = [_label(i) for i in self.images]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"{where}.images must name each photo once (files by their names without "
                              f"the extension); received {list(self.images)}.")
        for key, minimum in (("resize", 1), ("crop", 1), ("steps", 1), ("top_classes", 3),
                             ("saliency_samples", 1), ("featurevis_top_k", 0), ("featurevis_steps", 1),
                             ("featurevis_size", 8), ("seed", 0)):
            value = getattr(self, key)
            if not _is_int(value) or value < minimum:
                raise ConfigError(f"{where}.{key} must be an integer >= {minimum}; received {value!r}.")
        if self.crop > self.resize:
            raise ConfigError(f"{where}.crop ({self.crop}) must not exceed {where}.resize ({self.resize}).")
        if not 0 < self.eps <= 1:
            raise ConfigError(f"{where}.eps must lie in (0, 1] (pixel units); received {self.eps!r}.")
        if self.step_size is not None and not self.step_size > 0:
            raise ConfigError(f"{where}.step_size must be > 0 (pixel units); received {self.step_size!r}.")
        if self.saliency_sigma < 0:
            raise ConfigError(f"{where}.saliency_sigma must be >= 0; received {self.saliency_sigma!r}.")
        bad = [m for m in self.saliency_methods if m not in _SALIENCY]
        if bad:
            raise ConfigError(f"{where}.saliency_methods: unknown method {bad[0]!r}.{suggest(bad[0], _SALIENCY)} "
                              f"Known: {', '.join(_SALIENCY)}.")
        true = self.label_classes()
        for photo, k in self.target_classes().items():
            if true.get(photo) == k:
                raise ConfigError(f"{where}.target: the target of {photo!r} ({self._describe(k)}) is its true class "
                                  f"(labels); a targeted attack needs another class.")

    def class_names(self) -> tuple[str, ...]:
        """The architecture's class names in index order (ImageNet's for 1000 classes, else the indices)."""
        from robustlens.models import model_info
        from robustlens.models.zoo import imagenet_classes

        n = model_info(self.architecture).num_classes
        return imagenet_classes() if n == 1000 else tuple(str(k) for k in range(n))

    def _describe(self, index: int) -> str:
        return f"class {index}, {self.class_names()[index]!r}"

    def _resolve(self, pairs: tuple[tuple[str, ClassName], ...], key: str) -> dict[str, int]:
        from robustlens.data import imagenet_wnids, resolve_class

        names = self.class_names()
        ids = imagenet_wnids() if len(names) == 1000 else ()
        photos = [_label(i) for i in self.images]
        out: dict[str, int] = {}
        for photo, entry in pairs:
            if photo not in photos:
                raise ConfigError(f"[photos].{key}: {photo!r} is not one of the photos ({', '.join(photos)})."
                                  f"{suggest(photo, photos)} Name photos as in [photos].images (files by their "
                                  "names without the extension).")
            try:
                out[photo] = resolve_class(entry, names, ids, where=f"[photos].{key}.{photo}")
            except RobustlensError as err:
                raise ConfigError(str(err)) from None
        return out

    def target_classes(self) -> dict[str, int]:
        """Photo -> index of the class its attack is targeted towards (photos without a target left out).

        Raises:
            ConfigError: an unknown photo or class (close matches suggested), an ambiguous name.
        """
        if self.target is None:
            return {}
        if isinstance(self.target, tuple):
            return self._resolve(self.target, "target")
        return self._resolve(tuple((_label(i), self.target) for i in self.images), "target")

    def label_classes(self) -> dict[str, int]:
        """Photo -> index of its true class, for the photos ``labels`` names.

        Raises:
            ConfigError: an unknown photo or class (close matches suggested), an ambiguous name.
        """
        return self._resolve(self.labels, "labels")


_KEYS: dict[str, type | tuple[type, ...]] = {
    "architecture": str, "weights": str, "images": list, "resize": int, "crop": int, "eps": float,
    "steps": int, "step_size": float, "random_start": bool, "top_classes": int, "saliency_methods": list,
    "saliency_samples": int, "saliency_sigma": float, "layers": (str, list), "featurevis_top_k": int,
    "featurevis_steps": int, "featurevis_size": int, "seed": int, "target": (str, int, dict), "labels": dict,
}


def _class_pairs(table: dict[str, Any], where: str) -> tuple[tuple[str, ClassName], ...]:
    """A TOML table photo -> class as ``(photo, class)`` pairs; classes are names, ids or indices."""
    for photo, entry in table.items():
        if isinstance(entry, bool) or not isinstance(entry, str | int):
            raise ConfigError(f"{where}.{photo} must be a class name, a WordNet id or a class index; "
                              f"received {entry!r}.")
    return tuple((str(p), e) for p, e in table.items())


def _strings(value: list[Any], where: str) -> tuple[str, ...]:
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings; received {value!r}.")
    return tuple(value)


def parse_photos(table: dict[str, Any], base_dir: Path) -> PhotosConfig:
    """Validate a ``[photos]`` table; relative image and weights paths resolve against ``base_dir``.

    Raises:
        ConfigError: unknown keys (with close matches), wrong types or values, missing photos,
            unknown classes or photos in ``target`` and ``labels``, a target equal to a true class.
    """
    t = dict(_check_keys(table, _KEYS, "[photos]"))

    def resolve(path: str) -> str:
        return str((base_dir / Path(path).expanduser()).resolve())

    if "images" in t:
        images = []
        for image in _strings(t["images"], "[photos].images"):
            if image not in SKIMAGE_PHOTOS:
                path = resolve(image)
                if not Path(path).is_file():
                    raise ConfigError(f"[photos].images: {image!r} is neither a scikit-image photo nor an "
                                      f"image file (looked for {path}).{suggest(image, SKIMAGE_PHOTOS)} "
                                      f"Photos: {', '.join(SKIMAGE_PHOTOS)}.")
                image = path
            images.append(image)
        t["images"] = tuple(images)
    if "saliency_methods" in t:
        t["saliency_methods"] = _strings(t["saliency_methods"], "[photos].saliency_methods")
    if "layers" in t:
        layers = t["layers"]
        t["layers"] = (layers,) if isinstance(layers, str) else _strings(layers, "[photos].layers")
    if "weights" in t:
        t["weights"] = resolve(t["weights"])
    if isinstance(t.get("target"), dict):
        t["target"] = _class_pairs(t["target"], "[photos].target")
    if "labels" in t:
        t["labels"] = _class_pairs(t["labels"], "[photos].labels")
    for key in ("eps", "step_size", "saliency_sigma"):
        if key in t:
            t[key] = float(t[key])
    return PhotosConfig(**t)


def load_photo(image: str) -> np.ndarray:
    """A scikit-image photo by name, or an image file, as an (H, W, 3) uint8 array."""
    if image in SKIMAGE_PHOTOS:
        import skimage.data

        arr = np.asarray(getattr(skimage.data, image)())
    else:
        import skimage.io

        arr = np.asarray(skimage.io.imread(image))
    if arr.dtype != np.uint8:
        arr = (arr.astype(np.float64) * (255.0 if arr.max() <= 1 else 1.0)).clip(0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ConfigError(f"[photos].images: {image!r} is not an RGB or grey image (shape {arr.shape}).")
    if arr.shape[2] == 4:  # composite onto white
        alpha = arr[..., 3:].astype(np.float64) / 255.0
        arr = (arr[..., :3] * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
    return arr


def _label(image: str) -> str:
    return image if image in SKIMAGE_PHOTOS else Path(image).stem


def _build_model(cfg: PhotosConfig) -> nn.Module:
    from robustlens.models import create_model

    if cfg.weights is not None:
        return create_model(cfg.architecture, weights=cfg.weights)
    return create_model(cfg.architecture, pretrained=True)


def _saliency_method(name: str, model: nn.Module, cfg: PhotosConfig) -> Any:
    from robustlens.visualization.saliency import saliency_method

    return saliency_method(name, model, cfg.saliency_sigma, cfg.saliency_samples, ig_steps=32, seed=cfg.seed)


def _ranked_layers(model: nn.Module, cfg: PhotosConfig) -> list[str]:
    from robustlens.activations.layers import resolve_layers
    from robustlens.errors import RobustlensError

    if cfg.layers is not None:
        try:
            resolve_layers(model, list(cfg.layers))
        except RobustlensError as err:
            raise ConfigError(f"[photos].layers: {err}") from None
        return list(cfg.layers)
    kinds = {type(m).__name__ for m in model.modules()}
    specs = [f"type:{k}" for k in ("ReLU", "ReLU6") if k in kinds]
    if not specs:
        raise ConfigError(f"[photos]: {cfg.architecture!r} has no ReLU or ReLU6 modules; name the layers "
                          "to rank with `layers = [...]`.")
    return specs


def _attack(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, targets: list[int | None],
            cfg: PhotosConfig) -> torch.Tensor:
    """PGD on every photo: untargeted away from ``labels``, targeted where ``targets`` names a class."""
    from robustlens.attacks import PGD, Targeted

    x_adv = x.clone()
    generator = torch.Generator(device=x.device).manual_seed(cfg.seed)
    free = [i for i, t in enumerate(targets) if t is None]
    aimed = [i for i, t in enumerate(targets) if t is not None]
    modes: tuple[tuple[list[int], Targeted], ...] = ((free, None), (aimed, "given"))
    for chosen, mode in modes:
        if not chosen:
            continue
        attack = PGD(eps=cfg.eps, steps=cfg.steps, step_size=cfg.step_size, random_start=cfg.random_start,
                     seed=cfg.seed, targeted=mode)
        goal = torch.tensor([targets[i] for i in chosen], device=x.device) if mode else None
        x_adv[chosen] = attack(model, x[chosen], labels[chosen], generator=generator, targets=goal)
    return x_adv


def run_photos(cfg: PhotosConfig, device: torch.device | str = "cpu",
               progress: bool = False) -> dict[str, pd.DataFrame]:
    """Run the photos part and return its tidy tables.

    Returns:
        ``photo_predictions`` (photo, condition, eps, rank, class_index, class_name,
        probability, clean_top1; label_index / label_name: the class the attack pushes away
        from; target_index / target_name / target_probability / target_reached: the target,
        its probability in that condition and whether it is the top-1 class, empty for an
        untargeted photo), ``photo_saliency`` (photo, condition, eps, method, target, target_name
        + pixel rows), ``photo_sensitivity`` (one row per channel of the ranked layers),
        ``photo_featurevis`` (rank, unit, layer, sensitivity, final_objective + pixel rows).
    """
    from tqdm.auto import tqdm

    from robustlens.activations.paired import record_paired
    from robustlens.analysis.sensitivity import ChannelSensitivity, top_k_channels
    from robustlens.models.zoo import imagenet_classes, prepare_imagenet_image
    from robustlens.visualization import render, saliency_heatmap
    from robustlens.visualization.tables import pixel_rows

    device = torch.device(device)
    model = _build_model(cfg).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    layers = _ranked_layers(model, cfg)  # unknown layers fail before any work
    labels = [_label(i) for i in cfg.images]
    x = torch.stack([prepare_imagenet_image(load_photo(i), cfg.resize, cfg.crop) for i in cfg.images]).to(device)
    n_units = 2 + len(cfg.saliency_methods) + cfg.featurevis_top_k
    bar = tqdm(total=n_units, disable=not progress, desc="photos", unit="step", leave=False)
    with torch.inference_mode():
        clean_logits = model(x)
    n_classes = clean_logits.shape[1]
    names = imagenet_classes() if n_classes == 1000 else tuple(str(k) for k in range(n_classes))
    clean_top1 = clean_logits.argmax(1)
    true, wanted = cfg.label_classes(), cfg.target_classes()
    attacked_from = torch.tensor([true.get(p, int(clean_top1[i])) for i, p in enumerate(labels)], device=device)
    for i, photo in enumerate(labels):
        if photo in wanted and photo not in true and wanted[photo] == int(clean_top1[i]):
            raise ConfigError(f"[photos].target: the target of {photo!r} (class {wanted[photo]}, "
                              f"{names[wanted[photo]]!r}) is already the model's clean top-1 class; choose another "
                              f"class, or give the photo's true class in [photos].labels.")
    x_adv = _attack(model, x, attacked_from, [wanted.get(p) for p in labels], cfg)
    with torch.inference_mode():
        adv_logits = model(x_adv)
    bar.update(1)

    rows = []
    conditions = (("clean", 0.0, x, clean_logits), ("adversarial", cfg.eps, x_adv, adv_logits))
    for condition, eps, _, logits in conditions:
        p_all = logits.float().softmax(1)
        probs, idx = p_all.topk(min(cfg.top_classes, n_classes), dim=1)
        for i, photo in enumerate(labels):
            target = wanted.get(photo)
            common = {"label_index": int(attacked_from[i]), "label_name": names[int(attacked_from[i])],
                      "target_index": target, "target_name": None if target is None else names[target],
                      "target_probability": float("nan") if target is None else float(p_all[i, target]),
                      "target_reached": None if target is None else bool(int(idx[i, 0]) == target)}
            for r in range(idx.shape[1]):
                k = int(idx[i, r])
                rows.append({"photo": photo, "condition": condition, "eps": eps, "rank": r + 1,
                             "class_index": k, "class_name": names[k], "probability": float(probs[i, r]),
                             "clean_top1": names[int(clean_top1[i])], **common})
    predictions = pd.DataFrame(rows).astype({"target_index": "Int64", "target_reached": "boolean"})

    frames = []
    for condition, eps, images, logits in conditions:
        target = logits.argmax(1)
        for i, photo in enumerate(labels):
            frames.append(pixel_rows(images[i], photo=photo, condition=condition, eps=eps, method="input",
                                     target=int(target[i]), target_name=names[int(target[i])]))
    both, both_target = torch.cat([x, x_adv]), torch.cat([clean_top1, adv_logits.argmax(1)])
    for method in cfg.saliency_methods:
        maps = saliency_heatmap(_saliency_method(method, model, cfg).attribute(both, target=both_target))
        for j in range(len(both)):
            condition, eps = conditions[j // len(x)][:2]
            k = int(both_target[j])
            frames.append(pixel_rows(maps[j][None], photo=labels[j % len(x)], condition=condition, eps=eps,
                                     method=method, target=k, target_name=names[k]))
        bar.update(1)
    saliency = pd.concat(frames, ignore_index=True)

    clean_rec, adv_rec = record_paired(model, x, x_adv, layers, seed=cfg.seed)
    reducer = ChannelSensitivity()
    reducer.update(clean_rec, adv_rec)
    sens = reducer.result()
    sens.insert(0, "eps", cfg.eps)
    bar.update(1)

    frames = []
    if cfg.featurevis_top_k > 0:
        top = top_k_channels(sens, cfg.featurevis_top_k, by=[])
        for rank, (unit, layer, s) in enumerate(zip(top["unit"], top["layer"], top["sensitivity"], strict=True), 1):
            result = render(model, str(unit), image_size=cfg.featurevis_size, input_size=cfg.crop,
                            steps=cfg.featurevis_steps, seed=cfg.seed)
            frames.append(pixel_rows(result.images[0], rank=rank, unit=str(unit), layer=str(layer),
                                     sensitivity=float(s), final_objective=float(-result.losses[-1])))
            bar.update(1)
    bar.close()
    featurevis = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["rank", "unit", "layer", "sensitivity", "final_objective", "channel", "y", "x", "value"])
    for df in (predictions, saliency, sens, featurevis):
        df.insert(0, "architecture", cfg.architecture)
    return {"photo_predictions": predictions, "photo_saliency": saliency, "photo_sensitivity": sens,
            "photo_featurevis": featurevis}


def _top3(predictions: pd.DataFrame, photo: str, condition: str) -> str:
    sel = predictions[(predictions["photo"] == photo) & (predictions["condition"] == condition)]
    sel = sel.sort_values("rank").head(3)
    return "\n".join(f"{n} {p:.0%}" for n, p in zip(sel["class_name"], sel["probability"], strict=True))


def _target_line(predictions: pd.DataFrame, photo: str) -> str:
    """``"-> gibbon: reached, 91%"`` for a targeted photo, ``""`` for an untargeted one."""
    if "target_name" not in predictions:
        return ""
    sel = predictions[(predictions["photo"] == photo) & (predictions["condition"] == "adversarial")]
    if sel.empty or pd.isna(sel["target_index"].iloc[0]):
        return ""
    verdict = "reached" if bool(sel["target_reached"].iloc[0]) else "not reached"
    return f" -> {str(sel['target_name'].iloc[0])[:20]}: {verdict}, {float(sel['target_probability'].iloc[0]):.0%}"


def _image(rows: pd.DataFrame) -> torch.Tensor:
    from robustlens.visualization.tables import rows_to_image

    return rows_to_image(rows)


def _show(ax: Any, image: torch.Tensor, title: str) -> None:
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=7)


def photos_figures(tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
    """Titled figures of :func:`run_photos`'s tables: photos clean vs adversarial with their
    top-3 classes (and, for a targeted photo, its target, whether the attack reached it and
    the target's probability), saliency maps, and renders of the most sensitive channels.

    Args:
        tables: the tables :func:`run_photos` returns (or read back from a run directory).
    """
    from robustlens.visualization import plot_image_rows

    out: list[tuple[str, Figure]] = []
    pred, sal = tables.get("photo_predictions"), tables.get("photo_saliency")
    if pred is None or pred.empty or sal is None or sal.empty:
        return out
    photos = list(dict.fromkeys(pred["photo"]))
    eps = float(pred.loc[pred["condition"] == "adversarial", "eps"].max())
    arch = str(pred["architecture"].iloc[0]) if "architecture" in pred else "model"
    inputs = sal[sal["method"] == "input"]
    fig = Figure(figsize=(7.5, 2.9 * len(photos) + 0.4), layout="constrained")
    axes = fig.subplots(len(photos), 3, squeeze=False)
    for r, photo in enumerate(photos):
        clean = _image(inputs[(inputs["photo"] == photo) & (inputs["condition"] == "clean")])
        adv = _image(inputs[(inputs["photo"] == photo) & (inputs["condition"] == "adversarial")])
        delta = adv - clean
        scale = float(delta.abs().max()) or 1.0
        for c, (img, title) in enumerate(((clean, f"clean\n{_top3(pred, photo, 'clean')}"),
                                          (adv, f"PGD eps={eps * 255:.3g}/255{_target_line(pred, photo)}\n"
                                                f"{_top3(pred, photo, 'adversarial')}"),
                                          (0.5 + 0.5 * delta / scale, f"perturbation\n(x{0.5 / scale:.0f})"))):
            _show(axes[r, c], img, title)
        axes[r, 0].set_ylabel(photo, fontsize=9)
    targeted = "target_index" in pred and bool(pred["target_index"].notna().any())
    title = f"{arch} on photographs: clean vs {'targeted ' if targeted else ''}adversarial, top-3 classes"
    fig.suptitle(title, fontsize=10)
    out.append((title, fig))

    rows: dict[str, list[tuple[str, torch.Tensor]]] = {}
    methods = [m for m in dict.fromkeys(sal["method"]) if m != "input"]
    for photo in photos:
        for condition in ("clean", "adversarial"):
            cells = sal[(sal["photo"] == photo) & (sal["condition"] == condition)]
            items = [(str(cells.loc[cells["method"] == "input", "target_name"].iloc[0])[:24],
                      _image(cells[cells["method"] == "input"]))]
            items += [(m, _image(cells[cells["method"] == m])) for m in methods]
            rows[f"{photo}\n{condition}"] = items
    if methods:
        title = f"{arch}: saliency of each image's top-1 class, clean vs PGD eps={eps * 255:.3g}/255"
        out.append((title, plot_image_rows(rows, title)))

    fv = tables.get("photo_featurevis")
    if fv is not None and not fv.empty:
        items = [(f"{rank}. {unit}", _image(cell)) for (rank, unit), cell in fv.groupby(["rank", "unit"], sort=True)]
        title = f"{arch}: the channels most sensitive to the perturbation, rendered"
        out.append((title, plot_image_rows({arch: items}, title)))
    return out
