"""The alert rules and the dashboard of the chart, with Debian's real `promtool` and `prometheus`.

`scripts/install_prometheus.sh` installs them (the Makefile's test set-up runs it). Without them these
tests skip, except under CI (CI=true), where a missing Prometheus is a set-up error and fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from tests.deploy.chart import CHART, ci_values, fullname, render, require
from tests.support import ROOT, up_command, wait_for

ALERTS = CHART / "files" / "alerts.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"
ALERT_TESTS = Path(__file__).resolve().parent / "prometheus" / "alerts_test.yaml"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
MISSING = "Prometheus is not installed: run scripts/install_prometheus.sh (Debian package `prometheus`)"

if PROMTOOL is None or PROMETHEUS is None:
    if os.environ.get("CI"):
        pytest.fail(MISSING + " - the CI set-up must install it", pytrace=False)
    pytest.skip(MISSING, allow_module_level=True)
assert PROMTOOL is not None and PROMETHEUS is not None
require("helm_python", "helm-python-sdk, in the `dev` extra, renders the ServiceMonitor")

# Metrics that other exporters provide (kubelet volume statistics, Prometheus' own `up`).
EXTERNAL_METRICS = {"up", "kubelet_volume_stats_available_bytes", "kubelet_volume_stats_capacity_bytes"}
# Alert names per requirement of the issues: shard down, partial answers, error ratio, p99 latency,
# encoder queue saturation, disk nearly full; a replica behind the write log or applying none of it.
REQUIRED_ALERTS = {
    "CrossmodalShardDown",
    "CrossmodalPartialResponses",
    "CrossmodalHighErrorRatio",
    "CrossmodalHighLatencyP99",
    "CrossmodalEncoderQueueSaturated",
    "CrossmodalIndexDiskNearlyFull",
    "CrossmodalReplicaLogLag",
    "CrossmodalReplicaLogStuck",
}


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def _as_plain_promql(expr: str) -> str:
    """Replace Grafana's variables by what they stand for, to check the query with promtool."""
    return expr.replace("$__rate_interval", "5m").replace("$namespace", ".*")


def test_promtool_accepts_the_alert_rules() -> None:
    result = _promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alert_rules())} rules found" in result.stdout


def test_the_alert_rules_cover_the_required_conditions() -> None:
    rules = _alert_rules()
    assert {r["alert"] for r in rules} >= REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_the_alert_rule_unit_tests_pass() -> None:
    tested = yaml.safe_load(ALERT_TESTS.read_text())
    fired = {
        case["alertname"]
        for test in tested["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    # Every required alert is shown to fire on data that should fire it.
    assert fired >= REQUIRED_ALERTS
    result = _promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_broken_expectation_fails_the_unit_tests(tmp_path: Path) -> None:
    """The unit tests do bite: expecting no shard-down alert while a shard is down fails them."""
    tested = yaml.safe_load(ALERT_TESTS.read_text())
    tested["rule_files"] = [str(ALERTS)]
    first = tested["tests"][0]
    for case in first["alert_rule_test"]:
        if case["alertname"] == "CrossmodalShardDown":
            case["exp_alerts"] = []
    broken = tmp_path / "broken_test.yaml"
    broken.write_text(yaml.safe_dump(tested))
    result = _promtool("test", "rules", str(broken))
    assert result.returncode != 0
    assert "CrossmodalShardDown" in result.stdout + result.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    exprs = _dashboard_exprs()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": _as_plain_promql(expr)}
                    for n, (_t, expr) in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_shows_qps_latency_batches_queues_vectors_and_log_lag() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(expr for _t, expr in _dashboard_exprs())
    for metric in (
        "crossmodal_rpc_requests_total",
        "crossmodal_rpc_duration_seconds_bucket",
        "crossmodal_encoder_batch_size_bucket",
        "crossmodal_encoder_queue_depth",
        "crossmodal_index_vectors",
        "crossmodal_index_search_seconds_bucket",
        "crossmodal_index_log_lag_messages",
        "crossmodal_index_log_lag_seconds",
    ):
        assert metric in exprs, metric
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "namespace"}


def _defined_metrics() -> set[str]:
    """Every series name the services export, from their prometheus_client declarations."""
    declared = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"(crossmodal_\w+)\"", re.S)
    names: set[str] = set()
    for path in (ROOT / "services").rglob("*.py"):
        for kind, name in declared.findall(path.read_text()):
            if kind == "Counter":
                names.add(name.removesuffix("_total") + "_total")
            elif kind in ("Histogram", "Summary"):
                names.update({name, f"{name}_bucket", f"{name}_sum", f"{name}_count"})
            else:
                names.add(name)
    return names


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_metric_named_is_exported_by_a_service(source: str) -> None:
    exprs = [r["expr"] for r in _alert_rules()] if source == "alerts" else [e for _t, e in _dashboard_exprs()]
    defined = _defined_metrics() | EXTERNAL_METRICS
    used = {m for expr in exprs for m in re.findall(r"\b((?:crossmodal|kubelet)_[a-z0-9_]+)\b", expr)}
    assert used, source
    assert sorted(used - defined) == []


# --- a real Prometheus scraping a local cluster -----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Prometheus:
    """A Prometheus server on loopback."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path> and return its data (fails on an API error)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/{path}{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; the result vector."""
        return list(self.api("query", query=promql)["result"])


@dataclass
class Cluster:
    """`crossmodal up` and what it started: process name -> ready-file info (port, metrics_port, pid)."""

    proc: subprocess.Popen[bytes]
    log: Path
    processes: dict[str, dict[str, int]]


def _discovered_labels(name: str) -> dict[str, str]:
    """The labels Kubernetes service discovery and the Prometheus Operator give the target of a process.

    Meta labels as the pod would have them, and the `service` (Kubernetes Service name) target label
    that the operator adds; the chart's ServiceMonitor relabelings then turn these into the final ones.
    """
    component = "index" if name.startswith("index-") else name.replace("_", "-")
    labels = {
        "__meta_kubernetes_pod_label_app_kubernetes_io_component": component,
        "pod": name,
        "service": f"{fullname()}-{component}",
    }
    if component == "index":
        shard = name.split("-")[1]
        labels["__meta_kubernetes_pod_label_crossmodal_io_shard"] = shard
        labels["service"] = f"{fullname()}-index-{shard}"
    return labels


def _servicemonitor_relabel_configs() -> list[dict[str, Any]]:
    """The chart's ServiceMonitor relabelings, in Prometheus' configuration syntax."""
    (monitor,) = render(ci_values("monitoring")).of_kind("ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    keys = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    return [{keys.get(k, k): v for k, v in rule.items()} for rule in endpoint["relabelings"]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Iterator[Cluster]:  # noqa: F811
    """`crossmodal up` with 2 shards x 1 replica on free loopback ports."""
    data = tmp_path_factory.mktemp("cluster")
    log = data / "up.log"
    # No restarts: the alert test kills a shard and needs it to stay down.
    command = up_command(data, bundle_dir, shards=2, replicas=1, restart=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    processes: dict[str, dict[str, int]] = {}
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"crossmodal up exited with {proc.returncode}:\n{log.read_text()}")
            return "crossmodal is up" in log.read_text(errors="replace")

        wait_for(up, 240, "crossmodal up to report the cluster up", interval=0.2)
        for ready in sorted((data / "logs").glob("*.ready.json")):
            processes[ready.name.removesuffix(".ready.json")] = json.loads(ready.read_text())
        assert {"gateway", "encoder_text", "encoder_image", "index-0-0", "index-1-0"} <= set(processes)
        yield Cluster(proc, log, processes)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        # Whatever `up` could not stop is still ours: end it by its pid.
        for info in processes.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(info["pid"]), signal.SIGKILL)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, cluster: Cluster) -> Iterator[Prometheus]:
    """Prometheus scraping every process of the cluster each second, with the chart's alert rules."""
    assert PROMETHEUS is not None
    work = tmp_path_factory.mktemp("prometheus")
    static = [
        {"targets": [f"127.0.0.1:{info['metrics_port']}"], "labels": _discovered_labels(name)}
        for name, info in sorted(cluster.processes.items())
    ]
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": "crossmodal", "static_configs": static, "relabel_configs": _servicemonitor_relabel_configs()}
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    check = _promtool("check", "config", str(work / "prometheus.yml"))
    assert check.returncode == 0, check.stdout + check.stderr
    port = _free_port()
    log = work / "prometheus.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(proc, port, log)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        wait_for(ready, 60, "prometheus to be ready", interval=0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def test_prometheus_scrapes_every_process_and_counts_the_calls_made(cluster: Cluster, prometheus: Prometheus) -> None:
    from crossmodal.v1 import gateway_pb2, gateway_pb2_grpc

    def all_up() -> bool:
        targets = prometheus.api("targets")["activeTargets"]
        return len(targets) == len(cluster.processes) and all(t["health"] == "up" for t in targets)

    wait_for(all_up, 60, "every target to be up", interval=0.5)

    gateway = f"127.0.0.1:{cluster.processes['gateway']['port']}"
    with grpc.insecure_channel(gateway) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        for _ in range(3):
            stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=30)
        for text in ("a red circle", "two blue squares"):
            stub.Search(gateway_pb2.SearchRequest(text=text, k=5), timeout=30)

    counted: dict[str, float] = {}

    def calls_counted() -> bool:
        result = prometheus.query(
            'sum by (method) (crossmodal_rpc_requests_total{job="crossmodal", '
            'component="gateway", service="crossmodal.v1.GatewayService", code="OK"})'
        )
        counted.clear()
        counted.update({r["metric"]["method"]: float(r["value"][1]) for r in result})
        return counted == {"GetStats": 3.0, "Search": 2.0}

    wait_for(calls_counted, 60, "Prometheus to see the 3 GetStats and 2 Search calls", interval=0.5)
    assert counted == {"GetStats": 3.0, "Search": 2.0}

    # The searches went through the text encoder and every shard, each seen by its own target
    # (scraped on their own schedule: wait for the scrape after the calls).
    def encoded() -> bool:
        result = prometheus.query('sum(crossmodal_rpc_requests_total{component="encoder-text", method="Encode"})')
        return bool(result) and float(result[0]["value"][1]) >= 2

    wait_for(encoded, 60, "Prometheus to see the text encoder's Encode calls", interval=0.5)
    vectors = prometheus.query('crossmodal_index_vectors{component="index"}')
    # The target label is index_shard, so the shard's own `shard` label survives the scrape unrenamed.
    assert sorted((v["metric"]["index_shard"], v["metric"]["shard"]) for v in vectors) == [("0", "0"), ("1", "1")]
    assert not any("exported_shard" in v["metric"] for v in vectors)
    # Likewise the RPC metrics keep their gRPC `service` label: the operator's one is dropped.
    services = prometheus.query("count by (service, exported_service) (crossmodal_rpc_requests_total)")
    names = {r["metric"].get("service") for r in services}
    assert {"crossmodal.v1.GatewayService", "crossmodal.v1.EncoderService"} <= names
    assert not any("exported_service" in r["metric"] for r in services)


def test_the_alert_rules_load_and_a_dead_shard_raises_shard_down(cluster: Cluster, prometheus: Prometheus) -> None:
    def evaluated() -> bool:
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        return len(rules) == len(_alert_rules()) and all(
            r["health"] == "ok" and r["lastEvaluation"] > "2000" for r in rules
        )

    wait_for(evaluated, 60, "every alert rule to be evaluated without error", interval=0.5)
    assert not [a for a in prometheus.api("alerts")["alerts"] if a["labels"]["alertname"] == "CrossmodalShardDown"]

    os.kill(int(cluster.processes["index-1-0"]["pid"]), signal.SIGKILL)

    def shard_down() -> list[dict[str, Any]]:
        return [a for a in prometheus.api("alerts")["alerts"] if a["labels"]["alertname"] == "CrossmodalShardDown"]

    alerts = wait_for(shard_down, 60, "CrossmodalShardDown for shard 1", interval=0.5)
    # `for: 1m` keeps it pending at first; what matters is which shard it names.
    assert [a["labels"]["index_shard"] for a in alerts] == ["1"]
    assert alerts[0]["state"] in {"pending", "firing"}
