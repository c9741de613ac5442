"""Models: a registry of plain ``nn.Module``s that take pixels in [0, 1] and return logits."""

from robustlens.models import cornet as _cornet  # noqa: F401  (registers models)
from robustlens.models import fmnist_resnet as _fmnist_resnet  # noqa: F401  (registers models)
from robustlens.models import small_cnn as _small_cnn  # noqa: F401  (registers models)
from robustlens.models import vone as _vone  # noqa: F401  (registers models)
from robustlens.models import zoo as _zoo  # noqa: F401  (registers models)
from robustlens.models._registry import (
    LOADING_OPTIONS,
    ModelInfo,
    WeightsLoader,
    architecture_options,
    create_model,
    list_models,
    load_state_dict_file,
    model_defaults,
    model_info,
    pretrained_weights_path,
    register_model,
)
from robustlens.models._weights import UnsafePickleError, check_weights_file
from robustlens.models.checkpoint import load_checkpoint, save_checkpoint
from robustlens.models.device import model_device
from robustlens.models.fmnist_resnet import FashionMNISTResNet
from robustlens.models.normalize import Normalize, normalize_input
from robustlens.models.small_cnn import SmallCNN
from robustlens.models.vone import VOneBlock, VOneNet, load_vonenet, vone_resnet, vonenet
from robustlens.models.zoo import imagenet_classes, prepare_imagenet_image

__all__ = [
    "UnsafePickleError",
    "check_weights_file",
    "LOADING_OPTIONS",
    "FashionMNISTResNet",
    "ModelInfo",
    "Normalize",
    "SmallCNN",
    "VOneBlock",
    "VOneNet",
    "WeightsLoader",
    "architecture_options",
    "create_model",
    "imagenet_classes",
    "list_models",
    "load_checkpoint",
    "load_state_dict_file",
    "load_vonenet",
    "model_defaults",
    "model_device",
    "model_info",
    "normalize_input",
    "prepare_imagenet_image",
    "pretrained_weights_path",
    "register_model",
    "save_checkpoint",
    "vone_resnet",
    "vonenet",
]
