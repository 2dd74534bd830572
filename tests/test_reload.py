"""`attnserve serve --watch-repository` as an operator uses it: releases go into the repository
while a client predicts, and every call is answered, by one release or the next, never a mix."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from attnserve._net import free_port
from attnserve.clients import Client
from attnserve.errors import AttnserveError, ModelNotFound, Unavailable
from attnserve.export.repository import read_config, write_model
from attnserve.settings import DEFAULT_MODEL_REPOSITORY

pytestmark = [pytest.mark.triton, pytest.mark.slow]

DIGIT = Path(__file__).resolve().parent.parent / "docs" / "samples" / "digit.png"
CBAM_MAPS = frozenset(
    {"cam", "channel_stage1", "channel_stage2", "channel_stage3"}
    | {"spatial_product", "spatial_stage1", "spatial_stage2", "spatial_stage3"}
)
SE_MAPS = frozenset({"cam", "se_stage1", "se_stage2", "se_stage3"})


@dataclass
class Answer:
    started: float
    maps: frozenset[str] | None
    error: str = ""


class Predicting:
    """One client predicting on ``model`` back to back, recording which maps each answer had."""

    def __init__(self, address: str, model: str) -> None:
        self.address, self.model = address, model
        self.answers: list[Answer] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with Client(self.address, timeout_s=15) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    answer = client.predict(DIGIT, model=self.model)
                    self.answers.append(Answer(started, frozenset(m.name for m in answer.attention)))
                except AttnserveError as exc:
                    self.answers.append(Answer(started, None, f"{type(exc).__name__}: {exc}"))
                self.stop.wait(0.02)

    def __enter__(self) -> Predicting:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(30)


def model_loads(metrics_url: str) -> dict[tuple[str, str, str], float]:
    """``attnserve_model_loads_total`` by (model, action, outcome)."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return {
        (sample.labels["model"], sample.labels["action"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "attnserve_model_loads"
        for sample in family.samples
        if sample.name == "attnserve_model_loads_total"
    }


def wait_until(condition: object, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()[-5000:]
        time.sleep(0.1)


def release(repository: Path, name: str, source: Path) -> None:
    """Puts the model directory ``source`` into the repository as ``name``, version 1, the way
    `attnserve export` does (`write_model`: staged beside the repository, then two renames)."""
    config = read_config(source / "config.pbtxt")
    config.name = name
    labels = tuple((source / "labels.txt").read_text().splitlines())
    write_model(repository, name, 1, (source / "1" / "model.onnx").read_bytes(), config, labels)


def test_releases_load_reload_and_unload_while_every_call_is_answered(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    repository.mkdir()
    for name in ("cbam", "se"):
        shutil.copytree(DEFAULT_MODEL_REPOSITORY / name, repository / name)
    gateway_port, metrics_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    args = [
        "serve",
        f"--repository={repository}",
        "--watch-repository",
        *(f"--{flag}={free_port()}" for flag in ("http-port", "grpc-port", "metrics-port")),
        f"--gateway-http-port={free_port()}",
        f"--gateway-metrics-port={metrics_port}",
        f"--port={gateway_port}",
    ]
    env = {**os.environ, "ATTNSERVE_TRITON__WATCH_INTERVAL_S": "0.3"}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "attnserve", *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    address, metrics = f"127.0.0.1:{gateway_port}", f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        with Client(address) as client:
            wait_until(lambda: _serving(client), process, log, timeout_s=120)
            with Predicting(address, "cbam") as cbam_calls, Predicting(address, "se") as se_calls:
                time.sleep(1.0)
                # new weights (here: the same file, rewritten): swapped without a pause
                weights = repository / "cbam" / "1" / "model.onnx"
                weights.write_bytes(weights.read_bytes())
                wait_until(lambda: model_loads(metrics).get(("cbam", "reload", "ok")) == 1, process, log)

                # a release with another interface: se's graph and spec, named cbam
                switched = time.monotonic()
                release(repository, "cbam", DEFAULT_MODEL_REPOSITORY / "se")
                wait_until(lambda: model_loads(metrics).get(("cbam", "reload", "ok")) == 2, process, log)
                assert {m.name for m in client.get_model("cbam").attention} == SE_MAPS

                # a broken release: Triton cannot load it, and the previous one keeps serving
                (repository / "se" / "1" / "model.onnx").write_bytes(b"not an onnx graph")
                wait_until(lambda: model_loads(metrics).get(("se", "reload", "failed")) == 1, process, log)
                listed_se = client.get_model("se")
                assert listed_se.ready and "model.onnx failed" in listed_se.release_error, listed_se
                assert "At:" not in listed_se.release_error and str(tmp_path) not in listed_se.release_error
                assert not client.get_model("cbam").release_error
                time.sleep(1.0)
                # the next good release goes in and clears the note
                good = (DEFAULT_MODEL_REPOSITORY / "se" / "1" / "model.onnx").read_bytes()
                (repository / "se" / "1" / "model.onnx").write_bytes(good)
                wait_until(lambda: model_loads(metrics).get(("se", "reload", "ok")) == 1, process, log)
                assert not client.get_model("se").release_error

                # a new model, then removed
                release(repository, "ran", DEFAULT_MODEL_REPOSITORY / "ran")
                wait_until(lambda: "ran" in _ready(client), process, log)
                assert client.predict(DIGIT, model="ran").predictions
                shutil.rmtree(repository / "ran")
                wait_until(lambda: "ran" not in _listed(client), process, log)
                with pytest.raises(ModelNotFound):
                    client.predict(DIGIT, model="ran")

                # a new model Triton cannot load: listed not ready, with Triton's reason
                broken = tmp_path / "broken"
                shutil.copytree(DEFAULT_MODEL_REPOSITORY / "ran", broken)
                (broken / "1" / "model.onnx").write_bytes(b"not an onnx graph")
                release(repository, "broken", broken)
                wait_until(lambda: model_loads(metrics).get(("broken", "load", "failed")) == 1, process, log)
                (listed,) = [m for m in client.list_models().models if m.name == "broken"]
                assert not listed.ready and "Load model from model.onnx failed" in listed.reason, listed
                with pytest.raises(Unavailable, match="'broken' is not ready: UNAVAILABLE") as refused:
                    client.predict(DIGIT, model="broken")
                for text in (listed.reason, str(refused.value)):  # no traceback, no server path
                    assert "At:" not in text and str(tmp_path) not in text and ".py" not in text, text
                assert client.health() == "SERVING"

        for calls in (cbam_calls, se_calls):
            failed = [a for a in calls.answers if a.maps is None]
            assert not failed, failed[:5]
        # cbam answered as cbam until the switch, then as se, never one after the other again
        kinds = [a.maps for a in cbam_calls.answers]
        assert set(kinds) == {CBAM_MAPS, SE_MAPS}
        first_se = kinds.index(SE_MAPS)
        assert set(kinds[:first_se]) == {CBAM_MAPS} and set(kinds[first_se:]) == {SE_MAPS}
        assert cbam_calls.answers[first_se].started > switched - 0.05
        assert len(se_calls.answers) > 20 and {a.maps for a in se_calls.answers} == {SE_MAPS}
        assert model_loads(metrics) == {
            ("cbam", "reload", "ok"): 2,
            ("se", "reload", "failed"): 1,
            ("se", "reload", "ok"): 1,
            ("ran", "load", "ok"): 1,
            ("ran", "unload", "ok"): 1,
            ("broken", "load", "failed"): 1,
        }
        text = log.read_text()
        assert "its interface changed: calls waited for it" in text
        assert "the previous release keeps serving" in text
        assert "Traceback" not in text
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0, log.read_text()[-5000:]


def _serving(client: Client) -> bool:
    try:
        return client.health() == "SERVING"
    except AttnserveError:
        return False


def _listed(client: Client) -> set[str]:
    return {m.name for m in client.list_models().models}


def _ready(client: Client) -> set[str]:
    return {m.name for m in client.list_models().models if m.ready}
