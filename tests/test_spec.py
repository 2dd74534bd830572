import pytest
from pydantic import ValidationError

from attnserve.spec import (
    AttentionKind,
    AttentionSpec,
    ColorMode,
    ModelSpec,
    Normalization,
    PreprocessSpec,
    ResizeMode,
)


def preprocess(**overrides: object) -> PreprocessSpec:
    values: dict[str, object] = dict(
        input_size=(32, 48),
        color_mode=ColorMode.RGB,
        mean=(0.5, 0.5, 0.5),
        std=(0.2, 0.2, 0.2),
        resize_mode=ResizeMode.LETTERBOX,
    )
    values.update(overrides)
    return PreprocessSpec(**values)  # type: ignore[arg-type]


def spatial(name: str = "map") -> AttentionSpec:
    return AttentionSpec(
        name=name,
        kind=AttentionKind.SPATIAL,
        axes=("y", "x"),
        description="d",
        value_range="[0, 1]",
        normalization=Normalization(method="minmax"),
    )


def test_spec_round_trips_through_json() -> None:
    spec = ModelSpec(
        architecture="a",
        description="d",
        preprocess=preprocess(),
        labels=("x", "y"),
        attention=(spatial(),),
        primary_attention="map",
    )
    assert ModelSpec.from_json(spec.to_json()) == spec
    assert spec.output_names == ("logits", "map")


def test_mean_and_std_must_match_the_channels() -> None:
    with pytest.raises(ValidationError, match="3 values"):
        preprocess(mean=(0.5,))
    with pytest.raises(ValidationError, match="positive"):
        preprocess(std=(0.2, 0.0, 0.2))
    assert preprocess(color_mode=ColorMode.GRAY, mean=(0.1,), std=(0.3,)).channels == 1


def test_fixed_normalization_needs_a_range() -> None:
    with pytest.raises(ValidationError, match="range"):
        Normalization(method="fixed")
    with pytest.raises(ValidationError, match="hi > lo"):
        Normalization(method="above_median", range=(1.0, 0.0))
    assert Normalization(method="above_median").range is None


def test_spatial_axes_come_last_and_class_maps_start_with_class() -> None:
    with pytest.raises(ValidationError, match="last two"):
        AttentionSpec(**{**spatial().model_dump(), "axes": ("y", "x", "channel")})
    with pytest.raises(ValidationError, match="class"):
        AttentionSpec(**{**spatial().model_dump(), "kind": AttentionKind.CLASS_ACTIVATION})


def test_model_spec_rejects_repeated_names_and_an_unknown_primary() -> None:
    with pytest.raises(ValidationError, match="repeat"):
        ModelSpec(
            architecture="a",
            description="d",
            preprocess=preprocess(),
            labels=("x", "y"),
            attention=(spatial(), spatial()),
        )
    with pytest.raises(ValidationError, match="primary"):
        ModelSpec(
            architecture="a",
            description="d",
            preprocess=preprocess(),
            labels=("x", "y"),
            attention=(spatial(),),
            primary_attention="other",
        )


def test_specs_are_frozen() -> None:
    with pytest.raises(ValidationError):
        spatial().name = "changed"  # type: ignore[misc]


def test_axes_before_the_kinds_own_are_a_stack() -> None:
    per_scale = spatial().model_copy(update={"axes": ("scale", "y", "x")})
    assert AttentionSpec.model_validate(per_scale.model_dump()).leading_axes == ("scale",)
    cam = AttentionSpec(
        name="cam",
        kind=AttentionKind.CLASS_ACTIVATION,
        axes=("class", "y", "x"),
        description="d",
        value_range="r",
        normalization=Normalization(method="relu_minmax"),
    )
    assert cam.leading_axes == ("class",)
    for kind, axes, message in [
        (AttentionKind.CHANNEL, ("channel", "block"), "end with the axes"),
        (AttentionKind.SPATIAL, ("scale", "scale", "y", "x"), "repeat"),
        (AttentionKind.SPATIAL, ("y", "x", "scale"), "last two"),
    ]:
        with pytest.raises(ValidationError, match=message):
            AttentionSpec(
                name="m",
                kind=kind,
                axes=axes,
                description="d",
                value_range="r",
                normalization=Normalization(method="minmax"),
            )
