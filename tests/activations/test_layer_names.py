"""Layer names are the architecture's own; former ``model.`` names still resolve; per-model tables;
the reused in-place ReLU of ``fmnist_resnet`` recorded call by call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

import robustlens
from robustlens.activations import layer_names, layers_for, resolve_layer_name, resolve_layers
from robustlens.errors import RobustlensError
from robustlens.models import create_model

KEYS = json.loads((Path(__file__).parents[1] / "models" / "data" / "vonenet_state_dict_keys.json").read_text())


@pytest.fixture(scope="module")
def resnet18() -> torch.nn.Module:
    return create_model("resnet18", seed=0).eval()


def test_resnet_layers_carry_torchvision_names(resnet18) -> None:
    with torch.device("meta"):
        reference = [n for n, _ in torchvision.models.resnet18().named_modules() if n]
    assert [n for n, _ in resnet18.named_modules() if n] == ["normalize", *reference]
    x = torch.rand(2, 3, 64, 64)
    with robustlens.record(resnet18, ["layer4.0.relu"]) as rec:
        logits = resnet18(x)
    assert list(rec) == ["layer4.0.relu"]  # an exact name is its first call
    with robustlens.record(resnet18, ["layer4.0.relu", "layer4.0.relu:1"]) as rec:
        resnet18(x)
    assert list(rec) == ["layer4.0.relu", "layer4.0.relu:1"]  # BasicBlock's relu runs twice
    assert rec["layer4.0.relu"].shape == (2, 512, 2, 2) and logits.shape == (2, 1000)
    with robustlens.record(resnet18, ["model.layer4.0.relu", "model.layer4.0.relu:1", "model.layer1.*.conv1",
                                      "model.fc"]) as old:
        resnet18(x)
    assert list(old) == ["layer1.0.conv1", "layer1.1.conv1", "layer4.0.relu", "layer4.0.relu:1", "fc"]
    torch.testing.assert_close(old["model.layer4.0.relu:1"], rec["layer4.0.relu:1"])  # former names look up
    assert "model.fc" in old and old.channel("model.layer4.0.relu#3").shape == (2, 2, 2)
    assert resolve_layer_name(resnet18, "model.layer4") == "layer4"
    assert resolve_layer_name(resnet18, "model") == "" and resolve_layer_name(resnet18, "output") == ""


def test_unknown_names_still_get_close_matches(resnet18) -> None:
    with pytest.raises(RobustlensError, match=r"unknown layer 'layer4.0.rleu'.*Did you mean 'layer4.0.relu'"):
        resolve_layers(resnet18, ["layer4.0.rleu"])
    with pytest.raises(RobustlensError, match=r"Did you mean 'layer4.0.relu'"):
        resolve_layer_name(resnet18, "layer4.0.rleu")
    with pytest.raises(RobustlensError, match="matches no layer"):
        resolve_layers(resnet18, ["model.layer9.*"])
    small = create_model("digits_cnn")  # no former prefix: 'model.' means nothing there
    with pytest.raises(RobustlensError, match="unknown layer 'model.features.0'"):
        resolve_layers(small, ["model.features.0"])


def test_vonenet_and_cornet_names_are_the_released_codes() -> None:
    with torch.device("meta"):
        vone = create_model("vone_resnet50")
        cornet = create_model("cornet_s")
    released = {e["key"].removeprefix("module.").rsplit(".", 1)[0] for e in KEYS["architectures"]["voneresnet50"]}
    names = set(layer_names(vone)) | {n for n, _ in vone.named_modules()}
    assert released <= names and "model.layer4.0.relu" in names  # the back-end is the released ``model``
    assert {"V1.conv1", "V2.conv_input", "IT.norm3_1", "decoder.linear"} <= {n for n, _ in cornet.named_modules()}


def test_per_model_layer_tables(resnet18) -> None:
    table = {"resnet": ["layer1.0.relu:1"], "vone": ["model.layer1.0.relu:1"], "*": "layer1.*"}
    assert layers_for(table, "resnet") == ["layer1.0.relu:1"]
    assert layers_for(table, "other") == "layer1.*"
    assert layers_for(["fc"], "anything") == ["fc"]
    selection = resolve_layers(resnet18, table, model_name="resnet")
    assert selection.calls == {"layer1.0.relu": frozenset({1})}
    with pytest.raises(RobustlensError, match="needs the model's name"):
        resolve_layers(resnet18, table)
    with pytest.raises(RobustlensError, match=r"no layers for model 'vonee'.*Did you mean 'vone'"):
        layers_for({"resnet": ["fc"], "vone": ["fc"]}, "vonee")
    with torch.device("meta"):
        vone = create_model("vone_resnet50")
        resnet50 = create_model("resnet50")
    glob = "*layer1.0.relu:2"  # one selector that resolves in both namings
    assert list(resolve_layers(resnet50, glob).calls) == ["layer1.0.relu"]
    assert list(resolve_layers(vone, glob).calls) == ["model.layer1.0.relu"]


def _bn(x: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    assert bn.running_mean is not None and bn.running_var is not None
    return ((x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
            * bn.weight.view(shape) + bn.bias.view(shape))


def test_fmnist_resnet_reused_inplace_relu_one_entry_per_call(fashion_mnist_test) -> None:
    model = create_model("fmnist_resnet", seed=0).eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    block = model.layer1[0]
    assert block.relu.inplace and sum(1 for _ in model.layer1.modules() if _ is block.relu) == 1
    x, _ = fashion_mnist_test.get_batch(torch.arange(4))
    with torch.no_grad(), robustlens.record(model, ["layer1.0.relu", "layer1.0.relu:1", "layer2.0.relu:1"]) as rec:
        model(x)
    assert list(rec) == ["layer1.0.relu", "layer1.0.relu:1", "layer2.0.relu:1"]
    # by hand: normalise, stem (conv, BN, ReLU, 2x2 max-pool), then the block's two ReLU calls
    with torch.no_grad():
        z = (x - 0.2860) / 0.3530
        stem = F.max_pool2d(_bn(F.conv2d(z, model.conv1.weight, padding=1), model.bn1).clamp_min(0), 2)
        first = _bn(F.conv2d(stem, block.conv1.weight, padding=1), block.bn1).clamp_min(0)
        second = (_bn(F.conv2d(first, block.conv2.weight, padding=1), block.bn2) + stem).clamp_min(0)
    torch.testing.assert_close(rec["layer1.0.relu"], first, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rec["layer1.0.relu:1"], second, atol=1e-5, rtol=1e-5)
    assert not torch.equal(rec["layer1.0.relu"], rec["layer1.0.relu:1"])
    assert rec["layer2.0.relu:1"].shape == (4, 32, 7, 7)
