"""The study report in a real browser: headless Chromium opens report.html and every figure
shows, nothing logs an error, and a full-page screenshot is saved beside the report.

Needs a Chromium binary (``scripts/ensure-chromium.sh``, run by ``make test``, installs
Debian's; ``$ROBUSTLENS_CHROMIUM`` may name another); skipped without one.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _cdp import Browser, check_page, find_chromium  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

STUDY = {
    "study": {"name": "browser", "seed": 0, "batch_size": 50, "checkpoint_every": 0},
    "data": {"dataset": "digits", "n_per_class": 3},
    "models": [{"name": "random_cnn", "architecture": "digits_cnn", "random": True}],
    "attacks": [{"name": "fgsm", "type": "fgsm", "eps": [0.05, 0.2]}],
    "analyses": {"dissimilarity": {}, "per_class": {}},
}


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium found: run scripts/ensure-chromium.sh (installs Debian's chromium) "
                    "or set ROBUSTLENS_CHROMIUM to a Chromium/Chrome binary")
    return binary


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    with Browser(chromium, timeout=30.0) as b:
        yield b


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.html of a tiny real study (digits, a random digits_cnn, FGSM at 2 eps)."""
    from robustlens.study import parse_config, run_study

    run_dir = tmp_path_factory.mktemp("browser-study")
    result = run_study(parse_config(STUDY), run_dir / "run", cache_dir=run_dir / "cache", device="cpu")
    assert result.report.is_file()
    return result.report


def test_report_renders_every_figure_without_errors(browser: Browser, report: Path) -> None:
    check = check_page(browser, report.as_uri())
    assert check.images, "the report shows no figure"
    assert not check.broken_images, f"figures that did not load: {check.broken_images}"
    assert not check.errors, f"the page logged errors: {check.errors}"
    screenshot = report.with_name("report.png")
    screenshot.write_bytes(check.screenshot)
    assert check.screenshot.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(check.screenshot)) as image:
        width, height = image.size
        colours = image.convert("L").getextrema()
    assert width >= 800 and height > 900  # the whole page, taller than one window
    assert colours[0] < colours[1], "the screenshot is a single colour"


def test_checker_detects_broken_images_and_errors(browser: Browser, report: Path, tmp_path: Path) -> None:
    """A copy with a broken <img src>, a console error and an uncaught exception fails every check."""
    text = report.read_text(encoding="utf-8")
    broken, n = re.subn(r'src="data:image/png;base64,[^"]*"', 'src="missing-figure.png"', text, count=1)
    assert n == 1
    broken = broken.replace("</body>", "<script>console.error('figure failed'); "
                            "throw new Error('report script broke');</script></body>")
    copy = tmp_path / "broken-report.html"
    copy.write_text(broken, encoding="utf-8")
    check = check_page(browser, copy.as_uri())
    assert [im["src"] for im in check.broken_images] == ["missing-figure.png"]
    assert len(check.images) > 1  # the other figures still load
    joined = "\n".join(check.errors)
    assert "figure failed" in joined and "report script broke" in joined
    assert "missing-figure.png" in joined  # the failed file load is logged as an error too
