"""deploy/k8s validated offline: no cluster, no kubectl, no kustomize binary.

`build` below is the small part of kustomize these manifests use (resources, strategic-merge
patches by kind and name, namespace); it refuses any other kustomization field, so the checks
see what `kubectl apply -k` would apply. Every object of the base and of the GPU overlay
validates strictly against the Kubernetes JSON schemas (kubernetes-validate), then the
properties that the schemas cannot see are asserted: probes, resources, selectors, non-root.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from attnserve.settings import Settings

from .conftest import REPO_ROOT

K8S = REPO_ROOT / "deploy" / "k8s"
BASE = K8S / "base"
GPU = K8S / "overlays" / "gpu"
ADAPTER_RULES = K8S / "prometheus-adapter-rules.yaml"
VARIANTS = {"base": BASE, "gpu": GPU}
# Native gRPC probes are GA in 1.27, the preStop `sleep` action is on by default from 1.30.
MIN_KUBERNETES = "1.30.0"
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "namespace", "resources", "patches"}
CLUSTER_SCOPED = {"Namespace"}
GATEWAY_COMMAND = "attnserve gateway --triton-url triton:8001 --host 0.0.0.0"

Obj = dict[str, Any]


# --- a minimal kustomize ------------------------------------------------------------------


def load_docs(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomization(folder: Path) -> Obj:
    (doc,) = load_docs(folder / "kustomization.yaml")
    assert doc["kind"] == "Kustomization"
    unsupported = set(doc) - KUSTOMIZE_FIELDS
    assert not unsupported, f"{folder}: the test's kustomize does not implement {unsupported}"
    return doc


def strategic_merge(base: Any, patch: Any) -> Any:
    """Kubernetes' strategic merge, as far as these patches need it: maps merge key by key,
    lists of named maps (containers, volumes, env) merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        assert not any(key.startswith("$") for key in patch), "patch directives are not supported"
        return {
            **base,
            **{key: strategic_merge(base[key], v) if key in base else v for key, v in patch.items()},
        }
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        merged = {item["name"]: item for item in base}
        for item in patch:
            merged[item["name"]] = (
                strategic_merge(merged[item["name"]], item) if item["name"] in merged else item
            )
        return list(merged.values())
    return patch


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(item, dict) and "name" in item for item in items)


def build(folder: Path) -> list[Obj]:
    """The objects `kubectl apply -k folder` would apply."""
    spec = kustomization(folder)
    objects: list[Obj] = []
    for entry in spec["resources"]:
        path = folder / entry
        objects += build(path) if path.is_dir() else load_docs(path)
    for entry in spec.get("patches", []):
        assert set(entry) == {"path"}, "only strategic-merge patch files are supported"
        for patch in load_docs(folder / entry["path"]):
            index = _index(objects, patch["kind"], patch["metadata"]["name"])
            objects[index] = strategic_merge(objects[index], patch)
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"] = {**obj["metadata"], "namespace": spec["namespace"]}
    return objects


def _index(objects: list[Obj], kind: str, name: str) -> int:
    (index,) = [i for i, obj in enumerate(objects) if (obj["kind"], obj["metadata"]["name"]) == (kind, name)]
    return index


def find(objects: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def the(objects: list[Obj], kind: str, name: str) -> Obj:
    (obj,) = find(objects, kind, name)
    return obj


def containers(deployment: Obj) -> list[Obj]:
    pod = deployment["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def container(deployment: Obj, name: str) -> Obj:
    (found,) = [c for c in containers(deployment) if c["name"] == name]
    return found


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def pod_labels(deployment: Obj) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number: '500m' -> 0.5, '2Gi' -> 2 * 2**30."""
    text = str(value)
    match = re.fullmatch(r"([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?", text)
    assert match, f"unexpected quantity {text!r}"
    factors = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    factors |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    return float(match[1]) * factors[match[2]]


def port_number(container: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def objects(request: pytest.FixtureRequest) -> list[Obj]:
    return build(VARIANTS[request.param])


# --- files ---------------------------------------------------------------------------------


def test_every_manifest_file_is_listed_and_every_listed_file_exists() -> None:
    listed: set[Path] = set()
    for folder in VARIANTS.values():
        spec = kustomization(folder)
        entries = [*spec["resources"], *(p["path"] for p in spec.get("patches", []))]
        for entry in entries:
            path = (folder / entry).resolve()
            assert path.exists(), f"{folder / 'kustomization.yaml'} lists the missing {entry}"
            listed.add(path)
    on_disk = {p.resolve() for p in K8S.rglob("*.yaml")} | {p.resolve() for p in K8S.rglob("*.yml")}
    unlisted = on_disk - listed - {(f / "kustomization.yaml").resolve() for f in VARIANTS.values()}
    # The adapter's Helm values are no Kubernetes object; they are checked on their own below.
    assert unlisted == {ADAPTER_RULES.resolve()}
    assert "kind" not in yaml.safe_load(ADAPTER_RULES.read_text())


# --- schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [MIN_KUBERNETES, kubernetes_validate.utils.latest_version()])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_object_validates_strictly_against_the_kubernetes_schema(variant: str, version: str) -> None:
    built = build(VARIANTS[variant])
    assert len(built) == len(list(BASE.glob("*.yaml"))) - 1  # overlays patch, they add nothing
    for obj in built:
        where = f"{variant}: {obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where} is invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")


def test_objects_are_unique_and_in_the_attnserve_namespace(objects: list[Obj]) -> None:
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys))
    namespace = the(objects, "Namespace", "attnserve")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"]["namespace"] == "attnserve"


# --- relations between objects -------------------------------------------------------------


def test_deployment_selectors_match_their_pod_templates(objects: list[Obj]) -> None:
    for deployment in find(objects, "Deployment"):
        assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(deployment))


def test_services_select_pods_and_target_their_named_ports(objects: list[Obj]) -> None:
    for service in find(objects, "Service"):
        (deployment,) = [
            d for d in find(objects, "Deployment") if selects(service["spec"]["selector"], pod_labels(d))
        ]
        assert deployment["metadata"]["name"] == service["metadata"]["name"]
        declared = {
            (p["name"], p["containerPort"]) for c in containers(deployment) for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            (number,) = [n for name, n in declared if name == port["targetPort"]]
            assert number == port["port"], "the Service keeps the container's port number"


def test_pod_disruption_budgets_select_existing_pods(objects: list[Obj]) -> None:
    budgets = find(objects, "PodDisruptionBudget")
    assert {b["metadata"]["name"] for b in budgets} == {"triton", "gateway"}
    for budget in budgets:
        matched = [
            d
            for d in find(objects, "Deployment")
            if selects(budget["spec"]["selector"]["matchLabels"], pod_labels(d))
        ]
        assert [d["metadata"]["name"] for d in matched] == [budget["metadata"]["name"]]
        assert budget["spec"]["maxUnavailable"] == 1, "maxUnavailable: a single replica never blocks a drain"


def test_autoscalers_target_existing_deployments(objects: list[Obj]) -> None:
    autoscalers = {h["metadata"]["name"]: h for h in find(objects, "HorizontalPodAutoscaler")}
    assert set(autoscalers) == {"triton", "gateway"}
    for name, hpa in autoscalers.items():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", name)
        deployment = the(objects, "Deployment", target["name"])
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # the first apply starts within the autoscaler's range
        assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Resource":  # utilization is relative to every container's request
                resource = metric["resource"]["name"]
                assert all(resource in c["resources"]["requests"] for c in containers(deployment))
    (gateway_metric,) = autoscalers["gateway"]["spec"]["metrics"]
    assert gateway_metric["type"] == "Resource" and gateway_metric["resource"]["name"] == "cpu"
    (triton_metric,) = autoscalers["triton"]["spec"]["metrics"]
    assert triton_metric["type"] == "Pods"
    assert triton_metric["pods"]["metric"]["name"] in adapter_metric_names()


def adapter_metric_names() -> set[str]:
    rules = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]
    return {rule["name"]["as"] for rule in rules["custom"]}


def test_prometheus_adapter_rules_turn_triton_counters_into_queue_time_per_request() -> None:
    (rule,) = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]["custom"]
    assert rule["name"]["as"] == "triton_queue_time_us_per_request"
    assert re.fullmatch(rule["name"]["matches"], "nv_inference_queue_duration_us")
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    query = rule["metricsQuery"]
    for needed in (
        "rate(nv_inference_queue_duration_us{<<.LabelMatchers>>}",
        "rate(nv_inference_request_success{",
    ):
        assert needed in query
    assert query.count("<<.GroupBy>>") == 2  # numerator and denominator aggregate per pod alike
    # test_deploy_monitoring checks the PromQL with promtool and the names against a live Triton.


# --- containers ----------------------------------------------------------------------------


def test_every_container_has_requests_and_limits(objects: list[Obj]) -> None:
    for deployment in find(objects, "Deployment"):
        for c in containers(deployment):
            requests, limits = c["resources"]["requests"], c["resources"]["limits"]
            for resource in ("cpu", "memory"):
                assert quantity(requests[resource]) <= quantity(limits[resource]), (c["name"], resource)
            for resource in set(requests) | set(limits):
                if "/" in resource:  # extended resources (nvidia.com/gpu): requests must equal limits
                    assert requests[resource] == limits[resource]


def test_pods_run_non_root_under_the_restricted_profile(objects: list[Obj]) -> None:
    for deployment in find(objects, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in containers(deployment):
            security = c["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert security["readOnlyRootFilesystem"] is True
            assert "privileged" not in security and "runAsUser" not in security


def test_triton_serves_a_fixed_repository_from_a_volume_with_health_probes(objects: list[Obj]) -> None:
    deployment = the(objects, "Deployment", "triton")
    triton = container(deployment, "triton")
    command = [*triton["command"], *triton["args"]]
    assert command[0] == "tritonserver"
    for flag in ("--model-control-mode=none", "--strict-readiness=true"):
        assert flag in command
    (repository,) = [arg.split("=", 1)[1] for arg in command if arg.startswith("--model-repository=")]
    (mount,) = [m for m in triton["volumeMounts"] if m["mountPath"] == repository]
    assert mount.get("readOnly") is True
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    the(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert "s3://" in (BASE / "triton-deployment.yaml").read_text(), "the comments name s3:// repositories"
    for probe, path in (("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")):
        get = triton[probe]["httpGet"]
        assert get["path"] == path and port_number(triton, get["port"]) == 8000
    assert triton["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert {p["containerPort"] for p in triton["ports"]} == {8000, 8001, 8002}


def test_gateway_runs_the_cli_against_the_triton_service_with_grpc_readiness(objects: list[Obj]) -> None:
    deployment = the(objects, "Deployment", "gateway")
    gateway = container(deployment, "gateway")
    assert gateway["image"] == "attnserve-gateway:0.1.0"
    command = [*gateway["command"], *gateway["args"]]
    assert " ".join(command) == GATEWAY_COMMAND
    host, port = command[command.index("--triton-url") + 1].split(":")
    assert int(port) in {p["port"] for p in the(objects, "Service", host)["spec"]["ports"]}
    assert gateway["readinessProbe"]["grpc"] == {"port": 8500}
    live = gateway["livenessProbe"]["httpGet"]
    assert live["path"] == "/live" and port_number(gateway, live["port"]) == 8501
    assert {p["containerPort"] for p in gateway["ports"]} == {8500, 8501, 8502}


def test_gateway_environment_names_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = container(the(build(BASE), "Deployment", "gateway"), "gateway")
    for variable in gateway["env"]:
        assert variable["name"].startswith("ATTNSERVE_")
        monkeypatch.setenv(variable["name"], variable["value"])
    settings = Settings()
    for variable in gateway["env"]:  # each one reaches its field (unknown names would be ignored)
        value: Any = settings
        for part in variable["name"].removeprefix("ATTNSERVE_").lower().split("__"):
            value = getattr(value, part)
        assert str(value) in {variable["value"], f"{variable['value']}.0"}


def test_termination_grace_outlasts_the_pre_stop_pause_and_the_drain(objects: list[Obj]) -> None:
    gateway = the(objects, "Deployment", "gateway")
    env = {v["name"]: v["value"] for v in container(gateway, "gateway")["env"]}
    drain_s = float(env.get("ATTNSERVE_GATEWAY__GRACE_S", Settings().gateway.grace_s))
    pause_s = container(gateway, "gateway")["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert gateway["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > pause_s + drain_s
    triton = the(objects, "Deployment", "triton")
    args = container(triton, "triton")["args"]
    (exit_timeout,) = [int(a.split("=")[1]) for a in args if a.startswith("--exit-timeout-secs=")]
    pause_s = container(triton, "triton")["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert triton["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > pause_s + exit_timeout


# --- the GPU overlay -----------------------------------------------------------------------


def test_only_the_gpu_overlay_requests_a_gpu_and_it_changes_nothing_else() -> None:
    base, gpu = build(BASE), build(GPU)
    assert "nvidia.com/gpu" not in yaml.safe_dump(base)
    triton = the(gpu, "Deployment", "triton")
    resources = container(triton, "triton")["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    base_resources = container(the(base, "Deployment", "triton"), "triton")["resources"]
    for kind in ("requests", "limits"):  # CPU and memory survive the merge
        assert {k: v for k, v in resources[kind].items() if k != "nvidia.com/gpu"} == base_resources[kind]
    pod = triton["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    base_args = container(the(base, "Deployment", "triton"), "triton")["args"]
    gpu_args = container(triton, "triton")["args"]
    assert [a.replace("gpu-metrics=false", "gpu-metrics=true") for a in base_args] == gpu_args
    changed = {(o["kind"], o["metadata"]["name"]) for o in gpu if o not in base}
    assert changed == {("Deployment", "triton"), ("HorizontalPodAutoscaler", "triton")}


@pytest.mark.parametrize(
    ("base", "patch", "merged"),
    [
        ({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}, {"a": {"b": 1, "c": 3}}),
        (
            {"l": [{"name": "x", "v": 1}, {"name": "y"}]},
            {"l": [{"name": "x", "w": 2}]},
            {"l": [{"name": "x", "v": 1, "w": 2}, {"name": "y"}]},
        ),
        ({"l": [{"name": "x"}]}, {"l": [{"name": "z"}]}, {"l": [{"name": "x"}, {"name": "z"}]}),
        ({"args": ["--a", "--b"]}, {"args": ["--c"]}, {"args": ["--c"]}),
        ({"t": [{"key": "k"}]}, {"t": [{"key": "j"}]}, {"t": [{"key": "j"}]}),
    ],
)
def test_strategic_merge_helper(base: Obj, patch: Obj, merged: Obj) -> None:
    assert strategic_merge(base, patch) == merged
