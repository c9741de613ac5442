"""VOneNets (spec section 10): architecture, state-dict layout, released-checkpoint loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

from robustlens.errors import CheckpointError
from robustlens.models import create_model, model_info
from robustlens.models.vone import (
    VOneBlock,
    VOneNet,
    load_vonenet,
    save_reference_checkpoint,
    vone_resnet,
    without_noise,
)

KEYS = json.loads((Path(__file__).parent / "data" / "vonenet_state_dict_keys.json").read_text())
TRAINABLE = {"vone_resnet50": 25_580_264, "vone_alexnet": 74_741_800, "vone_cornet_s": 53_402_856}
JSON_NAME = {"vone_resnet50": "voneresnet50", "vone_alexnet": "vonealexnet",
             "vone_cornet_s": "vonecornets"}


def layout(model: torch.nn.Module) -> list[tuple[str, list[int], str, str]]:
    params = dict(model.named_parameters())
    return [(f"module.{k}", list(v.shape), "parameter" if k in params else "buffer",
             str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]


@pytest.fixture(scope="module")
def resnet50() -> VOneNet:
    torch.manual_seed(0)
    model = create_model("vone_resnet50", sf_max=6.0)
    assert isinstance(model, VOneNet)
    return model


@pytest.mark.parametrize("name", ["vone_resnet50", "vone_alexnet", "vone_cornet_s"])
def test_state_dict_layout_equals_the_released_files(name):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = create_model(name)
    expected = [(e["key"], e["shape"], e["kind"], e["dtype"])
                for e in KEYS["architectures"][JSON_NAME[name]]]
    assert layout(model) == expected
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == TRAINABLE[name]


@pytest.mark.parametrize("name", ["vone_alexnet", "vone_cornet_s"])
def test_forward_shapes(name):
    with torch.device("meta"):
        model = create_model(name, simple_channels=4, complex_channels=4)
    model = model.to_empty(device="cpu")  # uninitialised weights: shapes only, no init cost
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1000)


def test_resnet50_layout_structure_and_metadata(resnet50):
    assert list(dict(resnet50.named_children())) == ["normalize", "vone_block", "bottleneck",
                                                     "model"]
    assert not hasattr(resnet50.model, "conv1") and not hasattr(resnet50.model, "maxpool")
    assert not any(getattr(m, "inplace", False) for m in resnet50.modules())
    assert resnet50.arch_params == {"k_exc": 25.0, "arch": "resnet50", "ksize": 25, "stride": 4}
    assert resnet50.gabor_params["gabor_seed"] == 0 and resnet50.image_size == 224
    info = model_info("vone_resnet50")
    assert info.mean == (0.5, 0.5, 0.5) and info.stochastic
    assert not model_info("vone_resnet50_ns").stochastic


def test_resnet_builder_accepts_any_torchvision_resnet():
    torch.manual_seed(0)
    model = vone_resnet("resnet18", simple_channels=8, complex_channels=8, num_classes=10)
    x = torch.rand(2, 3, 64, 64)
    assert model(x).shape == (2, 10)
    assert model.bottleneck.weight.shape == (64, 16, 1, 1)
    given = torchvision.models.resnet18(num_classes=7)
    fc = given.fc
    model = vone_resnet(given, simple_channels=4, complex_channels=4, noise_mode=None)
    assert model.model.fc is fc and model(x).shape == (2, 7)


def test_bottleneck_feeds_the_back_end_directly(resnet50):
    seen = {}

    def grab(_module, args):
        seen["in"] = args[0]

    hook = resnet50.model.layer1.register_forward_pre_hook(grab)
    with torch.no_grad(), without_noise(resnet50):
        x = torch.rand(1, 3, 112, 112)
        resnet50.eval()(x)
        bottleneck = resnet50.bottleneck(resnet50.vone_block(resnet50.normalize(x)))
    hook.remove()
    assert seen["in"].shape == (1, 64, 28, 28) and torch.equal(seen["in"], bottleneck)
    assert (bottleneck < 0).any()  # no ReLU after the bottleneck


def test_released_format_round_trip(resnet50, tmp_path):
    path = save_reference_checkpoint(resnet50, tmp_path / "voneresnet50_e70.pth.tar", epoch=70)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"flags", "state_dict", "epoch"}
    assert all(k.startswith("module.") for k in raw["state_dict"])
    loaded = create_model("vone_resnet50", weights=str(path))
    assert isinstance(loaded, VOneNet) and not loaded.training
    for (k, a), (k2, b) in zip(resnet50.state_dict().items(), loaded.state_dict().items(),
                               strict=True):
        assert k == k2 and torch.equal(a, b)
    params = loaded.gabor_params
    assert params["source"] == "checkpoint" and params["verified"]
    assert params["sf_max_detected"] == 6.0 and params["sf_max"] == 6.0
    assert (params["colors"]["q0"] == resnet50.gabor_params["colors"]["q0"]).all()
    block = loaded.vone_block
    assert isinstance(block, VOneBlock)
    assert (block.noise_mode, block.noise_scale, block.noise_level) == ("neuronal", 0.35, 0.07)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad(), without_noise(loaded), without_noise(resnet50):
        assert torch.equal(loaded(x), resnet50.eval()(x))


@pytest.fixture(scope="module")
def small() -> VOneNet:
    torch.manual_seed(0)
    return vone_resnet("resnet18", simple_channels=4, complex_channels=4, num_classes=10)


def test_adversarially_trained_layout_and_old_files(small, tmp_path):
    """No 'module.' prefix, two leftover div_u / div_t tensors, no num_batches_tracked."""
    state = {k: v for k, v in small.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    state["vone_block.div_u.weight"] = torch.ones(3)
    state["vone_block.div_t.weight"] = torch.ones(3)
    flags = {"arch": "resnet_18", "noise_mode": None, "k_exc": 20.0, "stride": 4}
    torch.save({"flags": flags, "state_dict": state, "epoch": 96}, tmp_path / "at.pth.tar")
    loaded = load_vonenet(tmp_path / "at.pth.tar")
    assert loaded.vone_block.noise_mode is None and loaded.vone_block.k_exc == 20.0
    assert int(loaded.model.layer1[0].bn1.num_batches_tracked) == 0
    assert loaded.model.fc.out_features == 10
    # A bare state dict with the architecture named by the caller.
    torch.save(small.reference_state_dict(), tmp_path / "bare.pth")
    assert isinstance(load_vonenet(tmp_path / "bare.pth", arch="resnet18", verify=False), VOneNet)


def test_bad_files_give_clear_errors(small, tmp_path):
    missing = tmp_path / "nope.pth.tar"
    with pytest.raises(CheckpointError, match="not found.*dicarlolab/vonenet"):
        create_model("vone_resnet50", weights=str(missing))
    text = tmp_path / "text.pth.tar"
    text.write_text("this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch weights file"):
        load_vonenet(text)
    small = {"flags": {"arch": "resnet50"}, "state_dict": {
        "module.vone_block.simple_conv_q0.weight": small.vone_block.simple_conv_q0.weight,
        "module.vone_block.simple_conv_q1.weight": small.vone_block.simple_conv_q1.weight}}
    torch.save(small, tmp_path / "small.pth.tar")
    data = (tmp_path / "small.pth.tar").read_bytes()
    (tmp_path / "truncated.pth.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_vonenet(tmp_path / "truncated.pth.tar")
    with pytest.raises(CheckpointError, match="missing key.*bottleneck.weight"):
        load_vonenet(tmp_path / "small.pth.tar")  # an incomplete (cut) state dict
    with pytest.raises(CheckpointError, match="VOneresnet50 but 'alexnet'"):
        create_model("vone_alexnet", weights=str(tmp_path / "small.pth.tar"))
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="not a VOneNet checkpoint"):
        load_vonenet(tmp_path / "foreign.pth", arch="resnet50")
    torch.save({"state_dict": {}, "hook": torchvision.models.resnet18}, tmp_path / "unsafe.pth")
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        load_vonenet(tmp_path / "unsafe.pth")
    mixed = dict(small["state_dict"])
    q0 = mixed["module.vone_block.simple_conv_q0.weight"].clone()
    q0[0] = 0.01  # every colour slice non-zero
    mixed["module.vone_block.simple_conv_q0.weight"] = q0
    torch.save({"flags": {"arch": "resnet50"}, "state_dict": mixed}, tmp_path / "mixed.pth.tar")
    with pytest.raises(CheckpointError, match="not a VOneNet bank"):
        load_vonenet(tmp_path / "mixed.pth.tar")


def test_unverified_banks_are_reported(small, tmp_path):
    state = small.state_dict()
    for name in ("simple_conv_q0", "simple_conv_q1"):
        state[f"vone_block.{name}.weight"] = state[f"vone_block.{name}.weight"] * 1.01
    model = vone_resnet("resnet18", simple_channels=4, complex_channels=4, num_classes=10)
    model.load_state_dict(state)
    path = save_reference_checkpoint(model, tmp_path / "scaled.pth.tar")
    loaded = load_vonenet(path)
    assert loaded.arch_params["arch"] == "resnet18"
    assert loaded.gabor_params["verified"] is False and loaded.gabor_params[
        "sf_max_detected"] is None
