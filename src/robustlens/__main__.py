"""``python -m robustlens`` (and ``torchrun -m robustlens``): the ``robustlens`` command."""

import sys

from robustlens.cli import main

sys.exit(main())
