"""The corpus of bad inputs: shared checks (exit status 2, one line, no traceback) and tiny files.

Every case runs in-process (``robustlens.cli.main([...])`` or a library call) and fails
before any real work, so the whole corpus costs seconds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustlens.cli import main
from robustlens.errors import RobustlensError

sys.path.insert(0, str(Path(__file__).parent))  # the corpus files import ``_bad_inputs`` beside them

from _bad_inputs import CliError, LibError, write_idx  # noqa: E402


def _one_line(err: str) -> None:
    assert err.startswith("robustlens: error: "), err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err, err


@pytest.fixture
def cli_error(capsys: pytest.CaptureFixture[str]) -> CliError:
    """Run the CLI in-process; assert exit status 2 and one line on stderr; return that line."""

    def run(argv: list[str]) -> str:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert code == 2, (code, err)
        _one_line(err)
        return err

    return run


@pytest.fixture
def lib_error() -> LibError:
    """Call a library function; assert it raises ``exc`` (a RobustlensError) with a one-line message."""

    def run(fn: Callable[..., Any], *args: Any, exc: type[RobustlensError] = RobustlensError,
            **kwargs: Any) -> str:
        with pytest.raises(exc) as info:
            fn(*args, **kwargs)
        message = str(info.value)
        assert "\n" not in message and message, message
        return message

    return run


@pytest.fixture
def fmnist_root(tmp_path: Path) -> Path:
    """A Fashion-MNIST folder with 40 train and 20 test images (random pixels, real format)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "fmnist"
    root.mkdir()
    for prefix, n in (("train", 40), ("t10k", 20)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained) digits_cnn saved as a robustlens checkpoint; returns the .safetensors path."""
    from robustlens.models import create_model, save_checkpoint

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model("digits_cnn")
    return save_checkpoint(model, tmp_path_factory.mktemp("ck") / "digits", "digits_cnn", dataset="digits")
