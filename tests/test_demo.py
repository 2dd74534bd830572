"""The demo's choice of sample per model (the demo itself runs in test_readme's `make run`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnserve.demo import PHOTO_SAMPLE, SCENE_SAMPLE, overlay_tiles, repository_of, sample_for
from attnserve.errors import SetupError
from attnserve.settings import SAMPLE_IMAGE

from .conftest import REPO_ROOT


def test_colour_models_get_the_photograph_beside_the_default_sample_only() -> None:
    assert SAMPLE_IMAGE is not None and (SAMPLE_IMAGE.parent / PHOTO_SAMPLE).is_file()
    assert sample_for("RGB", SAMPLE_IMAGE, default=True) == SAMPLE_IMAGE.with_name(PHOTO_SAMPLE)
    assert sample_for("L", SAMPLE_IMAGE, default=True) == SAMPLE_IMAGE
    own = REPO_ROOT / "docs" / "samples" / "small_digit.png"
    assert sample_for("RGB", own, default=False) == own  # an image the user asked for
    assert sample_for("RGB", Path("/nowhere/digit.png"), default=True) == Path("/nowhere/digit.png")


def test_captioners_get_the_scene_beside_the_default_sample_only() -> None:
    assert SAMPLE_IMAGE is not None and (SAMPLE_IMAGE.parent / SCENE_SAMPLE).is_file()
    assert sample_for("L", SAMPLE_IMAGE, True, "captioning") == SAMPLE_IMAGE.with_name(SCENE_SAMPLE)
    assert sample_for("L", SAMPLE_IMAGE, True, "semantic_segmentation") == SAMPLE_IMAGE
    own = REPO_ROOT / "docs" / "samples" / "small_digit.png"
    assert sample_for("L", own, False, "captioning") == own


def test_a_captions_figure_is_its_word_tiles_and_its_label_the_caption() -> None:
    from attnserve.prediction import Caption, ImageInfo, Prediction, Word

    caption = Caption([Word("a", 3, -0.1), Word("large", 5, -0.2), Word("seven", 19, -0.1)], -0.5)
    prediction = Prediction("show_attend_tell", "1", [], [], ImageInfo(9, 9, "PNG"), caption=caption)
    prediction.task_overlay = b"tiles"
    assert overlay_tiles(prediction) == [('show_attend_tell: "a large seven"', b"tiles")]


def test_free_ports_handed_to_one_process_are_all_different() -> None:
    from attnserve._net import free_port

    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)  # a server's ports once collided: Triton refused to start


def test_a_repository_of_some_models_links_to_them_and_goes_away(tmp_path: Path) -> None:
    source = tmp_path / "models"
    for name in ("a", "b"):
        (source / name).mkdir(parents=True)
        (source / name / "config.pbtxt").write_text(name)
    with repository_of(source, ["b"]) as repository:
        assert [p.name for p in repository.iterdir()] == ["b"]
        assert (repository / "b" / "config.pbtxt").read_text() == "b"
    assert not repository.exists() and (source / "b" / "config.pbtxt").is_file()
    with (
        pytest.raises(SetupError, match=r"no model c in .*models: it has a, b$"),
        repository_of(source, ["b", "c"]),
    ):
        pass
