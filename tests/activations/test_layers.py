"""Addresses: calls (':N') and channels ('#C'), and Lucent's 'layer:channel'."""

from __future__ import annotations

import pytest

from robustlens.activations import (
    ChannelRef,
    format_channel,
    from_lucent,
    parse_channel,
    resolve_layers,
    split_call,
)
from robustlens.errors import RobustlensError


def test_call_and_channel_addresses_do_not_collide():
    assert split_call("layer1.0.relu:2") == ("layer1.0.relu", 2)
    assert split_call("layer1.0.relu") == ("layer1.0.relu", 0)
    assert parse_channel("layer4.2.relu:2#17") == ChannelRef("layer4.2.relu:2", 17)
    assert str(ChannelRef("layer4.2.relu:2", 17)) == "layer4.2.relu:2#17"
    assert parse_channel(format_channel("fc", 3)) == ChannelRef("fc", 3)


def test_lucent_addresses():
    assert from_lucent("layer4:0") == ChannelRef("layer4", 0)
    assert from_lucent("layer4.1.relu:1#5") == ChannelRef("layer4.1.relu:1", 5)
    with pytest.raises(RobustlensError, match="Lucent"):
        from_lucent("layer4")


def test_a_call_is_not_a_channel():
    with pytest.raises(RobustlensError, match="names call 1"):
        parse_channel("layer1.0.relu:1")
    with pytest.raises(RobustlensError, match="layer#channel"):
        parse_channel("#3")


def test_resolve_keeps_definition_order_and_calls():
    from torchvision.models import resnet18

    sel = resolve_layers(resnet18(), ["layer1.1.relu:1", "layer1.0.*", "fc"])
    assert sel.names[:2] == ["layer1.0.conv1", "layer1.0.bn1"]
    assert sel.calls["layer1.1.relu"] == frozenset({1})
    assert sel.calls["layer1.0.relu"] is None
    assert sel.strict == frozenset({"layer1.1.relu", "fc"})
