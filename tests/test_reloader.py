"""The watched repository without a server: what counts as a change, and what the reloader does
about it (pauses, drains, loads, keeps the old release on failure). The real Triton and
`attnserve serve` under load: `tests/test_reload.py`."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from attnserve.cli import build_parser, settings_from_args
from attnserve.errors import DeadlineExceeded, ModelNotReady, UpstreamError
from attnserve.export.repository import config_to_text, read_config
from attnserve.server.gateway.admission import Admission, Cost
from attnserve.server.gateway.catalog import ModelCatalog
from attnserve.server.gateway.metrics import GatewayMetrics
from attnserve.server.gateway.reloader import Changes, ModelReloader, scan_repository, settled_changes
from attnserve.server.triton import TritonProcess
from attnserve.settings import GatewaySettings, Settings, TritonSettings

from .conftest import FakeBackend


def write_model(repository: Path, name: str, config_text: str, weights: bytes = b"onnx") -> Path:
    model = repository / name
    (model / "1").mkdir(parents=True, exist_ok=True)
    (model / "config.pbtxt").write_text(config_text)
    (model / "1" / "model.onnx").write_bytes(weights)
    return model


def test_a_scan_digests_each_model_directory_and_sees_any_file_change(tmp_path: Path) -> None:
    write_model(tmp_path, "a", "name: 'a'")
    write_model(tmp_path, "b", "name: 'b'")
    (tmp_path / ".staging").mkdir()
    (tmp_path / ".staging" / "config.pbtxt").write_text("")
    (tmp_path / "notes").mkdir()  # no config: not a model
    first = scan_repository(tmp_path)
    assert sorted(first) == ["a", "b"]
    assert scan_repository(tmp_path) == first

    weights = tmp_path / "a" / "1" / "model.onnx"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    touched = scan_repository(tmp_path)
    assert touched["a"] != first["a"] and touched["b"] == first["b"]
    (tmp_path / "b" / "2").mkdir()
    (tmp_path / "b" / "2" / "model.onnx").write_bytes(b"v2")
    assert scan_repository(tmp_path)["b"] != first["b"]
    assert scan_repository(tmp_path / "missing") == {}


@pytest.mark.parametrize(
    ("loaded", "previous", "current", "expected"),
    [
        ({"a": "1"}, {"a": "1"}, {"a": "1"}, Changes()),
        ({"a": "1"}, {"a": "1"}, {"a": "2"}, Changes()),  # changed once: not yet settled
        ({"a": "1"}, {"a": "2"}, {"a": "2"}, Changes(changed=("a",))),
        ({"a": "1"}, {"a": "2"}, {"a": "3"}, Changes()),  # still being written
        ({"a": "1"}, {}, {"a": "1"}, Changes()),  # gone for one scan (the exporter's two renames)
        ({"a": "1"}, {}, {"a": "2"}, Changes()),
        ({"a": "1"}, {"a": "1"}, {}, Changes()),  # gone once: not yet settled
        ({"a": "1"}, {}, {}, Changes(removed=("a",))),
        ({}, {"b": "1"}, {"b": "1"}, Changes(added=("b",))),
        ({}, {}, {"b": "1"}, Changes()),
    ],
)
def test_only_what_two_scans_agree_on_is_a_change(
    loaded: dict[str, str], previous: dict[str, str], current: dict[str, str], expected: Changes
) -> None:
    assert settled_changes(loaded, previous, current) == expected


class ReloadingFake(FakeBackend):
    """FakeBackend that loads and unloads: each load waits for ``load_gate`` when set and takes
    its config from the repository directory, as Triton does."""

    def __init__(self, repository: Path, names: tuple[str, ...]) -> None:
        super().__init__(names)
        self.repository = repository
        self.loads: list[str] = []
        self.unloads: list[str] = []
        self.load_gate: asyncio.Event | None = None
        self.load_error: Exception | None = None
        self.paused_during_load: list[bool] = []
        self.catalog: ModelCatalog | None = None

    async def load_model(self, name: str) -> None:
        self.loads.append(name)
        if self.catalog is not None:
            self.paused_during_load.append(name in self.catalog.paused)
        if self.load_gate is not None:
            await self.load_gate.wait()
        if self.load_error is not None:
            raise self.load_error
        self.configs[name] = read_config(self.repository / name / "config.pbtxt")

    async def unload_model(self, name: str) -> None:
        self.unloads.append(name)
        self.configs.pop(name, None)


async def started_reloader(
    tmp_path: Path, names: tuple[str, ...] = ("cbam",)
) -> tuple[ModelReloader, ReloadingFake]:
    """A reloader over ``names`` written to ``tmp_path``, its catalog read and its first round
    (the baseline: what Triton loaded at start) taken."""
    backend = ReloadingFake(tmp_path, names)
    for name in names:
        write_model(tmp_path, name, config_to_text(backend.configs[name]))
    catalog = ModelCatalog()
    backend.catalog = catalog
    metrics = GatewayMetrics()
    admission = Admission(GatewaySettings(), metrics)
    reloader = ModelReloader(backend, catalog, admission, metrics, tmp_path, 0.01, drain_timeout_s=5)
    await catalog.refresh(backend)
    assert await reloader.check() == Changes()  # the baseline: nothing to do
    return reloader, backend


def touch(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def loads(metrics: GatewayMetrics, name: str, action: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "attnserve_model_loads_total", {"model": name, "action": action, "outcome": outcome}
    )
    return value or 0.0


def test_new_weights_are_reloaded_without_a_pause_once_two_scans_agree(tmp_path: Path) -> None:
    async def scenario() -> None:
        reloader, backend = await started_reloader(tmp_path)
        touch(tmp_path / "cbam" / "1" / "model.onnx")
        assert await reloader.check() == Changes()  # seen once
        assert await reloader.check() == Changes(changed=("cbam",))
        assert backend.loads == ["cbam"] and backend.paused_during_load == [False]
        assert await reloader.check() == Changes()  # done: not loaded again
        assert loads(reloader.metrics, "cbam", "reload", "ok") == 1

    asyncio.run(scenario())


def test_a_release_with_another_interface_pauses_calls_drains_them_and_resumes_with_the_new_one(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        reloader, backend = await started_reloader(tmp_path)
        catalog = reloader.catalog
        old = catalog.get("cbam")
        new_config = type(backend.configs["cbam"])()
        new_config.CopyFrom(backend.configs["cbam"])
        spec = old.spec.model_copy(update={"labels": tuple(f"digit {i}" for i in range(10))})
        new_config.parameters["attnserve_spec"].string_value = spec.model_dump_json()
        (tmp_path / "cbam" / "config.pbtxt").write_text(config_to_text(new_config))
        await reloader.check()

        refreshed_when: list[float] = []  # the reload's count, each time the catalog rereads
        original = catalog.refresh

        async def refresh(backend: object) -> None:
            refreshed_when.append(loads(reloader.metrics, "cbam", "reload", "ok"))
            await original(backend)  # type: ignore[arg-type]

        catalog.refresh = refresh  # type: ignore[method-assign]
        ticket = reloader.admission.admit("cbam", Cost(0, heavy=False))  # a call in flight on the old release
        backend.load_gate = asyncio.Event()
        round_ = asyncio.create_task(reloader.check())
        await asyncio.sleep(0.05)
        assert "cbam" in catalog.paused and backend.loads == []  # draining the call in flight
        waiting = asyncio.create_task(catalog.wait_resumed("cbam", 5.0, deadline_bound=True))
        ticket.release()
        await asyncio.sleep(0.05)
        assert backend.loads == ["cbam"] and not waiting.done()  # loading; new calls wait
        with pytest.raises(DeadlineExceeded, match="being replaced"):
            await catalog.wait_resumed(None, 0.01, deadline_bound=True)  # the default model: cbam
        with pytest.raises(ModelNotReady, match="retry"):
            await catalog.wait_resumed("cbam", 0.01, deadline_bound=False)
        backend.load_gate.set()
        assert await round_ == Changes(changed=("cbam",))
        await asyncio.wait_for(waiting, 1)
        assert catalog.paused == {} and catalog.get("cbam").spec.labels[0] == "digit 0"
        assert backend.paused_during_load == [True]
        # counted once the catalog serves the new release, not before (a metric read then is true)
        assert refreshed_when == [0] and loads(reloader.metrics, "cbam", "reload", "ok") == 1

    asyncio.run(scenario())


def test_a_release_that_fails_to_load_keeps_the_old_one_and_is_not_retried_until_it_changes(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        reloader, backend = await started_reloader(tmp_path)
        config = tmp_path / "cbam" / "config.pbtxt"
        good = config.read_text()
        config.write_text("this is not a config")
        backend.load_error = UpstreamError(
            "Triton error INTERNAL: failed to load 'cbam': Load model from /srv/models/cbam/1/model.onnx "
            "failed\nAt:\n  /srv/backends/onnxruntime/model.py(189): initialize"
        )
        await reloader.check()
        assert await reloader.check() == Changes(changed=("cbam",))
        assert loads(reloader.metrics, "cbam", "reload", "failed") == 1
        assert reloader.catalog.paused == {} and reloader.catalog.get("cbam").ready
        # listed with the release that keeps serving, and why the new one did not go in
        (listed,) = reloader.catalog.listing()
        expected = "Triton error INTERNAL: failed to load 'cbam': Load model from model.onnx failed"
        assert listed.ready and listed.release_error == expected
        assert reloader.catalog.describe("cbam") == listed == reloader.catalog.served("cbam")
        assert not reloader.catalog.get("cbam").release_error  # what calls use is unchanged
        await reloader.check()
        assert backend.loads == ["cbam"]  # not tried again until its files change

        backend.load_error = None  # the next release goes in: the note goes
        config.write_text(good)
        await reloader.check()
        assert await reloader.check() == Changes(changed=("cbam",))
        assert reloader.catalog.release_errors == {} and not reloader.catalog.describe("cbam").release_error

    asyncio.run(scenario())


def test_models_added_and_removed_are_loaded_and_unloaded_and_a_restarted_triton_is_a_new_baseline(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        reloader, backend = await started_reloader(tmp_path, ("cbam", "se"))
        catalog = reloader.catalog
        write_model(tmp_path, "ran", config_to_text(backend.configs["cbam"]).replace('"cbam"', '"ran"'))
        await reloader.check()
        assert await reloader.check() == Changes(added=("ran",))
        assert "ran" in catalog.models
        catalog.note_release("se", "Triton error INTERNAL: failed to load 'se'")
        for path in sorted((tmp_path / "se").rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (tmp_path / "se").rmdir()
        await reloader.check()
        assert await reloader.check() == Changes(removed=("se",))
        assert backend.unloads == ["se"] and "se" not in catalog.models
        assert catalog.release_errors == {}, "a model that left takes its failed release's note along"

        backend.ready = False  # Triton died: a restarted one loads what is on disk then
        await reloader.check()
        touch(tmp_path / "cbam" / "1" / "model.onnx")
        backend.ready = True
        for _ in range(3):
            assert await reloader.check() == Changes()
        assert backend.loads == ["ran"]

    asyncio.run(scenario())


def test_watching_turns_on_triton_model_control_with_per_model_readiness(tmp_path: Path) -> None:
    plain = TritonProcess(TritonSettings(model_repository=tmp_path)).server_args
    assert "--model-control-mode=none" in plain and "--strict-readiness=true" in plain
    watched = TritonProcess(TritonSettings(model_repository=tmp_path, watch_repository=True)).server_args
    assert "--model-control-mode=explicit" in watched and "--load-model=*" in watched
    assert "--strict-readiness=false" in watched  # a model loading must not make Triton unready
    args = build_parser().parse_args(["serve", "--watch-repository"])
    assert settings_from_args(args).triton.watch_repository
    assert not Settings().triton.watch_repository
