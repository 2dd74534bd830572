"""Serves what the model repository holds now: new models loaded, changed ones reloaded, removed
ones unloaded, while serving (``watch_repository``).

Each round scans the repository (every file's path, size and modification time, per model
directory) and acts only on what two scans in a row agree on, so a model being copied in file by
file, or swapped in by the exporter's two renames, is never loaded half-written or unloaded in
between. Triton (explicit model control) reloads a model by loading the new release beside the
one serving and switching when it is ready; a release that fails to load leaves the previous one
serving.

A release whose *interface* changes (its spec: labels, attention outputs, preprocessing; or its
tensors) must not be answered with the other release's spec. So calls on it are paused (they wait
within their deadline), the calls in flight finish, Triton loads the new release, the catalog
reads it, and the waiting calls go on with the new one. A release with the same interface (new
weights: the usual retraining) is swapped without a pause.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from attnserve.errors import AttnserveError, Unavailable
from attnserve.model_info import ModelInfo

from .admission import Admission
from .backend import InferenceBackend, ModelControl
from .catalog import ModelCatalog, NoSpec, model_info_from_config
from .metrics import GatewayMetrics

log = logging.getLogger(__name__)

CONFIG_FILE = "config.pbtxt"


def scan_repository(repository: Path) -> dict[str, str]:
    """Each model directory (one holding a ``config.pbtxt``; hidden ones skipped) → a digest of
    its files' relative paths, sizes and modification times. A directory that vanishes during
    the scan is left out (the next scan sees what replaced it)."""
    models: dict[str, str] = {}
    try:
        children = sorted(os.scandir(repository), key=lambda entry: entry.name)
    except FileNotFoundError:
        return models
    for child in children:
        if child.name.startswith(".") or not child.is_dir() or not os.path.isfile(Path(child) / CONFIG_FILE):
            continue
        digest = hashlib.sha256()
        try:
            for root, dirs, files in os.walk(child.path, onerror=_raise):
                dirs.sort()
                for file in sorted(files):
                    path = os.path.join(root, file)
                    stat = os.stat(path)
                    relative = os.path.relpath(path, child.path)
                    digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            continue
        models[child.name] = digest.hexdigest()
    return models


def _raise(error: OSError) -> None:
    raise error


@dataclass(frozen=True)
class Changes:
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def settled_changes(
    loaded: Mapping[str, str], previous: Mapping[str, str], current: Mapping[str, str]
) -> Changes:
    """What differs from ``loaded`` and reads the same in the last two scans: a model present
    with one digest in both, or absent from both."""
    settled = {name: digest for name, digest in current.items() if previous.get(name) == digest}
    return Changes(
        added=tuple(name for name in settled if name not in loaded),
        changed=tuple(name for name, digest in settled.items() if name in loaded and loaded[name] != digest),
        removed=tuple(name for name in loaded if name not in current and name not in previous),
    )


class ReloadingBackend(InferenceBackend, ModelControl, Protocol):
    """What the reloader needs: readiness and the index (to rediscover), loads and unloads."""


def _interface(info: ModelInfo) -> tuple[object, ...]:
    return (info.spec, info.max_batch_size, info.inputs, info.outputs)


class ModelReloader:
    """Keeps Triton and the catalog on what the repository holds; from the event loop only."""

    def __init__(
        self,
        backend: ReloadingBackend,
        catalog: ModelCatalog,
        admission: Admission,
        metrics: GatewayMetrics,
        repository: Path,
        interval_s: float,
        drain_timeout_s: float = 10.0,
    ) -> None:
        self.backend = backend
        self.catalog = catalog
        self.admission = admission
        self.metrics = metrics
        self.repository = repository
        self.interval_s = interval_s
        self.drain_timeout_s = drain_timeout_s
        self._loaded: dict[str, str] | None = None
        """Each model's files as Triton last loaded them (or tried to); None until Triton is seen
        ready, since a Triton that (re)starts loads what is on disk then."""
        self._previous: dict[str, str] = {}

    async def run(self) -> None:
        """Rounds every ``interval_s`` until cancelled."""
        while True:
            try:
                await self.check()
            except Exception:  # a failed round must not end the watching
                log.exception("model repository round failed")
            await asyncio.sleep(self.interval_s)

    async def check(self) -> Changes:
        """One round: scan, and load, reload or unload what two scans agree has changed."""
        if not await self.backend.is_ready():
            self._loaded = None
            return Changes()
        current = await asyncio.to_thread(scan_repository, self.repository)
        previous, self._previous = self._previous, current
        if self._loaded is None:
            self._loaded = dict(current)
            return Changes()
        changes = settled_changes(self._loaded, previous, current)
        for name in changes.removed:
            await self._unload(name)
        for name in (*changes.added, *changes.changed):
            await self._load(name, current[name], reload=name in changes.changed)
        return changes

    async def _unload(self, name: str) -> None:
        assert self._loaded is not None
        self.catalog.drop(name)  # new calls are NOT_FOUND now; those in flight finish in Triton
        try:
            await self.backend.unload_model(name)
        except Unavailable:
            return
        except AttnserveError as exc:
            self._count(name, "unload", ok=False)
            log.error("unloading %s (its directory left the repository) failed: %s", name, exc)
        else:
            await self.catalog.refresh(self.backend)
            self._count(name, "unload", ok=True)
            log.info("unloaded %s: its directory left the repository", name)
        self.catalog.note_release(name, "")
        self._loaded.pop(name, None)

    async def _load(self, name: str, digest: str, reload: bool) -> None:
        """Loads (or reloads) ``name``; counted once the catalog serves the outcome."""
        assert self._loaded is not None
        action = "reload" if reload else "load"
        serving = self.catalog.models.get(name)
        pause = serving is not None and not self._same_interface(name, serving)
        started = time.perf_counter()
        failure: AttnserveError | None = None
        if pause:
            self.catalog.pause(name)
        try:
            if pause:
                await self._drain(name)
            await self.backend.load_model(name)
        except Unavailable:
            return  # Triton went away: when it is back it loads what is on disk then
        except AttnserveError as exc:
            failure = exc
        finally:
            try:
                await self.catalog.refresh(self.backend)
            except AttnserveError as exc:  # Triton went away meanwhile: the watcher rediscovers
                log.warning("rereading the models after the %s of %s failed: %s", action, name, exc)
            finally:
                self.catalog.resume(name)
        self._loaded[name] = digest
        # a release that failed beside one still serving is shown with it (ListModels); a new
        # model that failed is listed not ready with Triton's reason already
        self.catalog.note_release(name, str(failure) if failure is not None and serving is not None else "")
        self._count(name, action, ok=failure is None)
        if failure is not None:
            kept = "; the previous release keeps serving" if serving is not None else ""
            log.error("%s of %s failed%s: %s", action, name, kept, failure)
        else:
            how = " (its interface changed: calls waited for it)" if pause else ""
            log.info("%sed %s in %.2f s%s", action, name, time.perf_counter() - started, how)

    def _same_interface(self, name: str, serving: ModelInfo) -> bool:
        """The release on disk answers like the one serving (only its weights changed); anything
        unreadable counts as a change."""
        try:
            text = (self.repository / name / CONFIG_FILE).read_text()
            config = text_format.Parse(text, mc.ModelConfig())
            on_disk = model_info_from_config(config, serving.version)
        except (OSError, UnicodeDecodeError, text_format.ParseError, NoSpec):
            return False
        return _interface(on_disk) == _interface(serving)

    async def _drain(self, name: str) -> None:
        """Waits until no admitted call on ``name`` is in flight (they hold the old spec)."""
        deadline = time.monotonic() + self.drain_timeout_s
        while self.admission.in_flight_on(name):
            if time.monotonic() > deadline:
                waited = self.drain_timeout_s
                log.warning("calls on %s still in flight after %.0f s; reloading anyway", name, waited)
                return
            await asyncio.sleep(0.005)

    def _count(self, name: str, action: str, ok: bool) -> None:
        self.metrics.model_loads.labels(name, action, "ok" if ok else "failed").inc()
