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
    children = list(dict(lite0.named_children()))
    assert children[0] == "normalize" and "_blocks" in children and "model" not in children  # the port's names
    assert not any(getattr(m, "inplace", False) for m in lite0.modules())
    x = torch.full((1, 3, 224, 224), 0.5, requires_grad=True)
    lite0(x)[0, 281].backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    untrained = create_model("efficientnet_lite0", pretrained=False)
    assert not torch.equal(untrained._fc.weight, lite0._fc.weight)


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


TORCHVISION = ["resnet18", "resnet34", "resnet50", "alexnet", "vgg11", "vgg13", "vgg16", "vgg19",
               "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_models_keep_torchvision_names_and_keys(name):
    """Normalisation first; every other module name and every state-dict key is torchvision's."""
    with torch.device("meta"):
        model = create_model(name)
        reference = getattr(torchvision.models, name)()
    info = model_info(name)
    assert info.mean == (0.485, 0.456, 0.406) and info.std == (0.229, 0.224, 0.225)
    assert info.input_size == (3, 224, 224) and info.num_classes == 1000 and info.paper and info.license
    assert isinstance(model, type(reference))  # a subclass: torchvision's attributes and checks hold
    assert [n for n, _ in model.named_modules()] == ["", "normalize", *[n for n, _ in reference.named_modules()][1:]]
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()]


@pytest.mark.slow  # a full-size VGG-11 (1.3 x 10^8 parameters): built twice, saved and read back
def test_vgg_loads_a_torchvision_file_and_matches_torchvision(tmp_path):
    """A random VGG-11 (batch norm) saved as torchvision publishes it, loaded by name."""
    torch.manual_seed(0)
    net = torchvision.models.vgg11_bn(num_classes=10)
    for m in net.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    net.eval()
    torch.save(net.state_dict(), tmp_path / "vgg11_bn.pth")
    model = create_model("vgg11_bn", weights=tmp_path / "vgg11_bn.pth", num_classes=10)
    assert not model.training and "features.0" in dict(model.named_modules())
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        expected = net(torchvision.transforms.functional.normalize(x, [0.485, 0.456, 0.406],
                                                                    [0.229, 0.224, 0.225]))
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(CheckpointError, match="does not match"):
        create_model("vgg11", weights=tmp_path / "vgg11_bn.pth", num_classes=10)  # no batch norm


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
    torch.save({f"model.{k}": v for k, v in net.state_dict().items()}, tmp_path / "old.pth")  # former wrapper
    load_torchvision_weights(model, tmp_path / "old.pth")
    with pytest.raises(CheckpointError, match="does not match"):
        create_model("resnet18", weights=str(tmp_path / "resnet18.pth"))  # 1000 vs 10 classes
    with pytest.raises(CheckpointError, match="not found"):
        create_model("resnet50", weights=str(tmp_path / "absent.pth"))


def test_registry_contract_covers_every_model():
    from robustlens.models import list_models

    # other test modules register test-only models, named with a leading underscore
    assert sorted(OURS) == [m for m in list_models() if not m.startswith("_")]


OURS = ["alexnet", "cornet_s", "digits_cnn", "efficientnet_lite0", "fmnist_cnn", "fmnist_resnet", "resnet18",
        "resnet34", "resnet50", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
        "vone_alexnet", "vone_cornet_s", "vone_fmnist_cnn", "vone_resnet50", "vone_resnet50_at",
        "vone_resnet50_ns"]
INPLACE_ON_PURPOSE = {"fmnist_resnet"}  # torchvision's BasicBlock as it is: the recorder's test case


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
    assert any(getattr(m, "inplace", False) for m in model.modules()) == (name in INPLACE_ON_PURPOSE)
