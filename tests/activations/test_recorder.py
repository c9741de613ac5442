"""The call-level recorder: names per call, in-place safety, layer selection, cleanup."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode
from torchvision.models.resnet import Bottleneck

from robustlens import create_model
from robustlens.activations import layer_names, penultimate_layer, record
from robustlens.data import load_digits
from robustlens.errors import RobustlensError


@pytest.fixture(scope="module")
def bottleneck() -> nn.Module:
    torch.manual_seed(0)
    block = Bottleneck(16, 4).eval()  # in-place ReLU reused three times, out += identity
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return block


def reference(block: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Bottleneck's forward written out of place, to check every recorded value."""
    ref = {"conv1": block.conv1(x)}
    ref["bn1"] = block.bn1(ref["conv1"])
    ref["relu"] = torch.relu(ref["bn1"])
    ref["conv2"] = block.conv2(ref["relu"])
    ref["bn2"] = block.bn2(ref["conv2"])
    ref["relu:1"] = torch.relu(ref["bn2"])
    ref["conv3"] = block.conv3(ref["relu:1"])
    ref["bn3"] = block.bn3(ref["conv3"])
    ref["relu:2"] = torch.relu(ref["bn3"] + x)
    return ref


@pytest.mark.parametrize("copy", ["lazy", "eager"])
@pytest.mark.parametrize("grad_mode", [torch.inference_mode, torch.no_grad, torch.enable_grad])
def test_reused_inplace_modules_recorded_per_call(bottleneck, copy, grad_mode):
    x = torch.randn(2, 16, 5, 5)
    with grad_mode():
        with record(bottleneck, copy=copy) as rec:
            out = bottleneck(x)
        ref = reference(bottleneck, x)
    assert list(rec) == ["conv1", "bn1", "relu", "conv2", "bn2", "relu:1", "conv3", "bn3", "relu:2"]
    for name, value in ref.items():  # bn outputs are overwritten in place by relu / +=
        torch.testing.assert_close(rec[name], value, rtol=0, atol=1e-6, msg=name)
    torch.testing.assert_close(rec["relu:2"], out.detach())


def test_references_stay_valid_after_later_inplace_writes(bottleneck):
    x = torch.randn(2, 16, 5, 5)
    expected = reference(bottleneck, x)["relu:2"]
    with torch.no_grad(), record(bottleneck) as rec:
        out = bottleneck(x)
        held = rec["relu:2"]
        out.mul_(0)  # writes to the memory the recording shares
    out.add_(7)  # after the block as well
    torch.testing.assert_close(held, expected)
    torch.testing.assert_close(rec["relu:2"], expected)


def test_tensors_of_a_previous_pass_stay_as_recorded(bottleneck):
    x = torch.randn(2, 16, 5, 5)
    with torch.no_grad(), record(bottleneck) as rec:
        first = bottleneck(x)
        held = rec["relu:2"]
        bottleneck(x + 1)  # a new pass starts a new record
        first.mul_(0)
    torch.testing.assert_close(held, reference(bottleneck, x)["relu:2"])


def test_hooks_and_dispatch_mode_removed_even_on_error(bottleneck):
    with pytest.raises(ZeroDivisionError), record(bottleneck):
        bottleneck(torch.randn(1, 16, 3, 3))
        1 / 0  # noqa: B018
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in bottleneck.modules())
    assert _get_current_dispatch_mode() is None


def test_each_forward_starts_a_new_record():
    model = create_model("digits_cnn").eval()
    x = load_digits().images[:4]
    with torch.no_grad(), record(model) as rec:
        model(x)
        model(x[:2])
    assert rec["features.0"].shape[0] == 2
    assert list(rec) == layer_names(model)


def test_detach_false_keeps_gradients():
    model = create_model("digits_cnn").eval()
    x = load_digits().images[:3].requires_grad_(True)
    with record(model, ["classifier.1"], detach=False) as rec:
        model(x)
    rec["classifier.1"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_selection_by_glob_type_and_call(bottleneck):
    x = torch.randn(1, 16, 3, 3)
    with torch.no_grad():
        with record(bottleneck, "conv?") as rec:
            bottleneck(x)
        assert list(rec) == ["conv1", "conv2", "conv3"]
        with record(bottleneck, [nn.BatchNorm2d, "relu:2"]) as rec:
            bottleneck(x)
        assert list(rec) == ["bn1", "bn2", "bn3", "relu:2"]
        with record(bottleneck, "type:ReLU") as rec:
            bottleneck(x)
        assert list(rec) == ["relu", "relu:1", "relu:2"]
        with record(bottleneck, "output") as rec:
            out = bottleneck(x)
        torch.testing.assert_close(rec["output"], out)


def test_bad_selections_are_clear_errors(bottleneck):
    with pytest.raises(RobustlensError, match="Did you mean 'conv1'"):
        with record(bottleneck, "cnv1"):
            pass
    with pytest.raises(RobustlensError, match="matches no layer"):
        with record(bottleneck, "layer9.*"):
            pass
    with pytest.raises(RobustlensError, match="no module of type 'Linear'"):
        with record(bottleneck, nn.Linear):
            pass
    with pytest.raises(RobustlensError, match="copy must be"):
        with record(bottleneck, copy="later"):  # type: ignore[arg-type]
            pass


def test_channel_access():
    model = create_model("digits_cnn").eval()
    x = load_digits().images[:2]
    with torch.no_grad(), record(model, "features.1") as rec:
        model(x)
    torch.testing.assert_close(rec.channel("features.1#3"), rec["features.1"][:, 3])
    with pytest.raises(RobustlensError, match="out of range"):
        rec.channel("features.1#8")


def test_penultimate_layer():
    model = create_model("digits_cnn")
    assert penultimate_layer(model, torch.rand(1, 1, 8, 8)) == "classifier.1"
    assert model.training  # mode restored
    from torchvision.models import resnet18

    assert penultimate_layer(resnet18(), torch.rand(1, 3, 32, 32)) == "avgpool"
    assert penultimate_layer(resnet18()) == "avgpool"  # static rule, no forward pass
    assert penultimate_layer(model) == "classifier.1"
    tail = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3),
                         nn.Identity())
    assert penultimate_layer(tail) == penultimate_layer(tail, torch.rand(1, 1, 5, 5)) == "1"
