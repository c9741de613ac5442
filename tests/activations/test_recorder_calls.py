"""The recorder: one entry per call, values equal to hand computations, in-place safety."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from robustlens import record
from robustlens.errors import RobustlensError


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def test_reused_relu_gives_one_entry_per_call(resnet: nn.Module) -> None:
    x = torch.rand(2, 3, 64, 64)
    with record(resnet) as rec:
        out = resnet(x)
    names = list(rec)
    # BasicBlock calls its (in-place) relu twice
    assert "layer1.0.relu" in names and "layer1.0.relu:1" in names and "layer1.0.relu:2" not in names
    assert names.index("layer1.0.relu") < names.index("layer1.0.conv2") < names.index("layer1.0.relu:1")
    # values by hand, from the recorded inputs of each call
    block = resnet.layer1[0]
    torch.testing.assert_close(rec["layer1.0.relu"], torch.relu(rec["layer1.0.bn1"]))
    identity = rec["maxpool"]
    torch.testing.assert_close(rec["layer1.0.relu:1"], torch.relu(rec["layer1.0.bn2"] + identity))
    with torch.no_grad():
        by_hand = block.bn1(block.conv1(identity))
    torch.testing.assert_close(rec["layer1.0.bn1"], by_hand)  # not overwritten by the in-place relu
    torch.testing.assert_close(rec["fc"], out)
    # the downsample branch of layer2.0 is recorded and differs from conv2's output
    assert not torch.equal(rec["layer2.0.downsample.1"], rec["layer2.0.bn2"])


def test_in_place_op_after_recorded_layer_does_not_change_the_record() -> None:
    conv = nn.Conv2d(1, 2, 3)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = conv

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            y.mul_(0).add_(5)  # in place, after the hook fired
            return y

    net = Net()
    x = torch.rand(1, 1, 5, 5)
    with record(net, ["conv"]) as rec:
        net(x)
    with torch.no_grad():
        torch.testing.assert_close(rec["conv"], conv(x))


def test_selection_call_suffix_and_a_new_record_per_forward(resnet: nn.Module) -> None:
    x = torch.rand(1, 3, 32, 32)
    with record(resnet, ["layer1.0.relu:1", "fc"]) as rec:
        resnet(x)
        assert list(rec) == ["layer1.0.relu:1", "fc"]
        resnet(x)
        assert list(rec) == ["layer1.0.relu:1", "fc"]  # not relu:3


def test_hooks_removed_even_on_error(resnet: nn.Module) -> None:
    with pytest.raises(RuntimeError):
        with record(resnet) as _:
            resnet(torch.rand(1, 5, 32, 32))  # wrong channel count
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in resnet.modules())


def test_unknown_layer_suggests_close_names(resnet: nn.Module) -> None:
    with pytest.raises(RobustlensError, match="layer1.0.relu"):
        with record(resnet, ["layer1.0.rleu"]):
            pass
