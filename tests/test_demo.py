"""The demo's choice of sample per model (the demo itself runs in test_readme's `make run`)."""

from __future__ import annotations

from pathlib import Path

from attnserve.demo import PHOTO_SAMPLE, sample_for
from attnserve.settings import SAMPLE_IMAGE

from .conftest import REPO_ROOT


def test_colour_models_get_the_photograph_beside_the_default_sample_only() -> None:
    assert SAMPLE_IMAGE is not None and (SAMPLE_IMAGE.parent / PHOTO_SAMPLE).is_file()
    assert sample_for("RGB", SAMPLE_IMAGE, default=True) == SAMPLE_IMAGE.with_name(PHOTO_SAMPLE)
    assert sample_for("L", SAMPLE_IMAGE, default=True) == SAMPLE_IMAGE
    own = REPO_ROOT / "docs" / "samples" / "small_digit.png"
    assert sample_for("RGB", own, default=False) == own  # an image the user asked for
    assert sample_for("RGB", Path("/nowhere/digit.png"), default=True) == Path("/nowhere/digit.png")
