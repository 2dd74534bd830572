"""deploy/prometheus and deploy/grafana validated offline, and against the real processes.

promtool checks the Prometheus configuration, the alerting rules (with unit tests) and the
syntax of every dashboard query. The Grafana provisioning and dashboard are checked for
structure, and every metric name that a panel, an alert or the Prometheus Adapter rule uses is
looked up in live /metrics scrapes of the real Triton and the real gateway.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from attnserve.clients import Client, HttpClient

from .conftest import REPO_ROOT, GatewayThread

PROMETHEUS = REPO_ROOT / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS / "prometheus.yml"
ALERTS = PROMETHEUS / "alerts.yml"
GRAFANA = REPO_ROOT / "deploy" / "grafana"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "attnserve.yml"
DASHBOARD = GRAFANA / "dashboards" / "attnserve.json"
ADAPTER_RULES = REPO_ROOT / "deploy" / "k8s" / "prometheus-adapter-rules.yaml"
SAMPLE = REPO_ROOT / "docs" / "samples" / "digit.png"

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: prometheus)")
# Grafana's variables, replaced by values of the same kind for promtool.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$model": ".*"}
# Prometheus' own series, not in any /metrics page.
SYNTHETIC = {"up"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    result = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


# --- PromQL metric names -------------------------------------------------------------------

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers left once strings, label
    matchers, ranges and grouping clauses are gone, and not called like functions."""
    for pattern in (_STRINGS, _MATCHERS, _RANGES, _GROUPING):
        expr = pattern.sub(" ", expr)
    return {m[1] for m in _IDENTIFIER.finditer(expr) if m[2] is None and m[1].lower() not in _KEYWORDS}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("min(attnserve_triton_ready)", {"attnserve_triton_ready"}),
        (
            'histogram_quantile(0.9, sum by (le) (rate(a_bucket{model=~"$model"}[$__rate_interval])))',
            {"a_bucket"},
        ),
        ('sum(rate(x_total{code!~"OK|200"}[5m])) / sum(rate(y_total[5m])) > 0.05', {"x_total", "y_total"}),
        ('up{job=~"triton|gateway"} == 0', {"up"}),
        ("a / on (model) group_left (reason) b offset 5m", {"a", "b"}),
        ("sum(x) by (model) / clamp_min(y, 1e-9) or vector(0)", {"x", "y"}),
        ('{__name__="z"}', set()),
    ],
)
def test_metric_names_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


# --- Prometheus ----------------------------------------------------------------------------


def test_prometheus_scrapes_triton_and_the_gateway() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job, target in (("triton", "triton:8002"), ("gateway", "gateway:8502")):
        assert jobs[job].get("metrics_path", "/metrics") == "/metrics"
        assert [t for group in jobs[job]["static_configs"] for t in group["targets"]] == [target]
    for rule_file in config["rule_files"]:  # relative to the config's folder, as Prometheus reads them
        assert (PROMETHEUS / rule_file).is_file()


@needs_promtool
def test_promtool_accepts_the_config_and_the_rules() -> None:
    assert "SUCCESS" in promtool("check", "config", str(PROMETHEUS_CONFIG)).stdout
    assert "SUCCESS" in promtool("check", "rules", str(ALERTS)).stdout


ALERT_TESTS = """
rule_files: [{alerts}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'attnserve_triton_ready{{instance="gateway:8502"}}'
        values: '1 1 0x10'
      - series: 'attnserve_requests_total{{code="OK",transport="grpc",method="Predict",model="cbam"}}'
        values: '0+540x20'
      - series: 'attnserve_requests_total{{code="INTERNAL",transport="grpc",method="Predict",model="cbam"}}'
        values: '0+60x20'
      - series: 'attnserve_requests_total{{code="429",transport="http",method="Predict",model="cbam"}}'
        values: '0+60x20'
      - series: 'attnserve_models_ready{{instance="gateway:8502"}}'
        values: '5x20'
      - series: 'attnserve_model_loads_total{{instance="gw",model="cbam",action="reload",outcome="failed"}}'
        values: '0 0 0 1x30'
      - series: 'attnserve_model_loads_total{{instance="gw",model="se",action="reload",outcome="ok"}}'
        values: '0 1 2x30'
    alert_rule_test:
      - eval_time: 5m
        alertname: AttnserveTritonNotReady
        exp_alerts:
          - exp_labels: {{severity: critical, instance: "gateway:8502"}}
            exp_annotations:
              summary: "The gateway gateway:8502 sees Triton not ready: it is not serving"
      - eval_time: 15m
        alertname: AttnserveRejectingRequests
        exp_alerts:
          - exp_labels: {{severity: warning}}
            exp_annotations:
              summary: "The gateways refuse 1 requests/s at admission (RESOURCE_EXHAUSTED / 429)"
      - eval_time: 15m
        alertname: AttnserveServerErrors
        exp_alerts:
          - exp_labels: {{severity: critical}}
            exp_annotations:
              summary: "9.091% of requests fail on the server side"
      - eval_time: 15m
        alertname: AttnserveNoModelsReady
        exp_alerts: []
      - eval_time: 10m
        alertname: AttnserveModelLoadFailed
        exp_alerts:
          - exp_labels:
              severity: warning
              instance: gw
              model: cbam
              action: reload
              outcome: failed
            exp_annotations:
              summary: "gw could not reload cbam: see the gateway's log"
      - eval_time: 25m
        alertname: AttnserveModelLoadFailed
        exp_alerts: []
"""


@needs_promtool
def test_alerts_fire_on_their_conditions(tmp_path: Path) -> None:
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(ALERT_TESTS.format(alerts=json.dumps(str(ALERTS))))
    promtool("test", "rules", str(tests))


@needs_promtool
def test_every_dashboard_and_adapter_query_is_valid_promql(tmp_path: Path) -> None:
    rules = [{"record": f"attnserve:check:{i}", "expr": expr} for i, expr in enumerate(promql_queries())]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in promtool("check", "rules", str(path)).stdout


def promql_queries() -> list[str]:
    """Every dashboard target and the adapter's query, with Grafana's and the adapter's
    placeholders replaced by values of the same kind."""
    queries = [target["expr"] for panel in panels(dashboard()) for target in panel.get("targets", [])]
    queries += [adapter_query()]
    for variable, value in GRAFANA_VARIABLES.items():
        queries = [q.replace(variable, value) for q in queries]
    return queries


def adapter_query() -> str:
    (rule,) = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]["custom"]
    query: str = rule["metricsQuery"]
    return query.replace("<<.GroupBy>>", "namespace, pod").replace(
        "<<.LabelMatchers>>", 'namespace="attnserve"'
    )


# --- Grafana -------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def provisioned_uid() -> str:
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    uid: str = source["uid"]
    return uid


def test_grafana_provisions_prometheus_and_the_dashboard_folder() -> None:
    config = yaml.safe_load(DATASOURCES.read_text())
    (source,) = config["datasources"]
    assert config["apiVersion"] == 1
    assert (source["type"], source["url"], source["uid"]) == (
        "prometheus",
        "http://prometheus:9090",
        "prometheus",
    )
    providers = yaml.safe_load(PROVIDERS.read_text())
    (provider,) = providers["providers"]
    assert providers["apiVersion"] == 1 and provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"  # where compose mounts dashboards/


def test_the_dashboard_uses_the_provisioned_datasource_everywhere() -> None:
    board, uid = dashboard(), provisioned_uid()
    assert board["uid"] == "attnserve"
    all_panels = list(panels(board))
    ids = [panel["id"] for panel in all_panels]
    assert len(ids) == len(set(ids))
    for panel in all_panels:
        assert 0 <= panel["gridPos"]["x"] and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid and target["expr"].strip()
    for variable in board["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid
    assert "${DS_" not in DASHBOARD.read_text(), "no import-time datasource inputs"


def test_the_dashboard_has_the_wanted_panels() -> None:
    exprs = " ".join(target["expr"] for panel in panels(dashboard()) for target in panel.get("targets", []))
    for wanted in (
        "attnserve_requests_total",
        "attnserve_request_seconds_bucket",
        "attnserve_stage_seconds_bucket",
        "attnserve_queued_seconds_bucket",
        'code!~"OK|200"',
        'code=~"RESOURCE_EXHAUSTED|429"',
        "attnserve_in_flight_requests",
        "attnserve_triton_ready",
        "attnserve_models_ready",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        # admission and the gateway process: why calls are refused, the limit, memory, GC pauses
        "sum by (reason) (rate(attnserve_rejected_total",
        "attnserve_concurrency_limit",
        "attnserve_memory_reserved_bytes",
        "sum by (le, generation) (rate(attnserve_gc_pause_seconds_bucket",
        "attnserve_model_loads_total",
        "attnserve_triton_restarts_total",
    ):
        assert wanted in exprs
    for quantile in ("0.5", "0.95", "0.99"):
        assert (
            f"histogram_quantile({quantile}, sum by (le, transport) (rate(attnserve_request_seconds_bucket"
            in exprs
        )


# --- against the real processes ------------------------------------------------------------


def scrape(url: str) -> tuple[dict[str, str], set[str]]:
    """`# TYPE` families and sample names of a Prometheus text page."""
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    types: dict[str, str] = {}
    samples: set[str] = set()
    for line in response.text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
        elif line and not line.startswith("#"):
            match = re.match(r"[a-zA-Z_:][\w:]*", line)
            assert match, line
            samples.add(match[0])
    return types, samples


def exported(name: str, types: dict[str, str], samples: set[str]) -> bool:
    if name in samples:
        return True
    for suffix in ("_bucket", "_sum", "_count"):  # a histogram family without series yet
        if name.endswith(suffix) and types.get(name.removesuffix(suffix)) == "histogram":
            return True
    # a counter without series yet: `# TYPE name counter` or `# TYPE name_total counter`
    return name.endswith("_total") and "counter" in (types.get(name), types.get(name.removesuffix("_total")))


def used_metric_names() -> dict[str, set[str]]:
    """Where each metric name is used: the dashboard's panels and variables, the alerts and the
    Prometheus Adapter rule."""
    used: dict[str, set[str]] = {}
    board = dashboard()
    for panel in panels(board):
        for target in panel.get("targets", []):
            for name in metric_names(target["expr"]):
                used.setdefault(name, set()).add(f"panel {panel['title']!r}")
    for variable in board["templating"]["list"]:
        match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["definition"])
        assert match, variable["definition"]
        used.setdefault(match[1], set()).add(f"variable {variable['name']}")
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            for name in metric_names(rule["expr"]) - SYNTHETIC:
                used.setdefault(name, set()).add(f"alert {rule['alert']}")
    for name in metric_names(adapter_query()):
        used.setdefault(name, set()).add("prometheus-adapter rule")
    return used


@pytest.mark.triton
def test_every_metric_the_monitoring_uses_is_exported_by_the_real_processes(gateway: GatewayThread) -> None:
    image = SAMPLE.read_bytes()
    with Client(gateway.address) as grpc_client, HttpClient(gateway.http_url) as http_client:
        grpc_client.predict(image)  # so that the counters and histograms have series
        http_client.predict(image)
    triton_port = gateway.settings.triton.metrics_port
    gateway_types, gateway_samples = scrape(
        f"http://127.0.0.1:{gateway.settings.gateway.metrics_port}/metrics"
    )
    triton_types, triton_samples = scrape(f"http://127.0.0.1:{triton_port}/metrics")
    types, samples = {**gateway_types, **triton_types}, gateway_samples | triton_samples
    used = used_metric_names()
    missing = {name: sorted(where) for name, where in used.items() if not exported(name, types, samples)}
    assert not missing, f"not exported by Triton or the gateway: {missing}"
    # Every histogram/counter the dashboard reads has live series now, not only a TYPE line.
    # (attnserve's gRPC client states its timeout, so the wait before take-up is observed too)
    assert {
        "attnserve_request_seconds_bucket",
        "attnserve_stage_seconds_bucket",
        "attnserve_queued_seconds_bucket",
    } <= samples
    assert {
        "attnserve_requests_total",
        "nv_inference_queue_duration_us",
        "nv_inference_request_success",
    } <= samples
    # Both scrapes are used, and the HTTP front's /metrics serves the same gateway families.
    assert any(n.startswith("nv_") for n in used) and any(n.startswith("attnserve_") for n in used)
    http_types, _ = scrape(gateway.http_url + "/metrics")
    assert {n for n in http_types if n.startswith("attnserve_")} == {
        n for n in gateway_types if n.startswith("attnserve_")
    }
