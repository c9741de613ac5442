"""``robustlens visualize ...``: renders, saliency maps, weights, DeepDream, dataset examples.

Each subcommand loads a registered model (``--model``, optionally ``--checkpoint`` for
trained weights), computes one thing and saves one figure (``--out fig.png``)::

    robustlens visualize render --model efficientnet_lite0 "_blocks.10#3" --out r.png
    robustlens visualize render --model resnet50 --weights resnet50-0676ba61.pth layer4:0 --out r.png
    robustlens visualize saliency --model fmnist_cnn --checkpoint ck --out s.png
    robustlens visualize weights --model vone_fmnist_cnn --out w.png
    robustlens visualize dream --model efficientnet_lite0 model._blocks.8 --out d.png
    robustlens visualize examples --model fmnist_cnn --checkpoint ck features.4#3 --out e.png
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustlens.errors import ConfigError, RobustlensError

__all__ = ["add_parser", "check_args", "run"]

_METHODS = ("gradient", "gradient_x_input", "guided_backprop", "smoothgrad",
            "integrated_gradients")


def add_parser(subparsers: Any) -> None:
    """Add the ``visualize`` command to the CLI's subparsers."""
    p = subparsers.add_parser("visualize", help="feature visualization, saliency, weights")
    sub = p.add_subparsers(dest="what", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--model", required=True, help="registered architecture")
        q.add_argument("--checkpoint", help="robustlens checkpoint with trained weights")
        q.add_argument("--weights", help="released weights file of the model's family (torchvision .pth, "
                       "VOneNet / CORnet-S releases, or a robustlens .safetensors)")
        q.add_argument("--allow-pickle", action="store_true",
                       help="let --weights be a full pickle (only for files you trust)")
        q.add_argument("--out", type=Path, required=True, help="figure file (.png, .pdf, .svg)")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")

    r = sub.add_parser("render", help="activation maximization of a channel")
    common(r)
    r.add_argument("unit", help="'layer#C' or Lucent's 'layer:C' (channel C of the layer's output)")
    r.add_argument("--steps", type=int, default=512)
    r.add_argument("--size", type=int, help="image side, pixels (default 128 RGB / native)")
    r.add_argument("--eot", type=int, default=1, help="noise samples per step (VOneNets)")

    s = sub.add_parser("saliency", help="saliency maps of dataset or photo images")
    common(s)
    s.add_argument("--methods", nargs="+", choices=_METHODS,
                   default=["gradient", "guided_backprop", "smoothgrad"])
    s.add_argument("--n-images", type=int, default=4)
    s.add_argument("--sigma", type=float, default=0.15, help="SmoothGrad noise, pixel range")
    s.add_argument("--data-root")

    w = sub.add_parser("weights", help="first-layer kernels (Gabor layout for VOneNets)")
    common(w)

    d = sub.add_parser("dream", help="DeepDream on a photo (RGB) or a dataset image")
    common(d)
    d.add_argument("layer", help="layer call name, or 'layer#C' for a channel")
    d.add_argument("--octaves", type=int, default=4)
    d.add_argument("--steps", type=int, default=10)
    d.add_argument("--data-root")

    e = sub.add_parser("examples", help="top dataset examples of a channel")
    common(e)
    e.add_argument("unit", help="'layer#C' or Lucent's 'layer:C'")
    e.add_argument("-k", type=int, default=9)
    e.add_argument("--data-root")


def _load(args: argparse.Namespace) -> tuple[nn.Module, Any]:
    from robustlens.models import create_model, load_checkpoint, model_info
    from robustlens.study.runner import resolve_device

    info = model_info(args.model)
    if args.checkpoint and args.weights:
        raise RobustlensError("give --checkpoint (a robustlens checkpoint) or --weights (a weights file), "
                              "not both.")
    if args.checkpoint:
        model, meta = load_checkpoint(args.checkpoint)
        if meta["architecture"] != args.model:
            raise RobustlensError(f"checkpoint {args.checkpoint} holds a {meta['architecture']!r},"
                                  f" not a {args.model!r}.")
    else:
        model = create_model(args.model, weights=args.weights, allow_pickle=args.allow_pickle, seed=args.seed)
    model = model.to(resolve_device(args.device)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, info


def _images(info: Any, n: int, root: str | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n test images for the model's dataset; photos for ImageNet models."""
    if info.dataset in ("fashion_mnist", "digits"):
        from robustlens.data import load_dataset

        return load_dataset(info.dataset, "test", root).get_batch(torch.arange(n))
    import skimage.data

    from robustlens.models import prepare_imagenet_image

    photos = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut()]
    side = info.input_size[-1]
    x = torch.stack([prepare_imagenet_image(p, resize=round(side * 8 / 7), crop=side)
                     for p in photos[:max(1, n)]])
    return x, None


def _figure_formats() -> tuple[str, ...]:
    """The file extensions matplotlib can save a figure as (``.png``, ``.pdf``, ``.svg``, ...)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return tuple(sorted("." + ext for ext in FigureCanvasBase.get_supported_filetypes()))


def check_args(args: argparse.Namespace) -> None:
    """Check every option of ``robustlens visualize WHAT`` before any model is loaded.

    Counts must be >= 1, SmoothGrad's sigma a finite number >= 0, ``--out`` a writable
    file with an extension matplotlib supports, and ``--model`` a registered model.

    Args:
        args: the parsed command line.

    Raises:
        RobustlensError: the first bad value, with what was expected.
    """
    import math

    from robustlens.io import check_output_file
    from robustlens.models import model_info

    counts = {"render": ("steps", "size", "eot"), "saliency": ("n_images",),
              "dream": ("octaves", "steps"), "examples": ("k",)}.get(args.what, ())
    for name in counts:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            flag = "-k" if name == "k" else "--" + name.replace("_", "-")
            raise ConfigError(f"visualize {args.what} {flag} must be an integer >= 1; received {value}.")
    sigma = getattr(args, "sigma", None)
    if sigma is not None and not (0 <= sigma < math.inf):
        raise ConfigError(f"visualize saliency --sigma (SmoothGrad noise, a fraction of the pixel range) "
                          f"must be a finite number >= 0, e.g. 0.15; received {sigma}.")
    model_info(args.model)
    check_output_file(args.out, what="--out", suffixes=_figure_formats())


def run(args: argparse.Namespace) -> int:
    """Run ``robustlens visualize WHAT``; returns the exit status."""
    from robustlens import visualization as vis
    from robustlens.models import model_device

    check_args(args)
    model, info = _load(args)
    device = model_device(model)
    c, h, _ = info.input_size
    if args.what == "render":
        side = args.size or (128 if c == 3 and h > 128 else h)
        result = vis.render(model, args.unit, image_size=side, input_size=h, steps=args.steps,
                            eot_samples=args.eot, seed=args.seed)
        fig = vis.plot_image_rows({args.model: [(args.unit, result.images[0])]},
                                  f"{args.model}: {result.objective}, {args.steps} steps")
    elif args.what == "saliency":
        x, y = _images(info, args.n_images, args.data_root)
        x = x.to(device)
        target = None if y is None else y.to(device)
        from robustlens.visualization.saliency import saliency_method

        maps = {name: saliency_method(name, model, args.sigma, 16).attribute(x, target=target)
                for name in args.methods}
        fig = vis.plot_saliency(x, maps, f"{args.model}: saliency")
    elif args.what == "weights":
        from robustlens.models.vone import VOneBlock

        has_vone = any(isinstance(m, VOneBlock) for m in model.modules())
        fig = vis.plot_gabor_layout(model) if has_vone else vis.plot_weights(model)
    elif args.what == "dream":
        x, _ = _images(info, 1, args.data_root)
        dream = vis.deepdream(model, x[:1].to(device), args.layer, octaves=args.octaves,
                              steps=args.steps, input_size=h if c == 1 else None, seed=args.seed)
        fig = vis.plot_image_rows({args.model: [("input", x[0]), (args.layer, dream[0])]},
                                  f"DeepDream on {args.layer}")
    else:
        from robustlens.data import load_dataset, to_memory

        if info.dataset not in ("fashion_mnist", "digits"):
            raise RobustlensError(f"dataset examples need a dataset; {args.model} is an "
                                  f"{info.dataset} model and no {info.dataset} data is embedded.")
        data = to_memory(load_dataset(info.dataset, "test", args.data_root))
        if args.k > len(data):
            raise ConfigError(f"visualize examples -k {args.k} asks for more examples than the {len(data)} "
                              f"test images of {info.dataset}; use -k {min(9, len(data))} (at most {len(data)}).")
        reducer = vis.DatasetExamples(model, args.unit, k=args.k)
        for chunk in data.images.split(500):
            reducer.update(chunk.to(device))
        fig = vis.plot_examples(reducer.result())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"saved {args.out}")
    return 0
