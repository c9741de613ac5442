"""robustlens: why are convolutional networks, or are they not, robust to adversarial perturbations?

Build a model, attack it, measure its robust accuracy and look inside it, layer by layer.
Every model takes float images in [0, 1] shaped (B, C, H, W) and returns logits.
"""

from robustlens.activations import record
from robustlens.errors import RobustlensError
from robustlens.models import create_model, list_models, load_checkpoint, save_checkpoint

__version__ = "0.1.0"

__all__ = [
    "RobustlensError",
    "__version__",
    "create_model",
    "list_models",
    "load_checkpoint",
    "record",
    "save_checkpoint",
]
