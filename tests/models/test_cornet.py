"""CORnet-S (spec section 11): layout of the released file, recurrence, per-call stride."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from robustlens.errors import CheckpointError
from robustlens.models import create_model, model_info
from robustlens.models.cornet import CORblockS, StridedConv2d, init_cornet_weights, load_cornet_s

KEYS = json.loads((Path(__file__).parent / "data" / "vonenet_state_dict_keys.json").read_text())


def test_state_dict_layout_equals_the_released_file():
    with torch.device("meta"):
        model = create_model("cornet_s")
    params = dict(model.named_parameters())
    ours = [(f"module.{k}", list(v.shape), "parameter" if k in params else "buffer")
            for k, v in model.state_dict().items()]
    expected = [(e["key"], e["shape"], e["kind"])
                for e in KEYS["architectures"]["cornet_s_original"]]
    assert ours == expected
    assert model_info("cornet_s").mean == (0.485, 0.456, 0.406)


def test_block_shapes_recurrence_and_fixed_stride():
    torch.manual_seed(0)
    block = CORblockS(8, 16, times=3)
    calls = []
    block.output.register_forward_hook(lambda _m, _i, o: calls.append(o.shape))
    out = block(torch.rand(2, 8, 20, 20))
    assert out.shape == (2, 16, 10, 10)
    assert calls == [(2, 16, 10, 10)] * 3  # the output module runs once per time step
    assert block.conv2.stride == (1, 1)  # never mutated by the stride-2 first step
    assert [n for n, _ in block.named_children() if n.startswith("norm1_")] == [
        "norm1_0", "norm1_1", "norm1_2"]


def test_strided_conv_matches_a_conv_with_that_stride():
    conv = StridedConv2d(3, 4, 3, padding=1, bias=False)
    x = torch.rand(1, 3, 9, 9)
    reference = torch.nn.functional.conv2d(x, conv.weight, None, 2, 1)
    assert torch.equal(conv(x, stride=2), reference)
    assert conv(x).shape == (1, 4, 9, 9)


def test_step_by_step_forward_equals_the_spec():
    """Recompute a 2-step block by hand from its modules (spec section 11)."""
    torch.manual_seed(1)
    block = CORblockS(4, 8, times=2).eval()
    x = torch.rand(1, 4, 12, 12)
    f = torch.nn.functional
    h = block.conv_input(x)
    skip = block.norm_skip(block.skip(h))
    h1 = f.relu(block.norm1_0(block.conv1(h)))
    h1 = f.relu(block.norm2_0(f.conv2d(h1, block.conv2.weight, None, 2, 1)))
    h = f.relu(block.norm3_0(block.conv3(h1)) + skip)
    h1 = f.relu(block.norm1_1(block.conv1(h)))
    h1 = f.relu(block.norm2_1(f.conv2d(h1, block.conv2.weight, None, 1, 1)))
    h = f.relu(block.norm3_1(block.conv3(h1)) + h)
    assert torch.allclose(block(x), h)


def test_initialisation():
    torch.manual_seed(0)
    block = CORblockS(64, 128, times=1)
    init_cornet_weights(block)
    w = block.conv2.weight  # 512 -> 512, 3 x 3: std sqrt(2 / (9 * 512))
    assert w.std().item() == pytest.approx((2 / (9 * 512)) ** 0.5, rel=0.02)
    assert torch.equal(block.norm1_0.weight, torch.ones(512))


def test_load_released_layout_without_num_batches_tracked(tmp_path):
    with torch.device("meta"):
        shapes = create_model("cornet_s").state_dict()
    state = {f"module.{k}": torch.zeros(v.shape, dtype=v.dtype) for k, v in shapes.items()
             if not k.endswith("num_batches_tracked")}
    marker = torch.randn(64, 3, 7, 7)
    state["module.V1.conv1.weight"] = marker
    torch.save({"epoch": 43, "state_dict": state}, tmp_path / "cornet_s-1d3f7974.pth")
    loaded = create_model("cornet_s", weights=str(tmp_path / "cornet_s-1d3f7974.pth"))
    assert torch.equal(loaded.V1.conv1.weight, marker)
    assert int(loaded.V2.norm1_0.num_batches_tracked) == 0 and not loaded.training
    with torch.no_grad():
        assert loaded(torch.rand(1, 3, 32, 32)).shape == (1, 1000)
    del state["module.V4.conv2.weight"]
    torch.save({"state_dict": state}, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="V4.conv2.weight"):
        load_cornet_s(loaded, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_cornet_s(loaded, tmp_path / "missing.pth")
