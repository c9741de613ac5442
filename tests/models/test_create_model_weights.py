"""``create_model(name, weights=PATH, allow_pickle=..., seed=...)`` for every model family."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
import torchvision

from robustlens.errors import CheckpointError, ConfigError
from robustlens.models import create_model, model_defaults, save_checkpoint
from robustlens.models._weights import UnsafePickleError
from robustlens.models.vone import VOneNet, save_reference_checkpoint


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Move every batch-norm statistic off its initial value, so loading them is tested too."""
    g = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


# ---------------------------------------------------------------- robustlens' own checkpoints
@pytest.mark.parametrize(("name", "options"), [("digits_cnn", {"width": 4}), ("fmnist_cnn", {"width": 8}),
                                               ("fmnist_resnet", {"width": 8}),
                                               ("vone_fmnist_cnn", {"simple_channels": 8, "complex_channels": 8})])
def test_small_models_load_their_safetensors_checkpoints(tmp_path: Path, name: str, options: dict) -> None:
    model = _trained_like(create_model(name, seed=1, **options))
    weights = save_checkpoint(model, tmp_path / name, name, options)
    loaded = create_model(name, weights=weights)  # the options come from the JSON beside the file
    assert not loaded.training and _same_state(loaded, model)
    x = torch.rand(3, *((1, 8, 8) if name == "digits_cnn" else (1, 28, 28)))
    with torch.no_grad(), _no_noise(model), _no_noise(loaded):
        torch.testing.assert_close(loaded(x), model(x))
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "dp.pth")
    assert _same_state(create_model(name, weights=tmp_path / "dp.pth", **options), model)  # a plain .pth
    with pytest.raises(CheckpointError, match="does not match"):
        create_model(name, weights=tmp_path / "dp.pth")  # default widths: shapes differ


def _no_noise(model: torch.nn.Module):  # type: ignore[no-untyped-def]
    from robustlens.models.vone import without_noise

    return without_noise(model)


def test_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    weights = save_checkpoint(create_model("digits_cnn", width=4), tmp_path / "d", "digits_cnn", {"width": 4})
    with pytest.raises(CheckpointError, match="holds a 'digits_cnn', not a 'fmnist_cnn'"):
        create_model("fmnist_cnn", weights=weights)


# ---------------------------------------------------------------- released formats
@pytest.fixture(scope="module")
def vone_release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, VOneNet]:
    """A small VOneResNet50 in the released layout (flags as an argparse.Namespace, keys ``module.``)."""
    model = create_model("vone_resnet50", simple_channels=4, complex_channels=4, num_classes=10, seed=0)
    assert isinstance(model, VOneNet)
    path = save_reference_checkpoint(model, tmp_path_factory.mktemp("vone") / "voneresnet50_e70.pth.tar",
                                     epoch=70)
    obj = torch.load(path, weights_only=True)
    assert all(k.startswith("module.") for k in obj["state_dict"])
    obj["flags"] = argparse.Namespace(**obj["flags"])  # as the reference training script saves them
    torch.save(obj, path)
    return path, model


def test_vone_resnet50_release_needs_allow_pickle_and_loads_by_name(vone_release) -> None:
    path, model = vone_release
    with pytest.raises(UnsafePickleError, match="argparse.Namespace.*allow_pickle=True"):
        create_model("vone_resnet50", weights=path)
    loaded = create_model("vone_resnet50", weights=path, allow_pickle=True)
    assert isinstance(loaded, VOneNet) and not loaded.training
    assert loaded.vone_block.simple_channels == 4 and loaded.model.fc.out_features == 10  # from the file
    assert _same_state(loaded, model) and loaded.gabor_params["verified"] is True
    assert "model.layer4.0.relu" in dict(loaded.named_modules())  # the released code's names


def test_cornet_s_loader_takes_allow_pickle(tmp_path: Path) -> None:
    """The released dict with a Python object in it: refused, then past the gate to the key check
    (a full CORnet-S round trip is in test_cornet.py)."""
    torch.save({"arch": argparse.Namespace(arch="cornet_s"),
                "state_dict": {"module.V1.conv1.weight": torch.zeros(64, 3, 7, 7)}}, tmp_path / "cornet_s.pth")
    with pytest.raises(UnsafePickleError):
        create_model("cornet_s", weights=tmp_path / "cornet_s.pth")
    with pytest.raises(CheckpointError, match="CORnet-S weights .* does not match.*missing key"):
        create_model("cornet_s", weights=tmp_path / "cornet_s.pth", allow_pickle=True)


def test_efficientnet_layout_with_allow_pickle(tmp_path: Path) -> None:
    name = "efficientnet_lite0"
    model = _trained_like(create_model(name, seed=3, num_classes=10, pretrained=False))
    torch.save({"args": argparse.Namespace(lr=0.1), "state_dict": model.state_dict()}, tmp_path / "w.pth.tar")
    with pytest.raises(UnsafePickleError, match="argparse.Namespace"):
        create_model(name, weights=tmp_path / "w.pth.tar", num_classes=10)
    loaded = create_model(name, weights=tmp_path / "w.pth.tar", num_classes=10, allow_pickle=True)
    assert _same_state(loaded, model)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_torchvision_resnet_file_matches_torchvision(tmp_path: Path) -> None:
    net = _trained_like(torchvision.models.resnet18(num_classes=10))
    torch.save({"args": argparse.Namespace(lr=0.1), "state_dict": net.state_dict()}, tmp_path / "resnet18.pth.tar")
    with pytest.raises(UnsafePickleError, match="argparse.Namespace"):
        create_model("resnet18", weights=tmp_path / "resnet18.pth.tar", num_classes=10)
    model = create_model("resnet18", weights=str(tmp_path / "resnet18.pth.tar"), num_classes=10, allow_pickle=True)
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        reference = net(torchvision.transforms.functional.normalize(x, [0.485, 0.456, 0.406],
                                                                    [0.229, 0.224, 0.225]))
        torch.testing.assert_close(model(x), reference, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- options and seeds
def test_loading_options_are_accepted_by_every_model_and_checked() -> None:
    for name in ("digits_cnn", "resnet18", "vone_resnet50", "cornet_s", "efficientnet_lite0"):
        assert {"weights", "allow_pickle", "seed"} <= set(model_defaults(name))
    with pytest.raises(ConfigError, match="accepted options: allow_pickle, hidden, num_classes, seed, weights, width"):
        create_model("digits_cnn", depth=2)
    with pytest.raises(ConfigError, match="allow_pickle applies to a weights file"):
        create_model("digits_cnn", allow_pickle=True)
    with pytest.raises(ConfigError, match="seed must be an integer"):
        create_model("digits_cnn", seed=1.5)
    with pytest.raises(CheckpointError, match="not found"):
        create_model("digits_cnn", weights="/nonexistent/digits.safetensors")


@pytest.mark.parametrize("name", ["digits_cnn", "fmnist_resnet", "resnet18", "vone_fmnist_cnn"])
def test_seed_fixes_the_initial_weights_and_leaves_the_global_rng_alone(name: str) -> None:
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a, b, c = (create_model(name, seed=s) for s in (7, 7, 8))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert _same_state(a, b) and not _same_state(a, c)
    if name == "vone_fmnist_cnn":  # the V1 block keeps its own seeds: same Gabor banks for any seed
        assert torch.equal(a.vone_block.simple_conv_q0.weight, c.vone_block.simple_conv_q0.weight)
        assert not torch.equal(a.bottleneck.weight, c.bottleneck.weight)


def test_checkpoints_of_the_former_wrapper_still_load(tmp_path: Path) -> None:
    """robustlens once saved torchvision-style models as ``normalize -> model``: keys ``model.*``."""
    from safetensors.torch import save_file

    from robustlens.models import load_checkpoint

    model = create_model("efficientnet_lite0", pretrained=False, num_classes=10, seed=0).eval()
    weights = save_checkpoint(model, tmp_path / "lite", "efficientnet_lite0", {"pretrained": False, "num_classes": 10})
    save_file({f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    loaded, _ = load_checkpoint(weights)
    assert _same_state(loaded, model)
    assert _same_state(create_model("efficientnet_lite0", weights=weights), model)
