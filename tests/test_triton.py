"""The real tritonserver from the PyPI wheel, serving the committed repository."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from attnserve.errors import SetupError
from attnserve.server.triton import TritonProcess, check_shared_memory
from attnserve.settings import DEFAULT_MODEL_REPOSITORY, TritonSettings

from .conftest import triton_settings

pytestmark = pytest.mark.triton

MODEL = "cbam"


def reference_outputs(batch: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(DEFAULT_MODEL_REPOSITORY / MODEL / "1" / "model.onnx"))
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"image": batch}), strict=True))


def batch(size: int) -> np.ndarray:
    return np.random.default_rng(size).normal(size=(size, 1, 64, 64)).astype(np.float32)


def test_grpc_inference_equals_onnxruntime_for_logits_and_every_map(triton: TritonSettings) -> None:
    images = batch(3)
    expected = reference_outputs(images)
    with grpcclient.InferenceServerClient(f"127.0.0.1:{triton.grpc_port}") as client:
        assert client.is_model_ready(MODEL)
        infer_input = grpcclient.InferInput("image", list(images.shape), "FP32")
        infer_input.set_data_from_numpy(images)
        result = client.infer(MODEL, [infer_input])
    for name, value in expected.items():
        np.testing.assert_allclose(result.as_numpy(name), value, atol=1e-5, err_msg=name)


def test_http_inference_with_binary_tensors_and_selected_outputs(triton: TritonSettings) -> None:
    images = batch(2)
    expected = reference_outputs(images)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{triton.http_port}")
    infer_input = httpclient.InferInput("image", list(images.shape), "FP32")
    infer_input.set_data_from_numpy(images, binary_data=True)
    wanted = ["logits", "spatial_stage3", "cam"]
    outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in wanted]
    result = client.infer(MODEL, [infer_input], outputs=outputs)
    assert {o["name"] for o in result.get_response()["outputs"]} == set(wanted)
    for name in wanted:
        np.testing.assert_allclose(result.as_numpy(name), expected[name], atol=1e-5, err_msg=name)


def test_the_model_config_carries_the_spec_and_the_backend(triton: TritonSettings) -> None:
    with grpcclient.InferenceServerClient(f"127.0.0.1:{triton.grpc_port}") as client:
        config = client.get_model_config(MODEL).config
        assert config.backend == "onnxruntime" and config.max_batch_size == 64
        assert "attnserve_spec" in config.parameters
        # model control is off: the repository is fixed at start-up
        with pytest.raises(InferenceServerException, match="explicit model load / unload is not allowed"):
            client.load_model(MODEL)


def test_a_port_in_use_is_a_clear_error_and_leaves_no_process(triton: TritonSettings) -> None:
    clash = triton_settings(http_port=triton.http_port)  # the session Triton holds this port
    process = TritonProcess(clash)
    with pytest.raises(SetupError, match=f"Triton HTTP port {triton.http_port}.*not available"):
        process.start()
    assert process.process is None


def test_missing_shared_memory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="/dev/shm|shared memory"):
        check_shared_memory(tmp_path / "no-shm")


def test_a_repository_without_models_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="holds no model"):
        TritonProcess(triton_settings(repository=tmp_path)).start()


def test_stop_leaves_no_tritonserver_or_stub_behind() -> None:
    settings = triton_settings()
    with TritonProcess(settings) as process:
        assert process.process is not None
        pid = process.process.pid
        # its own process group (stopped whole), in the starter's session (`server.triton.process`)
        assert os.getpgid(pid) == pid != os.getpgid(0) and os.getsid(pid) == os.getsid(0)
    survivors = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True).stdout.split()
    assert survivors == []


def test_dynamic_batching_concatenates_and_splits_requests_correctly(tmp_path: Path) -> None:
    """Concurrent batch-1 requests reach the backend together; each gets its own answer back.

    A copy of the repository with a 50 ms queue delay makes the grouping certain.
    """
    from attnserve.export.repository import config_to_text, read_config

    shutil.copytree(DEFAULT_MODEL_REPOSITORY / MODEL, tmp_path / MODEL)
    config = read_config(tmp_path / MODEL / "config.pbtxt")
    config.dynamic_batching.max_queue_delay_microseconds = 50_000
    (tmp_path / MODEL / "config.pbtxt").write_text(config_to_text(config))
    settings = triton_settings(repository=tmp_path)
    images = batch(12)
    expected = reference_outputs(images)
    with (
        TritonProcess(settings),
        grpcclient.InferenceServerClient(f"127.0.0.1:{settings.grpc_port}") as stats,
    ):
        before = stats.get_inference_statistics(MODEL).model_stats[0]  # the warm-up counts too
        client = httpclient.InferenceServerClient(f"127.0.0.1:{settings.http_port}", concurrency=len(images))
        pending = []
        for i in range(len(images)):
            infer_input = httpclient.InferInput("image", [1, 1, 64, 64], "FP32")
            infer_input.set_data_from_numpy(images[i : i + 1], binary_data=True)
            pending.append(client.async_infer(MODEL, [infer_input]))
        for i, request in enumerate(pending):
            result = request.get_result()
            for name in expected:
                np.testing.assert_allclose(
                    result.as_numpy(name)[0], expected[name][i], atol=1e-5, err_msg=name
                )
        client.close()
        after = stats.get_inference_statistics(MODEL).model_stats[0]
    assert after.inference_count - before.inference_count == len(images)
    executions = after.execution_count - before.execution_count
    assert executions < len(images), "Triton never handed the backend more than one request at a time"


def test_the_runtime_is_provisioned_once_and_refreshed_when_the_backend_changes(tmp_path: Path) -> None:
    from attnserve.server.triton import ensure_runtime

    settings = triton_settings()
    runtime = ensure_runtime(settings)
    model_py = runtime.backends_dir / "onnxruntime" / "model.py"
    stamp = model_py.stat().st_mtime_ns
    assert ensure_runtime(settings) == runtime and model_py.stat().st_mtime_ns == stamp  # untouched
    model_py.write_text("# stale backend\n")
    ensure_runtime(settings)
    assert "class TritonPythonModel" in model_py.read_text()
