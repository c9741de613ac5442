"""The docs tests import their Markdown scanner from ``_snippets`` beside them."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
