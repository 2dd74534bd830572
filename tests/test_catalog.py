import asyncio

import pytest

from attnserve.errors import ModelNotFound, ModelNotReady
from attnserve.export.models import get_spec
from attnserve.export.repository import ServingOptions, build_config
from attnserve.model_info import ModelInfo, ModelStatus
from attnserve.server.gateway.backend import RepositoryModel
from attnserve.server.gateway.catalog import ModelCatalog, NoSpec, model_info_from_config
from attnserve.spec import SPEC_PARAMETER

from .conftest import CBAM_OUTPUT_DIMS, FakeBackend

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
    broken = ModelStatus("broken", "1", "UNAVAILABLE: load failed")
    catalog = ModelCatalog(models={"digits": served}, not_ready={"broken": broken})
    assert catalog.default_model == "digits" and catalog.get(None) is served and catalog.is_ready()
    with pytest.raises(ModelNotFound, match="served models: digits"):
        catalog.get("other")
    with pytest.raises(ModelNotReady, match="load failed"):
        catalog.get("broken")
    catalog.clear()
    with pytest.raises(ModelNotReady):
        catalog.get("digits")
    assert not catalog.is_ready()


class RepositoryBackend(FakeBackend):
    """A fake Triton whose repository index the test writes: READY or not, with or without a spec."""

    def __init__(self) -> None:
        super().__init__(names=("cbam", "other", "plain"))
        del self.configs["plain"].parameters[SPEC_PARAMETER]
        self.index = [RepositoryModel(name, "1", "READY", "") for name in self.configs]

    async def repository_index(self) -> list[RepositoryModel]:
        return self.index


def test_every_model_triton_lists_is_listed_with_its_readiness_and_reason() -> None:
    backend = RepositoryBackend()
    backend.index.append(RepositoryModel("broken", "3", "UNAVAILABLE", "load failed: no model.onnx"))
    backend.index.append(RepositoryModel("loading", "", "LOADING", ""))
    catalog = ModelCatalog()
    asyncio.run(catalog.refresh(backend))
    listing = {m.name: m for m in catalog.listing()}
    assert list(listing) == ["broken", "cbam", "loading", "other", "plain"]
    assert [n for n, m in listing.items() if m.ready] == ["cbam", "other"]
    assert isinstance(listing["cbam"], ModelInfo) and listing["cbam"].reason == ""
    assert listing["broken"] == ModelStatus("broken", "3", "UNAVAILABLE: load failed: no model.onnx")
    assert listing["loading"] == ModelStatus("loading", "", "LOADING")
    assert isinstance(listing["plain"], ModelStatus) and "no 'attnserve_spec'" in listing["plain"].reason
    with pytest.raises(ModelNotReady, match="'broken' is not ready: UNAVAILABLE: load failed"):
        catalog.get("broken")
    with pytest.raises(ModelNotFound, match="'plain' is not servable: no 'attnserve_spec'"):
        catalog.get("plain")
    assert catalog.describe("broken") is listing["broken"] and catalog.describe(None) is listing["cbam"]


def test_a_reason_from_triton_carries_no_traceback_and_no_server_path() -> None:
    backend = RepositoryBackend()
    reason = (
        "Internal: InvalidProtobuf: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from "
        "/srv/models/repository/broken/1/model.onnx failed:Protobuf parsing failed.\n\nAt:\n"
        "  /opt/triton/backends/onnxruntime/model.py(189): initialize\n"
    )
    backend.index.append(RepositoryModel("broken", "1", "UNAVAILABLE", reason))
    catalog = ModelCatalog()
    asyncio.run(catalog.refresh(backend))
    listed = catalog.describe("broken")
    assert listed.reason == (
        "UNAVAILABLE: Internal: InvalidProtobuf: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF : "
        "Load model from model.onnx failed:Protobuf parsing failed."
    )
    with pytest.raises(ModelNotReady) as raised:
        catalog.get("broken")
    assert "/" not in str(raised.value) and "At:" not in str(raised.value)


def test_a_model_that_stops_being_servable_keeps_its_description() -> None:
    backend = RepositoryBackend()
    catalog = ModelCatalog(configured_default="cbam")
    asyncio.run(catalog.refresh(backend))
    described = catalog.get("other")

    catalog.clear()  # Triton is gone
    listing = {m.name: m for m in catalog.listing()}
    assert list(listing) == ["cbam", "other", "plain"] and not any(m.ready for m in listing.values())
    assert {m.reason for m in listing.values()} == {"Triton is unavailable"}
    other = listing["other"]
    assert (
        isinstance(other, ModelInfo) and other.spec == described.spec and other.outputs == described.outputs
    )
    with pytest.raises(ModelNotReady, match="'other' is not ready: Triton is unavailable"):
        catalog.get("other")

    # back, without "plain", and "other" failed to load: its description stays, with Triton's reason
    backend.index = [
        RepositoryModel("cbam", "1", "READY", ""),
        RepositoryModel("other", "1", "UNAVAILABLE", "load failed"),
    ]
    asyncio.run(catalog.refresh(backend))
    listing = {m.name: m for m in catalog.listing()}
    assert list(listing) == ["cbam", "other"] and listing["cbam"].ready and catalog.is_ready()
    assert listing["other"] == ModelInfo(
        **{**vars(described), "ready": False, "reason": "UNAVAILABLE: load failed"}
    )

    backend.index[1] = RepositoryModel("other", "1", "READY", "")
    asyncio.run(catalog.refresh(backend))
    assert catalog.get("other") == described and described.reason == "" and described.ready
