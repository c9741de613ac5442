"""Loading and writing VOneNet checkpoints in the released format (spec section 10.5).

A released file (``voneresnet50_e70.pth.tar``, ``vonealexnet_e70.pth.tar``,
``vonecornets_e70.pth.tar``, ``voneresnet50_at_e96.pth.tar``) is a ``torch.save``d dict with
``flags`` (training flags: ``arch``, ``stride``, channel counts, ``k_exc``, noise settings)
and ``state_dict`` (saved from DataParallel: keys start with ``module.``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlens.errors import CheckpointError
from robustlens.models._weights import extract_state_dict, read_weights_file, strip_prefix
from robustlens.models.checkpoint import load_state_dict_checked
from robustlens.models.vone._backends import RESNET_ARCHITECTURES
from robustlens.models.vone._block import VOneBlock
from robustlens.models.vone._kernel import gabor_bank
from robustlens.models.vone._params import sample_gabor_parameters
from robustlens.models.vone._vonenet import VOneNet, vonenet

__all__ = ["check_gabor_banks", "detect_gabor_provenance", "load_vonenet",
           "save_reference_checkpoint"]

log = logging.getLogger(__name__)

HOW_TO_GET = ("The released VOneNet weights (voneresnet50_e70.pth.tar, vonealexnet_e70.pth.tar, "
              "vonecornets_e70.pth.tar, ...) are linked from github.com/dicarlolab/vonenet; "
              "download one and pass its local path.")
_LEFTOVER_KEYS = ("vone_block.div_u.weight", "vone_block.div_t.weight")
_KNOWN_ARCHES = {a.replace("_", ""): a for a in RESNET_ARCHITECTURES} | {
    "alexnet": "alexnet", "cornets": "cornets"}
_Q0 = "vone_block.simple_conv_q0.weight"
_Q1 = "vone_block.simple_conv_q1.weight"


def _arch_id(name: str) -> str:
    return name.replace("_", "").lower()


def check_gabor_banks(q0: torch.Tensor, q1: torch.Tensor, source: str) -> dict[str, np.ndarray]:
    """Check that each filter of both banks has exactly one non-zero input-channel slice.

    Returns:
        ``{"q0": colours, "q1": colours}``: the input channel of every filter.

    Raises:
        CheckpointError: wrong shapes, or filters with zero or several non-zero slices.
    """
    if q0.ndim != 4 or q0.shape != q1.shape or q0.shape[-1] != q0.shape[-2]:
        raise CheckpointError(f"{source}: Gabor banks must both be (N, C, k, k); found "
                              f"{tuple(q0.shape)} and {tuple(q1.shape)}.")
    colors = {}
    for name, bank in (("q0", q0), ("q1", q1)):
        nonzero = bank.detach().abs().flatten(2).amax(2) > 0  # (N, C)
        counts = nonzero.sum(1)
        bad = torch.nonzero(counts != 1).flatten()
        if bad.numel():
            raise CheckpointError(
                f"{source}: the {name} Gabor bank is not a VOneNet bank: filter(s) "
                f"{bad[:5].tolist()} have {counts[bad[:5]].tolist()} non-zero input channels "
                "instead of exactly one."
            )
        colors[name] = nonzero.to(torch.uint8).argmax(1).cpu().numpy()
    return colors


def detect_gabor_provenance(block: VOneBlock, candidates: tuple[float, ...] = (9.0, 6.0),
                            seed: int = 0, rtol: float = 1e-4) -> float | None:
    """Which ``sf_max`` (if any) regenerates the block's banks from ``seed``.

    Each filter's non-zero slice is compared with kernels rebuilt from
    :func:`sample_gabor_parameters` (at the block's pixels per degree and kernel size);
    colours are ignored. The released checkpoints predate the 6 -> 9 default change.

    Returns:
        The matching ``sf_max``, or ``None`` when no candidate reproduces every filter to
        ``rtol`` of its peak.
    """
    q0 = block.simple_conv_q0.weight.detach().cpu().double()
    q1 = block.simple_conv_q1.weight.detach().cpu().double()
    n, k = q0.shape[0], q0.shape[-1]
    slice0 = q0.sum(1)  # one non-zero channel per filter, so the sum is that slice
    slice1 = q1.sum(1)
    ppd = block.image_size / block.visual_degrees
    for sf_max in candidates:
        p = sample_gabor_parameters(n, seed, sf_max=sf_max)
        f = p.sf / ppd
        th, ph = np.deg2rad(p.theta), np.deg2rad(p.phase)
        k0 = gabor_bank(f, p.nx / f, p.ny / f, th, ph, k).double()
        k1 = gabor_bank(f, p.nx / f, p.ny / f, th, ph + np.pi / 2, k).double()
        peak = k0.abs().flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
        if bool(((slice0 - k0).abs() <= rtol * peak).all()) and bool(
                ((slice1 - k1).abs() <= rtol * peak).all()):
            return sf_max
    return None


def load_vonenet(path: str | Path, arch: str | None = None, *, map_location: str = "cpu",
                 allow_pickle: bool = False, verify: bool = True, **options: Any) -> VOneNet:
    """Load a released VOneNet checkpoint (or a state dict in the same layout).

    Steps (spec 10.5): safe ``torch.load``; strip one ``module.`` prefix; drop the
    ``div_u`` / ``div_t`` leftovers of the adversarially trained file; build the block from
    the checkpoint's ``flags`` (stride, channel counts, k_exc, noise) with kernel size and N
    read from the Gabor banks' shape; fill missing ``num_batches_tracked``; load strictly;
    check that each Gabor filter uses one input channel; and (``verify``) record which
    ``sf_max`` regenerates the banks from ``gabor_seed = 0``.

    Args:
        path: local checkpoint file.
        arch: ``"resnet50"``, ``"alexnet"`` or ``"cornets"``; default from the file's flags.
        map_location: device for the tensors.
        allow_pickle: accept files with arbitrary Python objects (only if you trust them).
        verify: run the provenance check (regenerating 2 x 2 x N kernels, ~0.1 s).
        **options: :class:`VOneBlock` options for what the file does not say (e.g.
            ``image_size``, ``visual_degrees``, ``gabor_seed``); the file's flags win.

    Returns:
        A :class:`VOneNet` in eval mode; ``model.gabor_params`` holds ``source``,
        ``colors``, ``verified`` and ``sf_max_detected``.

    Raises:
        CheckpointError: missing, unsafe, truncated or foreign files; wrong architecture;
            key or shape mismatches (named).
    """
    source = f"VOneNet checkpoint {path}"
    obj = read_weights_file(path, map_location=map_location, allow_pickle=allow_pickle,
                            how_to_get=HOW_TO_GET)
    flags = obj.get("flags", {}) if isinstance(obj, dict) else {}
    if not isinstance(flags, dict):
        flags = vars(flags) if hasattr(flags, "__dict__") else {}
    state = strip_prefix(extract_state_dict(obj, source))
    for key in _LEFTOVER_KEYS:
        if state.pop(key, None) is not None:
            log.info("%s: dropped %s (divisive-normalisation leftover, unused)", source, key)
    if _Q0 not in state or _Q1 not in state:
        raise CheckpointError(
            f"{source} is not a VOneNet checkpoint: it has no '{_Q0}' / '{_Q1}' entries "
            f"(found e.g. {sorted(state)[:3]}). For plain CNN weights use the matching "
            "non-VOne model."
        )
    file_arch = flags.get("arch") or flags.get("model_arch")
    arch_id = _arch_id(str(arch or file_arch or ""))
    if file_arch and arch and _arch_id(str(file_arch)) != _arch_id(arch):
        raise CheckpointError(f"{source} holds a VOne{file_arch} but {arch!r} was requested; "
                              f"use the model for {file_arch!r}.")
    if arch_id not in _KNOWN_ARCHES:
        raise CheckpointError(f"{source}: cannot tell the architecture (flags arch={file_arch!r}); "
                              "pass arch='resnet50', 'alexnet' or 'cornets'.")
    q0, q1 = state[_Q0], state[_Q1]
    if q0.ndim != 4:
        raise CheckpointError(f"{source}: {_Q0} must be (N, 3, k, k); found {tuple(q0.shape)}.")
    n, ksize = int(q0.shape[0]), int(q0.shape[-1])
    options = dict(options)
    num_classes = int(options.pop("num_classes", 1000))
    fc_keys = [k for k in ("model.fc.weight", "model.classifier.6.weight",
                           "model.decoder.linear.weight") if k in state]
    if fc_keys:
        num_classes = int(state[fc_keys[0]].shape[0])
    requested_simple = int(options.pop("simple_channels", n // 2))
    options.pop("complex_channels", None)
    if flags.get("simple_channels") is not None:
        simple = int(flags["simple_channels"])
    else:
        simple = requested_simple if requested_simple <= n else n // 2
    complex_ = int(flags["complex_channels"]) if flags.get("complex_channels") is not None \
        else n - simple
    if simple + complex_ != n:
        raise CheckpointError(f"{source}: flags say {simple} simple + {complex_} complex channels "
                              f"but the Gabor banks hold {n} filters.")
    noise_mode = flags.get("noise_mode", options.pop("noise_mode", "neuronal"))
    options.pop("noise_mode", None)
    if isinstance(noise_mode, str) and noise_mode.lower() == "none":
        noise_mode = None
    for name in ("stride", "k_exc", "noise_scale", "noise_level"):
        if name in flags and flags[name] is not None:
            options[name] = flags[name]
    options.update(ksize=ksize, simple_channels=simple, complex_channels=complex_,
                   noise_mode=noise_mode)
    try:
        model = vonenet(_KNOWN_ARCHES[arch_id], num_classes=num_classes, **options)
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"{source}: cannot build the architecture its flags describe ({err})."
        ) from None
    expected = model.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    colors = check_gabor_banks(q0, q1, source)
    load_state_dict_checked(model, state, source)
    block = model.vone_block
    assert isinstance(block, VOneBlock)
    params = block.gabor_params
    params.update(source="checkpoint", path=str(path), colors=colors, flags=dict(flags),
                  verified=False, sf_max_detected=None)
    if verify:
        detected = detect_gabor_provenance(block, seed=int(params["gabor_seed"]))
        params.update(verified=detected is not None, sf_max_detected=detected)
        if detected is not None and detected != params["sf_max"]:
            p = sample_gabor_parameters(n, int(params["gabor_seed"]), sf_max=detected)
            params.update(sf_max=detected, sf=p.sf, theta=p.theta, phase=p.phase, nx=p.nx, ny=p.ny)
    return model.to(map_location).eval()


def save_reference_checkpoint(model: VOneNet, path: str | Path, *, epoch: int | None = None,
                              **flags: Any) -> Path:
    """Write ``model`` in the released format: ``{"flags", "state_dict"(module.*), "epoch"}``.

    The flags the reference loader reads (arch, stride, channel counts, k_exc, noise) are
    filled from the model; ``**flags`` adds or overrides entries.
    """
    block = model.vone_block
    assert isinstance(block, VOneBlock)
    record: dict[str, Any] = {
        "arch": model.arch_params["arch"], "stride": block.stride,
        "simple_channels": block.simple_channels, "complex_channels": block.complex_channels,
        "k_exc": block.k_exc, "noise_mode": block.noise_mode, "noise_scale": block.noise_scale,
        "noise_level": block.noise_level, **flags,
    }
    obj: dict[str, Any] = {"flags": record, "state_dict": model.reference_state_dict()}
    if epoch is not None:
        obj["epoch"] = epoch
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, p)
    return p
