"""The attack tests import their closed-form models from ``_attack_models`` beside them."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
