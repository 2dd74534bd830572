import pytest

from attnserve.errors import ModelNotFound, ModelNotReady
from attnserve.export.models import get_spec
from attnserve.export.repository import ServingOptions, build_config
from attnserve.server.gateway.catalog import ModelCatalog, NoSpec, model_info_from_config
from attnserve.spec import SPEC_PARAMETER

from .conftest import CBAM_OUTPUT_DIMS

SPEC = get_spec("cbam")
DIMS = {name: CBAM_OUTPUT_DIMS[name] for name in SPEC.output_names}


def test_a_served_model_is_read_from_the_triton_config() -> None:
    served = model_info_from_config(build_config("digits", SPEC, DIMS, ServingOptions()), "2")
    assert served.name == "digits" and served.version == "2" and served.spec == SPEC
    assert served.inputs[0].shape == (-1, 1, 64, 64) and served.inputs[0].datatype == "FP32"
    assert served.output_shape("spatial_stage3") == (-1, 8, 8)


def test_configs_without_a_valid_spec_are_not_served() -> None:
    config = build_config("digits", SPEC, DIMS, ServingOptions())
    del config.parameters[SPEC_PARAMETER]
    with pytest.raises(NoSpec, match="no 'attnserve_spec'"):
        model_info_from_config(config, "1")
    config.parameters[SPEC_PARAMETER].string_value = '{"architecture": 1}'
    with pytest.raises(NoSpec, match="invalid"):
        model_info_from_config(config, "1")
    bare = build_config("digits", SPEC, DIMS, ServingOptions())
    del bare.output[-1]
    with pytest.raises(NoSpec, match="lacks"):
        model_info_from_config(bare, "1")
    wrong = build_config("digits", SPEC, {**DIMS, "channel_stage1": (8, 8)}, ServingOptions())
    with pytest.raises(NoSpec, match="do not match the axes"):
        model_info_from_config(wrong, "1")


def test_lookups_say_what_is_served() -> None:
    served = model_info_from_config(build_config("digits", SPEC, DIMS, ServingOptions()), "1")
    catalog = ModelCatalog(models={"digits": served}, known_not_ready={"broken": "UNAVAILABLE load failed"})
    assert catalog.default_model == "digits" and catalog.get(None) is served and catalog.is_ready()
    with pytest.raises(ModelNotFound, match="served models: digits"):
        catalog.get("other")
    with pytest.raises(ModelNotReady, match="load failed"):
        catalog.get("broken")
    catalog.clear()
    with pytest.raises(ModelNotReady):
        catalog.get("digits")
    assert not catalog.is_ready()
