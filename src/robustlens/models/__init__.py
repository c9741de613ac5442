"""Models: a registry of plain ``nn.Module``s that take pixels in [0, 1] and return logits."""

from robustlens.models import small_cnn as _small_cnn  # noqa: F401  (registers models)
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

__all__ = [
    "ModelInfo",
    "Normalize",
    "SmallCNN",
    "create_model",
    "list_models",
    "load_checkpoint",
    "model_defaults",
    "model_info",
    "register_model",
    "save_checkpoint",
]
