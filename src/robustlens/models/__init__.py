"""Models: a registry of plain ``nn.Module``s that take pixels in [0, 1] and return logits."""

from robustlens.models import cornet as _cornet  # noqa: F401  (registers models)
from robustlens.models import small_cnn as _small_cnn  # noqa: F401  (registers models)
from robustlens.models import vone as _vone  # noqa: F401  (registers models)
from robustlens.models import zoo as _zoo  # noqa: F401  (registers models)
from robustlens.models._registry import (
    ModelInfo,
    create_model,
    list_models,
    model_defaults,
    model_info,
    register_model,
)
from robustlens.models.checkpoint import load_checkpoint, save_checkpoint
from robustlens.models.normalize import Normalize
from robustlens.models.small_cnn import SmallCNN
from robustlens.models.vone import VOneBlock, VOneNet, load_vonenet, vone_resnet, vonenet
from robustlens.models.zoo import imagenet_classes, prepare_imagenet_image

__all__ = [
    "ModelInfo",
    "Normalize",
    "SmallCNN",
    "VOneBlock",
    "VOneNet",
    "create_model",
    "imagenet_classes",
    "list_models",
    "load_checkpoint",
    "load_vonenet",
    "model_defaults",
    "model_info",
    "prepare_imagenet_image",
    "register_model",
    "save_checkpoint",
    "vone_resnet",
    "vonenet",
]
