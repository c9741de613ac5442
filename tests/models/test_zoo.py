"""ImageNet zoo: the packaged EfficientNet-Lite0 on real photos, torchvision wrappers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from robustlens.errors import CheckpointError, RobustlensError
from robustlens.models import create_model, imagenet_classes, model_info, prepare_imagenet_image
from robustlens.models.zoo import load_torchvision_weights

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return create_model("efficientnet_lite0")


def test_efficientnet_lite0_recognises_real_photos(lite0):
    images = torch.stack([prepare_imagenet_image(skimage_data.chelsea()),
                          prepare_imagenet_image(skimage_data.coffee())])
    assert images.shape == (2, 3, 224, 224) and 0 <= images.min() and images.max() <= 1
    with torch.inference_mode():
        top5 = lite0(images).topk(5).indices
    assert set(top5[0].tolist()) & {281, 282, 283, 284, 285}, "no cat class for chelsea"
    assert set(top5[1].tolist()) & {967, 968}, "no espresso / cup for coffee"
    names = imagenet_classes()
    assert len(names) == 1000 and names[285] == "Egyptian cat" and names[967] == "espresso"


def test_efficientnet_lite0_is_a_plain_pixel_space_model(lite0):
    assert not lite0.training
    info = model_info("efficientnet_lite0")
    assert info.mean == (0.5, 0.5, 0.5) and info.std == (0.5, 0.5, 0.5)
    assert list(dict(lite0.named_children())) == ["normalize", "model"]
    assert not any(getattr(m, "inplace", False) for m in lite0.modules())
    x = torch.full((1, 3, 224, 224), 0.5, requires_grad=True)
    lite0(x)[0, 281].backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    untrained = create_model("efficientnet_lite0", pretrained=False)
    assert not torch.equal(untrained.model._fc.weight, lite0.model._fc.weight)


def test_prepare_imagenet_image_geometry():
    array = np.zeros((300, 400, 3), dtype=np.uint8)
    array[:, 200:] = 255  # right half white
    out = prepare_imagenet_image(array, resize=256, crop=224)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    # Shorter side 300 -> 256, width 400 -> 341; the crop is centred, so the edge is central.
    assert out[0, 100, :100].max() < 0.01 and out[0, 100, -100:].min() > 0.99
    as_tensor = prepare_imagenet_image(torch.from_numpy(array).permute(2, 0, 1).float() / 255)
    assert torch.allclose(as_tensor, out, atol=1e-5)
    with pytest.raises(RobustlensError):
        prepare_imagenet_image(np.zeros((10, 10)))


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "alexnet"])
def test_torchvision_wrappers(name):
    with torch.device("meta"):
        model = create_model(name)
    assert list(dict(model.named_children())) == ["normalize", "model"]
    assert model_info(name).mean == (0.485, 0.456, 0.406)
    expected = getattr(torchvision.models, name)
    with torch.device("meta"):
        reference = expected()
    assert [(k, v.shape) for k, v in model.model.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()]


def test_torchvision_weights_file_round_trip(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    torch.save(net.state_dict(), tmp_path / "resnet18.pth")  # torchvision's own layout
    model = create_model("resnet18", weights=str(tmp_path / "resnet18.pth"), num_classes=10)
    assert not model.training
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = net.eval()(torchvision.transforms.functional.normalize(
            x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
        assert torch.allclose(model(x), expected, atol=1e-5)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}},
               tmp_path / "dp.pth")
    load_torchvision_weights(model, tmp_path / "dp.pth")
    with pytest.raises(CheckpointError, match="does not match"):
        create_model("resnet18", weights=str(tmp_path / "resnet18.pth"))  # 1000 vs 10 classes
    with pytest.raises(CheckpointError, match="not found"):
        create_model("resnet50", weights=str(tmp_path / "absent.pth"))


OURS = ["alexnet", "cornet_s", "efficientnet_lite0", "resnet18", "resnet34", "resnet50",
        "vone_alexnet", "vone_cornet_s", "vone_fmnist_cnn", "vone_resnet50", "vone_resnet50_at",
        "vone_resnet50_ns"]


@pytest.mark.parametrize("name", OURS)
def test_registry_contract(name):
    """Normalisation first, matching the metadata; plain modules; no in-place activations."""
    from robustlens.models import Normalize, list_models

    assert name in list_models()
    info = model_info(name)
    options = {"pretrained": False} if name == "efficientnet_lite0" else {}
    with torch.device("meta"):
        model = create_model(name, **options)
    first = next(iter(model.children()))
    assert isinstance(first, Normalize) and first.mean.shape == (len(info.mean), 1, 1)
    if name in ("vone_fmnist_cnn", "efficientnet_lite0", "resnet18"):  # cheap to build for real
        first = next(iter(create_model(name, **options).children()))
        assert first.mean.flatten().tolist() == pytest.approx(info.mean)
        assert first.std.flatten().tolist() == pytest.approx(info.std)
    assert len(info.mean) == info.input_size[0] and info.pixel_bounds == (0.0, 1.0)
    assert not any(getattr(m, "inplace", False) for m in model.modules())
