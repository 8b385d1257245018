"""The Helm chart, rendered and linted with the real Helm engine for several value sets.

Every value set is checked for: strict lint, the Kubernetes schemas (oldest supported and newest
known version, strict), probes on the containers' gRPC ports, the gateway's shard map against the
StatefulSets' DNS names, resources and security contexts everywhere, selectors against labels, and
the NetworkPolicies against the intended paths (evaluated the way Kubernetes evaluates them). The
write log (a NATS JetStream StatefulSet, or an external NATS) is checked the same way: its URL against
the NATS pods' DNS names, its probes, its policy, and the refusal of replicas without it.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.config import load_config, settings_of
from tests.certs import make_certs
from tests.deploy.chart import (
    CHART,
    NAMESPACE,
    Peer,
    Rendered,
    all_containers,
    ci_values,
    fullname,
    ingress_allowed,
    labels_match,
    lint,
    merge,
    render,
    require,
)

require("helm_python", "helm-python-sdk, in the `dev` extra, renders the chart")
kubernetes_validate = require("kubernetes_validate", "kubernetes-validate, in the `dev` extra")
# kubernetes-validate re-reads its JSON schemas (several MB of definitions) for every manifest; the
# files never change, so read each once.
if not hasattr(kubernetes_validate.utils.schema_contents, "cache_info"):
    kubernetes_validate.utils.schema_contents = functools.cache(kubernetes_validate.utils.schema_contents)

OLDEST_KUBERNETES = "1.27.0"  # Chart.yaml's kubeVersion
NEWEST_KUBERNETES = kubernetes_validate.utils.latest_version()
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
COMPONENTS = ("gateway", "encoder-text", "encoder-image", "encoder-audio", "index")
# The write log's NATS pods: not a crossmodal service (no ConfigMap, no gRPC health).
LOG = "log"
# The HTTP/JSON service: a crossmodal service with HTTP probes and no gRPC port (its tests: test_the_http_*).
HTTP = "http"
GRPC_SERVICES = {
    "gateway": "crossmodal.v1.GatewayService",
    "encoder-text": "crossmodal.v1.EncoderService",
    "encoder-image": "crossmodal.v1.EncoderService",
    "encoder-audio": "crossmodal.v1.EncoderService",
    "index": "crossmodal.v1.IndexService",
}
API_KEYS = ["key-one", "key-two"]


def _config_classes() -> dict[str, type]:
    from services.encoder.config import EncoderServiceConfig
    from services.gateway.config import GatewayConfig
    from services.http.config import HttpConfig
    from services.index.config import IndexConfig

    return {
        "gateway": GatewayConfig,
        "http": HttpConfig,
        "encoder-text": EncoderServiceConfig,
        "encoder-image": EncoderServiceConfig,
        "encoder-audio": EncoderServiceConfig,
        "index": IndexConfig,
    }


@pytest.fixture(scope="module")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throw-away CA with server and client certificates."""
    out = tmp_path_factory.mktemp("certs")
    make_certs(out)
    return out


def _tls_inline(certs: Path) -> dict[str, Any]:
    return {
        "tls": {
            "enabled": True,
            "mutual": True,
            "cert": (certs / "server.pem").read_text(),
            "key": (certs / "server.key").read_text(),
            "ca": (certs / "ca.pem").read_text(),
        },
        "auth": {"apiKeys": API_KEYS},
    }


# The HTTP service behind an Ingress, autoscaled, with a media volume; the gateway closed to all but it.
HTTP_INGRESS: dict[str, Any] = {
    "http": {
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "host": "search.example.com",
            "tls": [{"hosts": ["search.example.com"], "secretName": "search-tls"}],
        },
        "autoscaling": {"enabled": True, "minReplicas": 3},
        "mediaRoots": ["/media/photos"],
        "extraVolumes": [{"name": "photos", "persistentVolumeClaim": {"claimName": "photos", "readOnly": True}}],
        "extraVolumeMounts": [{"name": "photos", "mountPath": "/media/photos", "readOnly": True}],
    },
    "networkPolicy": {"gateway": {"from": [{"podSelector": {"matchLabels": {"role": "grpc-client"}}}]}},
}

NO_AUDIO: dict[str, Any] = {"encoders": {"audio": {"enabled": False}}}
NO_IMAGE: dict[str, Any] = {"encoders": {"image": {"enabled": False}}}

# name -> values; ci/<name>-values.yaml where one exists.
VALUE_SETS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "default": lambda _c: ci_values("default"),
    "shards-4x2": lambda _c: ci_values("shards-4x2"),
    "gpu": lambda _c: ci_values("gpu"),
    "tls": lambda _c: ci_values("tls"),
    "tls-inline": _tls_inline,
    "monitoring": lambda _c: ci_values("monitoring"),
    "model-init": lambda _c: ci_values("model-init"),
    "model-pvc": lambda _c: ci_values("model-pvc"),
    "log-external": lambda _c: ci_values("log-external"),
    "http-ingress": lambda _c: HTTP_INGRESS,
    # A bundle without an audio tower: no audio encoder, and the gateway serves no audio.
    "no-audio": lambda _c: NO_AUDIO,
    # A text and audio bundle (an exported CLAP model): no image encoder.
    "no-image": lambda _c: NO_IMAGE,
}


@pytest.fixture(scope="module")
def value_sets(certs_dir: Path) -> dict[str, dict[str, Any]]:
    """Every value set by name."""
    return {name: make(certs_dir) for name, make in VALUE_SETS.items()}


@pytest.fixture(scope="module")
def rendered(value_sets: dict[str, dict[str, Any]]) -> dict[str, Rendered]:
    """Every value set rendered once."""
    return {name: render(values) for name, values in value_sets.items()}


def _merged_values(values: dict[str, Any]) -> dict[str, Any]:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    return merge(defaults, values)


def _component(pod_template: dict[str, Any]) -> str:
    return str(pod_template["metadata"]["labels"]["app.kubernetes.io/component"])


def _main_container(pod_template: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod_template["spec"]["containers"] if c["name"] == _component(pod_template)]
    return container


def _port(container: dict[str, Any], name: str) -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return int(port)


def test_the_ci_value_files_are_all_exercised() -> None:
    files = {p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml")}
    assert files <= set(VALUE_SETS)


# --- lint and Kubernetes schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_strict_lint_reports_no_warning_or_error(name: str, value_sets: dict[str, dict[str, Any]]) -> None:
    report = lint(value_sets[name], strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["total_charts_linted"] == 1
    assert problems == [] and report["errors"] == []


def test_lint_catches_a_broken_value() -> None:
    report = lint({"index": {"shards": "two"}}, strict=True)
    assert any("shards" in m["error"] for m in report["messages"] if m["severity"] == 3)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_manifest_validates_against_the_kubernetes_schemas(name: str, rendered: dict[str, Rendered]) -> None:
    docs = [d for d in rendered[name].docs if d["kind"] not in CRD_KINDS]
    assert docs
    for version in (OLDEST_KUBERNETES, NEWEST_KUBERNETES):
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(
                    f"{doc['kind']} {doc['metadata']['name']} is invalid for Kubernetes {version}: {exc.message}"
                )


def test_the_schema_validation_rejects_a_wrong_manifest(rendered: dict[str, Rendered]) -> None:
    deployment = json.loads(json.dumps(rendered["default"].of_kind("Deployment")[0]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, NEWEST_KUBERNETES, strict=True)


# --- values and values.schema.json ----------------------------------------------------------------


def _schema() -> dict[str, Any]:
    return dict(json.loads((CHART / "values.schema.json").read_text()))


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _undeclared(schema: dict[str, Any], node: dict[str, Any], value: Any, path: str) -> list[str]:
    node = _resolve(schema, node)
    if not isinstance(value, dict) or "properties" not in node:
        return []
    missing = []
    for key, sub in value.items():
        if key in node["properties"]:
            missing += _undeclared(schema, node["properties"][key], sub, f"{path}.{key}")
        elif not isinstance(node.get("additionalProperties"), dict):
            missing.append(f"{path}.{key}")
    return missing


def test_the_schema_declares_every_value_and_accepts_the_defaults() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = _schema()
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(defaults)
    assert _undeclared(schema, schema, defaults, "") == []


@pytest.mark.parametrize(
    "values, message",
    [
        ({"index": {"shardz": 3}}, "shardz"),
        ({"index": {"replicas": 0}}, "replicas"),
        ({"model": {"source": "s3"}}, "source"),
        ({"encoders": {"text": {"resources": {"limits": None}}}}, "limits"),
        ({"encoders": {"image": {"env": {"OTHER_VAR": "1"}}}}, "OTHER_VAR"),
    ],
)
def test_helm_refuses_values_the_schema_forbids(values: dict[str, Any], message: str) -> None:
    from helm_python import HelmValuesError

    with pytest.raises(HelmValuesError, match=message):
        render(values)


def _spec_for(cls: type, env: str) -> Any:
    for _field, spec in settings_of(cls):
        if spec.env == env:
            return spec
    return None


def test_typed_settings_match_the_services_bounds() -> None:
    """Each typed `settings` value names its variable; the schema's bounds must be the service's."""
    schema = _schema()
    classes = _config_classes()
    where = {
        "gateway": schema["properties"]["gateway"]["properties"]["settings"],
        "encoder-text": _resolve(
            schema, schema["properties"]["encoders"]["properties"]["text"]["properties"]["settings"]
        ),
        "encoder-audio": _resolve(
            schema, schema["properties"]["encoders"]["properties"]["audio"]["properties"]["settings"]
        ),
        "index": schema["properties"]["index"]["properties"]["settings"],
    }
    mismatches = []
    for component, node in where.items():
        for key, prop in node["properties"].items():
            spec = _spec_for(classes[component], prop["description"])
            assert spec is not None, f"{component}.settings.{key}: {prop['description']} is not a setting"
            if spec.choices is not None and tuple(prop.get("enum", ())) != spec.choices:
                mismatches.append(f"{key}: enum {prop.get('enum')} != {spec.choices}")
            low = prop.get("minimum", prop.get("exclusiveMinimum"))
            if spec.min is not None and (low is None or low < spec.min):
                mismatches.append(f"{key}: minimum {low} < {spec.min}")
            if spec.max is not None and prop.get("maximum", float("inf")) > spec.max:
                mismatches.append(f"{key}: maximum {prop.get('maximum')} > {spec.max}")
    assert mismatches == []


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_services_accept_the_rendered_configuration(
    name: str, rendered: dict[str, Rendered], certs_dir: Path, tmp_path: Path
) -> None:
    """Every CROSSMODAL_* variable a pod gets is one its service reads, and loads without error."""
    r = rendered[name]
    classes = _config_classes()
    for workload, template in r.pod_templates():
        component = _component(template)
        if component == LOG:
            continue
        container = _main_container(template)
        env = dict(r.config(component))
        env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
        known = {spec.env for _f, spec in settings_of(classes[component])}
        unknown = sorted(k for k in env if k.startswith("CROSSMODAL_") and k not in known)
        assert unknown == [], f"{workload['metadata']['name']}: {unknown}"
        # Files the pod would mount: point them at real ones so that the checks of the paths pass.
        for key, value in list(env.items()):
            if value.endswith(("/ca.crt", "/tls.crt", "/tls.key")):
                env[key] = str(
                    certs_dir
                    / {"ca.crt": "ca.pem", "tls.crt": "server.pem", "tls.key": "server.key"}[value.rsplit("/", 1)[-1]]
                )
            elif key == "CROSSMODAL_GATEWAY_API_KEYS_FILE":
                keys = tmp_path / "api-keys"
                keys.write_text("\n".join(API_KEYS) + "\n")
                env[key] = str(keys)
            elif key == "CROSSMODAL_HTTP_MEDIA_ROOTS" and value:
                roots = [tmp_path / root.strip("/").replace("/", "_") for root in value.split(",")]
                for root in roots:
                    root.mkdir(exist_ok=True)
                env[key] = ",".join(str(root) for root in roots)
        load_config(classes[component], env)


# --- probes, ports and the shard map ------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_probes_check_the_grpc_health_service_on_the_containers_grpc_port(
    name: str, rendered: dict[str, Rendered]
) -> None:
    tls = rendered[name].values.get("tls", {}).get("enabled", False)
    for _workload, template in rendered[name].pod_templates():
        component = _component(template)
        if component in (LOG, HTTP):
            continue  # HTTP probes: test_the_log_statefulset_* and test_the_http_service_*
        container = _main_container(template)
        grpc_port = _port(container, "grpc")
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container[probe_name]
            if tls:
                # The kubelet's gRPC probe cannot speak TLS: the image's health-check client does.
                command = probe["exec"]["command"]
                assert command[0] == "crossmodal-healthcheck"
                assert f"--port={grpc_port}" in command
                assert f"--service={GRPC_SERVICES[component]}" in command
                assert "--ca=/etc/crossmodal/tls/ca.crt" in command
            else:
                assert probe["grpc"] == {"port": grpc_port, "service": GRPC_SERVICES[component]}
        assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 60


@pytest.mark.parametrize("name", VALUE_SETS)
def test_services_target_named_container_ports(name: str, rendered: dict[str, Rendered]) -> None:
    r = rendered[name]
    for workload, template in r.pod_templates():
        # Exactly one Service per pod: one DNS identity, and one scrape target per pod.
        services = [
            s["metadata"]["name"]
            for s in r.of_kind("Service")
            if labels_match({"matchLabels": s["spec"]["selector"]}, template["metadata"]["labels"])
        ]
        assert len(services) == 1, f"{workload['metadata']['name']} is behind {services}"
    for service in r.of_kind("Service"):
        pods = [
            t
            for _w, t in r.pod_templates()
            if labels_match({"matchLabels": service["spec"]["selector"]}, t["metadata"]["labels"])
        ]
        assert pods, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            for template in pods:
                container = _main_container(template)
                assert port["targetPort"] in {p["name"] for p in container["ports"]}
                if service["spec"].get("clusterIP") == "None":
                    # Headless: clients dial the pods, so the Service port must be the pod's.
                    assert port["port"] == _port(container, port["targetPort"])


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_gateway_shard_map_lists_the_statefulsets_dns_names(name: str, rendered: dict[str, Rendered]) -> None:
    from services.gateway.config import parse_shard_map

    r = rendered[name]
    values = _merged_values(r.values)
    shards, replicas = values["index"]["shards"], values["index"]["replicas"]
    shard_map = parse_shard_map(r.config("gateway")["CROSSMODAL_GATEWAY_SHARDS"])
    statefulsets = sorted(_index_statefulsets(r), key=lambda s: int(s["metadata"]["labels"]["crossmodal.io/shard"]))
    assert len(statefulsets) == len(shard_map) == shards
    expected = []
    for n, sts in enumerate(statefulsets):
        name_ = sts["metadata"]["name"]
        assert name_ == f"{fullname()}-index-{n}"
        assert sts["spec"]["replicas"] == replicas
        service = r.get("Service", sts["spec"]["serviceName"])
        assert service["spec"]["clusterIP"] == "None"
        pod_labels = sts["spec"]["template"]["metadata"]["labels"]
        assert labels_match({"matchLabels": service["spec"]["selector"]}, pod_labels)
        container = _main_container(sts["spec"]["template"])
        assert {"name": "CROSSMODAL_INDEX_SHARDS", "value": str(n)} in container["env"]
        port = _port(container, "grpc")
        expected.append(
            tuple(
                f"{name_}-{i}.{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local:{port}"
                for i in range(sts["spec"]["replicas"])
            )
        )
    assert list(shard_map) == expected
    assert all(len(replica_list) == replicas for replica_list in shard_map)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_gateway_dials_the_encoder_services(name: str, rendered: dict[str, Rendered]) -> None:
    r = rendered[name]
    config = r.config("gateway")
    encoders = [("encoder-text", "CROSSMODAL_GATEWAY_TEXT_ENCODERS")]
    # Without an image encoder its setting is empty, not absent: the gateway's default is a local address.
    if name == "no-image":
        assert config["CROSSMODAL_GATEWAY_IMAGE_ENCODERS"] == ""
    else:
        encoders.append(("encoder-image", "CROSSMODAL_GATEWAY_IMAGE_ENCODERS"))
    # The audio encoder's address only where it runs: without it the gateway refuses audio.
    if name == "no-audio":
        assert "CROSSMODAL_GATEWAY_AUDIO_ENCODERS" not in config
    else:
        encoders.append(("encoder-audio", "CROSSMODAL_GATEWAY_AUDIO_ENCODERS"))
    for component, key in encoders:
        service = r.get("Service", f"{fullname()}-{component}")
        grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
        assert config[key] == f"{fullname()}-{component}.{NAMESPACE}.svc.cluster.local:{grpc_port}"


def _index_statefulsets(r: Rendered) -> list[dict[str, Any]]:
    return [s for s in r.of_kind("StatefulSet") if "crossmodal.io/shard" in s["metadata"]["labels"]]


def test_four_shards_of_two_replicas(rendered: dict[str, Rendered]) -> None:
    r = rendered["shards-4x2"]
    assert len(_index_statefulsets(r)) == 4
    assert sum(s["spec"]["replicas"] for s in _index_statefulsets(r)) == 8
    shard_pdbs = [p for p in r.of_kind("PodDisruptionBudget") if "crossmodal.io/shard" in p["metadata"]["labels"]]
    assert len(shard_pdbs) == 4
    for sts in _index_statefulsets(r):
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
        assert claim["spec"]["storageClassName"] == "fast-ssd"
        assert {"name": "data", "mountPath": "/data"} in _main_container(sts["spec"]["template"])["volumeMounts"]
        assert r.config("index")["CROSSMODAL_INDEX_DATA_DIR"] == "/data"
        # Replicas of one shard spread over nodes: the constraint selects exactly this shard's pods.
        constraints = sts["spec"]["template"]["spec"]["topologySpreadConstraints"]
        by_host = next(c for c in constraints if c["topologyKey"] == "kubernetes.io/hostname")
        assert by_host["whenUnsatisfiable"] == "DoNotSchedule"
        assert by_host["labelSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
        for other in r.of_kind("StatefulSet"):
            if other is not sts:
                assert not labels_match(by_host["labelSelector"], other["spec"]["template"]["metadata"]["labels"])


# --- resources, security, selectors --------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_container_has_resources_and_the_restricted_security_context(
    name: str, rendered: dict[str, Rendered]
) -> None:
    for workload, template in rendered[name].pod_templates():
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for container in all_containers(spec):
            where = f"{workload['metadata']['name']}/{container['name']}"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), where
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert sc.get("privileged", False) is False, where
            # A read-only root needs a writable /tmp.
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], where


@pytest.mark.parametrize("name", VALUE_SETS)
def test_selectors_match_their_own_pods_and_no_other(name: str, rendered: dict[str, Rendered]) -> None:
    r = rendered[name]
    templates = [(w["metadata"]["name"], t["metadata"]["labels"]) for w, t in r.pod_templates()]
    for workload, template in r.pod_templates():
        selector = workload["spec"]["selector"]
        own = workload["metadata"]["name"]
        assert labels_match(selector, template["metadata"]["labels"]), own
        others = [n for n, labels in templates if n != own and labels_match(selector, labels)]
        assert others == [], f"{own}'s selector also selects {others}"
        for constraint in template["spec"].get("topologySpreadConstraints", []):
            assert labels_match(constraint["labelSelector"], template["metadata"]["labels"]), own
    for pdb in r.of_kind("PodDisruptionBudget"):
        selected = [n for n, labels in templates if labels_match(pdb["spec"]["selector"], labels)]
        assert len(selected) == 1, f"PDB {pdb['metadata']['name']} selects {selected}"
    for policy in r.of_kind("NetworkPolicy"):
        assert any(labels_match(policy["spec"]["podSelector"], labels) for _n, labels in templates)
    for hpa in r.of_kind("HorizontalPodAutoscaler"):
        target = r.get(hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"])
        assert "replicas" not in target["spec"], "an autoscaled Deployment must leave replicas to the HPA"
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_encoders_autoscale_on_cpu_and_optionally_on_queue_depth(rendered: dict[str, Rendered]) -> None:
    default = {h["metadata"]["name"]: h for h in rendered["default"].of_kind("HorizontalPodAutoscaler")}
    assert set(default) == {f"{fullname()}-encoder-{tower}" for tower in ("text", "image", "audio")}
    for hpa in default.values():
        assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource"]
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    gpu = rendered["gpu"].get("HorizontalPodAutoscaler", f"{fullname()}-encoder-text")
    pods_metric = next(m for m in gpu["spec"]["metrics"] if m["type"] == "Pods")
    assert pods_metric["pods"]["metric"]["name"] == "crossmodal_encoder_queue_depth"


# --- NetworkPolicies ---------------------------------------------------------------------------------

OUTSIDE = Peer({"app": "web"}, "frontend", {"kubernetes.io/metadata.name": "frontend"})
NEIGHBOUR = Peer({"app": "other"}, NAMESPACE, {"kubernetes.io/metadata.name": NAMESPACE})
PROMETHEUS = Peer({"app.kubernetes.io/name": "prometheus"}, "monitoring", {"kubernetes.io/metadata.name": "monitoring"})
MONITORING_OTHER = Peer({"app": "grafana"}, "monitoring", {"kubernetes.io/metadata.name": "monitoring"})


def _pods(r: Rendered) -> dict[str, tuple[dict[str, str], int, int]]:
    """component -> (pod labels, grpc port, metrics port) for one pod of each crossmodal component."""
    out = {}
    for _w, template in r.pod_templates():
        if _component(template) in (LOG, HTTP):
            continue
        container = _main_container(template)
        out.setdefault(
            _component(template),
            (template["metadata"]["labels"], _port(container, "grpc"), _port(container, "metrics")),
        )
    return out


def _log_ports(r: Rendered) -> dict[str, int]:
    """Port name -> number of the NATS container."""
    (sts,) = [s for s in r.of_kind("StatefulSet") if s["metadata"]["labels"]["app.kubernetes.io/component"] == LOG]
    return {p["name"]: int(p["containerPort"]) for p in _main_container(sts["spec"]["template"])["ports"]}


@pytest.mark.parametrize("name", ["default", "shards-4x2", "tls-inline", "monitoring", "log-external"])
def test_network_policies_allow_exactly_the_intended_paths(name: str, rendered: dict[str, Rendered]) -> None:
    r = rendered[name]
    policies = r.of_kind("NetworkPolicy")
    log_pods = {_component(t): t["metadata"]["labels"] for _w, t in r.pod_templates() if _component(t) == LOG}
    pods = _pods(r)
    assert set(pods) == set(COMPONENTS)
    own = {
        c: Peer(labels, NAMESPACE, {"kubernetes.io/metadata.name": NAMESPACE}) for c, (labels, _g, _m) in pods.items()
    }
    sources = {
        "outside": OUTSIDE,
        "neighbour": NEIGHBOUR,
        "prometheus": PROMETHEUS,
        "monitoring-other": MONITORING_OTHER,
        **own,
    }
    scrapers = {"prometheus"} if name == "monitoring" else {"prometheus", "monitoring-other"}
    for dest, (labels, grpc_port, metrics_port) in pods.items():
        for source_name, source in sources.items():
            grpc_ok = ingress_allowed(policies, source, labels, NAMESPACE, grpc_port)
            metrics_ok = ingress_allowed(policies, source, labels, NAMESPACE, metrics_port)
            other_ok = ingress_allowed(policies, source, labels, NAMESPACE, 22)
            want_grpc = dest == "gateway" or source_name == "gateway"
            assert grpc_ok == want_grpc, f"{source_name} -> {dest}:grpc"
            assert metrics_ok == (source_name in scrapers), f"{source_name} -> {dest}:metrics"
            assert other_ok is False, f"{source_name} -> {dest}:22"
    # The write log's NATS pods (present with log.enabled only): clients are the gateway and the shards,
    # the cluster port is theirs alone, the monitoring port the scrapers'.
    assert bool(log_pods) == (name == "shards-4x2")
    for labels in log_pods.values():
        ports = _log_ports(r)
        log_peer = Peer(labels, NAMESPACE, {"kubernetes.io/metadata.name": NAMESPACE})
        for source_name, source in {**sources, LOG: log_peer}.items():
            allowed = {p: ingress_allowed(policies, source, labels, NAMESPACE, port) for p, port in ports.items()}
            assert allowed == {
                "client": source_name in {"gateway", "index"},
                "cluster": source_name == LOG,
                "monitor": source_name in scrapers,
            }, source_name
            assert not ingress_allowed(policies, source, labels, NAMESPACE, 22), source_name
        # ... and, like anyone, they may call the public gateway but no internal service.
        for dest, (dest_labels, grpc_port, _m) in pods.items():
            assert ingress_allowed(policies, log_peer, dest_labels, NAMESPACE, grpc_port) == (dest == "gateway"), dest


def test_the_gateway_can_be_restricted_to_an_ingress_controller() -> None:
    ingress = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    r = render({"networkPolicy": {"gateway": {"from": [ingress]}}})
    labels, grpc_port, _m = _pods(r)["gateway"]
    controller = Peer({"app": "nginx"}, "ingress-nginx", {"kubernetes.io/metadata.name": "ingress-nginx"})
    policies = r.of_kind("NetworkPolicy")
    assert ingress_allowed(policies, controller, labels, NAMESPACE, grpc_port)
    assert not ingress_allowed(policies, OUTSIDE, labels, NAMESPACE, grpc_port)


def test_network_policies_can_be_turned_off() -> None:
    assert render({"networkPolicy": {"enabled": False}}).of_kind("NetworkPolicy") == []


# --- graceful shutdown and config rollout --------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_termination_grace_period_outlasts_the_prestop_sleep_and_the_drain(
    name: str, rendered: dict[str, Rendered]
) -> None:
    r = rendered[name]
    for _workload, template in r.pod_templates():
        component = _component(template)
        if component == LOG:
            continue  # nats-server has no drain of its own: its grace period is log.nats.terminationGracePeriodSeconds
        container = _main_container(template)
        sleep = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
        assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
        drain = float(r.config(component)["CROSSMODAL_GRACE_SECONDS"])
        assert sleep > 0
        assert template["spec"]["terminationGracePeriodSeconds"] > sleep + drain


def _checksums(r: Rendered) -> dict[str, str]:
    return {w["metadata"]["name"]: t["metadata"]["annotations"]["checksum/config"] for w, t in r.pod_templates()}


def test_pods_roll_when_their_configuration_changes() -> None:
    base = _checksums(render({}))
    everyone = _checksums(render({"config": {"logLevel": "debug"}}))
    assert all(everyone[n] != base[n] for n in base)
    gateway_only = _checksums(render({"gateway": {"settings": {"hedgeDelayMs": 50}}}))
    assert {n for n in base if gateway_only[n] != base[n]} == {f"{fullname()}-gateway"}
    keys = _checksums(render({"auth": {"apiKeys": ["new-key"]}}))
    assert {n for n in base if keys[n] != base[n]} == {f"{fullname()}-gateway"}
    shards = _checksums(render({"index": {"settings": {"expansionSearch": 128}}}))
    assert {n for n in base if shards[n] != base[n]} == {f"{fullname()}-index-0", f"{fullname()}-index-1"}
    assert _checksums(render({})) == base


# --- value sets: GPU, TLS, models, monitoring ----------------------------------------------------------


def test_gpu_encoders_run_the_cuda_image_on_a_gpu(rendered: dict[str, Rendered]) -> None:
    r = rendered["gpu"]
    for workload, template in r.pod_templates():
        component = _component(template)
        container = _main_container(template)
        if component.startswith("encoder-"):
            assert container["image"] == "ghcr.io/crossmodal/crossmodal:0.1.0-cuda"
            assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in template["spec"][
                "tolerations"
            ]
            assert template["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            config = r.config(component)
            assert config["CROSSMODAL_ENCODER_PROVIDERS"] == "cuda,cpu"
            assert config["CROSSMODAL_ENCODER_PRECISION"] == "fp16"
        else:
            assert container["image"] == "ghcr.io/crossmodal/crossmodal:0.1.0", workload["metadata"]["name"]
            assert "nvidia.com/gpu" not in container["resources"]["limits"]
    for component in ("encoder-text", "encoder-image"):
        assert rendered["default"].config(component)["CROSSMODAL_ENCODER_PROVIDERS"] == "cpu"


def test_mutual_tls_settings_and_mounted_material(rendered: dict[str, Rendered], certs_dir: Path) -> None:
    r = rendered["tls-inline"]
    secret = r.get("Secret", f"{fullname()}-tls")
    assert secret["type"] == "kubernetes.io/tls"
    assert base64.b64decode(secret["data"]["ca.crt"]).decode() == (certs_dir / "ca.pem").read_text()
    keys = r.get("Secret", f"{fullname()}-api-keys")
    assert base64.b64decode(keys["data"]["api-keys"]).decode().split() == API_KEYS
    gateway = r.config("gateway")
    assert gateway["CROSSMODAL_CLIENT_TLS_CA_FILE"] == "/etc/crossmodal/tls/ca.crt"
    assert gateway["CROSSMODAL_CLIENT_TLS_CERT_FILE"] == "/etc/crossmodal/tls/tls.crt"
    assert gateway["CROSSMODAL_GATEWAY_API_KEYS_FILE"] == "/etc/crossmodal/auth/api-keys"
    # Clients of the public gateway need no certificate; internal servers require one.
    assert "CROSSMODAL_TLS_CLIENT_CA_FILE" not in gateway
    for component in ("encoder-text", "encoder-image", "index"):
        assert r.config(component)["CROSSMODAL_TLS_CLIENT_CA_FILE"] == "/etc/crossmodal/tls/ca.crt"
    for workload, template in r.pod_templates():
        container = _main_container(template)
        assert {"name": "tls", "mountPath": "/etc/crossmodal/tls", "readOnly": True} in container["volumeMounts"]
        volume = next(v for v in template["spec"]["volumes"] if v["name"] == "tls")
        assert volume["secret"]["secretName"] == f"{fullname()}-tls"
        if _component(template) == HTTP:
            continue  # an HTTP probe; its client TLS settings: test_the_http_service_calls_the_gateway_with_tls
        command = container["readinessProbe"]["exec"]["command"]
        server_name = next(a for a in command if a.startswith("--server-name="))
        if _component(template) == "index":
            sts = workload["metadata"]["name"]
            assert server_name == f"--server-name=${{POD_NAME}}.{sts}.{NAMESPACE}.svc.cluster.local"
        if _component(template) == "gateway":
            assert "--cert=/etc/crossmodal/tls/tls.crt" not in command
        else:
            assert "--cert=/etc/crossmodal/tls/tls.crt" in command
    # With an existing Secret the chart creates none and mounts that one.
    existing = rendered["tls"]
    assert existing.of_kind("Secret") == []
    gateway_pod = existing.get("Deployment", f"{fullname()}-gateway")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in gateway_pod["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "crossmodal-tls"
    assert volumes["api-keys"]["secret"]["secretName"] == "crossmodal-api-keys"
    assert volumes["api-keys"]["secret"]["items"] == [{"key": "keys.txt", "path": "api-keys"}]


def test_tls_without_material_is_refused() -> None:
    from helm_python import HelmRenderError

    with pytest.raises(HelmRenderError, match="tls.existingSecret"):
        render({"tls": {"enabled": True}})


def _encoder_pod(r: Rendered, component: str = "encoder-image") -> dict[str, Any]:
    return dict(r.get("Deployment", f"{fullname()}-{component}")["spec"]["template"]["spec"])


def test_model_bundle_from_the_image_is_verified_before_the_encoder_starts(rendered: dict[str, Rendered]) -> None:
    r = rendered["default"]
    pod = _encoder_pod(r)
    assert [c["name"] for c in pod["initContainers"]] == ["verify-model"]
    assert pod["initContainers"][0]["command"] == [
        "crossmodal-verify-bundle",
        "/app/models/default",
        "--tower",
        "image",
    ]
    assert r.config("encoder-image")["CROSSMODAL_ENCODER_BUNDLE"] == "/app/models/default"
    assert "model" not in {v["name"] for v in pod["volumes"]}
    no_verify = _encoder_pod(render({"model": {"verify": False}}))
    assert "initContainers" not in no_verify


def test_model_bundle_from_a_claim(rendered: dict[str, Rendered]) -> None:
    r = rendered["model-pvc"]
    pod = _encoder_pod(r, "encoder-text")
    volume = next(v for v in pod["volumes"] if v["name"] == "model")
    assert volume["persistentVolumeClaim"] == {"claimName": "crossmodal-models", "readOnly": True}
    assert r.config("encoder-text")["CROSSMODAL_ENCODER_BUNDLE"] == "/models/vit-b-32"
    assert pod["initContainers"][0]["command"] == ["crossmodal-verify-bundle", "/models/vit-b-32", "--tower", "text"]
    for container in all_containers(pod):
        assert {"name": "model", "mountPath": "/models", "readOnly": True} in container["volumeMounts"]


def test_model_bundle_copied_by_an_init_container(rendered: dict[str, Rendered]) -> None:
    r = rendered["model-init"]
    pod = _encoder_pod(r)
    fetch, verify = pod["initContainers"]
    assert (fetch["name"], verify["name"]) == ("fetch-model", "verify-model")
    assert fetch["image"] == "registry.example.com/crossmodal-models/vit-b-32:2026-01"
    assert {"name": "MODEL_DIR", "value": "/models/bundle"} in fetch["env"]
    assert {"name": "model", "mountPath": "/models/bundle", "subPath": "bundle"} in fetch["volumeMounts"]
    assert verify["command"] == ["crossmodal-verify-bundle", "/models/bundle", "--tower", "image"]
    assert r.config("encoder-image")["CROSSMODAL_ENCODER_BUNDLE"] == "/models/bundle"
    volume = next(v for v in pod["volumes"] if v["name"] == "model")
    assert volume["emptyDir"] == {"sizeLimit": "2Gi"}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"model": {"source": "pvc"}}, "model.pvc.claimName"),
        ({"model": {"source": "init"}}, "model.init.image.repository"),
    ],
)
def test_incomplete_model_sources_are_refused(values: dict[str, Any], message: str) -> None:
    from helm_python import HelmRenderError

    with pytest.raises(HelmRenderError, match=re.escape(message)):
        render(values)


def test_monitoring_objects_use_the_plain_files(rendered: dict[str, Rendered]) -> None:
    r = rendered["monitoring"]
    (monitor,) = r.of_kind("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    scraped = [s for s in r.of_kind("Service") if labels_match(monitor["spec"]["selector"], s["metadata"]["labels"])]
    assert {s["metadata"]["name"] for s in scraped} == {s["metadata"]["name"] for s in r.of_kind("Service")}
    assert all("metrics" in {p["name"] for p in s["spec"]["ports"]} for s in scraped)
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    targets = {rl["targetLabel"]: rl["sourceLabels"] for rl in endpoint["relabelings"] if "targetLabel" in rl}
    assert targets["component"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_component"]
    assert targets["index_shard"] == ["__meta_kubernetes_pod_label_crossmodal_io_shard"]
    assert {"action": "labeldrop", "regex": "service"} in endpoint["relabelings"]
    (rule,) = r.of_kind("PrometheusRule")
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    dashboard = r.get("ConfigMap", f"{fullname()}-dashboard")
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["crossmodal.json"]) == json.loads(
        (CHART / "files" / "dashboard.json").read_text()
    )
    assert not {"ServiceMonitor", "PrometheusRule"} & {d["kind"] for d in rendered["default"].docs}


def test_notes_tell_how_to_reach_the_gateway(rendered: dict[str, Rendered]) -> None:
    notes = rendered["default"].notes
    assert f"kubectl -n {NAMESPACE} port-forward svc/{fullname()}-gateway 50051:50051" in notes
    assert "grpcurl -plaintext $GATEWAY list" in notes
    lb = rendered["shards-4x2"].notes
    assert f"get svc {fullname()}-gateway -o jsonpath='{{.status.loadBalancer.ingress[0].ip}}" in lb
    assert "4 shards x 2 replicas" in lb
    tls = rendered["tls-inline"].notes
    assert "-cacert ca.crt" in tls and "authorization: Bearer $API_KEY" in tls
    assert f"*.{fullname()}-index-<n>.{NAMESPACE}.svc.cluster.local" in tls


def test_names_stay_within_kubernetes_limits_for_a_long_release_name() -> None:
    release = "a-very-long-release-name-for-a-search-deployment-xyz"
    r = render({"index": {"shards": 12, "replicas": 3}, "log": {"enabled": True}}, name=release)
    assert len(r.of_kind("StatefulSet")) == 13
    for doc in r.docs:
        assert len(doc["metadata"]["name"]) <= 63
    for sts in r.of_kind("StatefulSet"):
        # Pod names (<sts>-<ordinal>) are host names; the controller-revision-hash label adds 11 characters.
        assert len(sts["metadata"]["name"]) + 11 <= 63


# --- the write log ------------------------------------------------------------------------------------


def _log_statefulset(r: Rendered) -> dict[str, Any]:
    return r.get("StatefulSet", f"{fullname()}-log")


@pytest.mark.parametrize(
    "values",
    [
        {"index": {"replicas": 2}},
        {"index": {"replicas": 3}, "log": {"enabled": False, "url": ""}},
    ],
)
def test_replicas_without_the_write_log_are_refused(values: dict[str, Any]) -> None:
    from helm_python import HelmRenderError

    replicas = values["index"]["replicas"]
    with pytest.raises(HelmRenderError, match=rf"index.replicas is {replicas}: .* Set log.enabled=true .* or log.url"):
        render(values)


def test_one_replica_needs_no_log_and_gets_none(rendered: dict[str, Rendered]) -> None:
    r = rendered["default"]
    assert [d for d in r.docs if d["metadata"]["name"].startswith(f"{fullname()}-log")] == []
    for component in COMPONENTS:
        assert not {k for k in r.config(component) if k.startswith(("CROSSMODAL_LOG_URL", "CROSSMODAL_GATEWAY_LOG_"))}


def test_the_log_statefulset_is_a_routed_jetstream_cluster_the_services_dial(rendered: dict[str, Rendered]) -> None:
    r = rendered["shards-4x2"]
    sts = _log_statefulset(r)
    name = sts["metadata"]["name"]
    service = r.get("Service", sts["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["podManagementPolicy"] == "Parallel"
    ports = _log_ports(r)
    assert ports == {"client": 4222, "cluster": 6222, "monitor": 8222}
    hosts = [f"{name}-{i}.{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local" for i in range(3)]
    container = _main_container(sts["spec"]["template"])
    assert container["image"] == "docker.io/library/nats:2.9-alpine"
    assert container["command"] == ["nats-server"]
    args = container["args"]
    assert {"--jetstream", "--store_dir=/data", "--server_name=$(POD_NAME)", f"--cluster_name={name}"} <= set(args)
    assert "--cluster=nats://0.0.0.0:6222" in args
    assert f"--routes={','.join(f'nats://{h}:6222' for h in hosts)}" in args
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz?js-enabled-only=true", "port": "monitor"}, probe
    # Each node's stable DNS name is in the URL the gateway and the shards dial; the encoders get none.
    url = ",".join(f"nats://{h}:4222" for h in hosts)
    gateway = r.config("gateway")
    assert gateway["CROSSMODAL_LOG_URL"] == url
    assert r.config("index")["CROSSMODAL_LOG_URL"] == url
    assert (
        gateway["CROSSMODAL_GATEWAY_LOG_REPLICAS"],
        gateway["CROSSMODAL_GATEWAY_LOG_PARTITIONS"],
        gateway["CROSSMODAL_GATEWAY_LOG_MAX_BYTES"],
    ) == ("3", "64", "-1")
    for component in ("encoder-text", "encoder-image", "encoder-audio"):
        assert "CROSSMODAL_LOG_URL" not in r.config(component)
    pdb = r.get("PodDisruptionBudget", name)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert labels_match(pdb["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"])
    # Nodes spread over hosts: losing one host must not lose the quorum.
    constraints = sts["spec"]["template"]["spec"]["topologySpreadConstraints"]
    by_host = next(c for c in constraints if c["topologyKey"] == "kubernetes.io/hostname")
    assert by_host["whenUnsatisfiable"] == "DoNotSchedule"
    assert f"write log       NATS JetStream {name} (3 nodes, 3 copies of the stream" in r.notes


def test_an_external_log_is_used_as_given_and_no_nats_is_rendered(rendered: dict[str, Rendered]) -> None:
    r = rendered["log-external"]
    given = ci_values("log-external")["log"]
    assert [d["kind"] for d in r.docs if d["metadata"]["name"] == f"{fullname()}-log"] == []
    assert {_component(t) for _w, t in r.pod_templates()} == {*COMPONENTS, HTTP}
    gateway = r.config("gateway")
    assert gateway["CROSSMODAL_LOG_URL"] == r.config("index")["CROSSMODAL_LOG_URL"] == given["url"]
    assert (
        gateway["CROSSMODAL_GATEWAY_LOG_REPLICAS"],
        gateway["CROSSMODAL_GATEWAY_LOG_PARTITIONS"],
        gateway["CROSSMODAL_GATEWAY_LOG_MAX_BYTES"],
    ) == ("3", "128", "53687091200")
    assert given["url"] in r.notes


def test_a_single_nats_node_runs_without_cluster_routes() -> None:
    r = render({"log": {"enabled": True, "replicas": 1, "nats": {"replicas": 1}}, "index": {"replicas": 2}})
    args = _main_container(_log_statefulset(r)["spec"]["template"])["args"]
    assert "--jetstream" in args and not [a for a in args if a.startswith(("--cluster", "--routes"))]
    assert r.config("gateway")["CROSSMODAL_LOG_URL"] == (
        f"nats://{fullname()}-log-0.{fullname()}-log.{NAMESPACE}.svc.cluster.local:4222"
    )
    assert lint({"log": {"enabled": True, "replicas": 1, "nats": {"replicas": 1}}})["errors"] == []


@pytest.mark.parametrize(
    "values, message",
    [
        ({"log": {"enabled": True, "nats": {"replicas": 1}}}, "log.replicas (3) cannot exceed log.nats.replicas (1)"),
        ({"log": {"enabled": True, "partitions": 4}, "index": {"shards": 8}}, "log.partitions (4) must be at least"),
    ],
)
def test_inconsistent_log_values_are_refused(values: dict[str, Any], message: str) -> None:
    from helm_python import HelmRenderError

    with pytest.raises(HelmRenderError, match=re.escape(message)):
        render(values)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"log": {"partitions": 48}}, "partitions"),
        ({"log": {"replicas": 6}}, "replicas"),
        ({"log": {"url": "http://nats:4222"}}, "url"),
        ({"log": {"nats": {"sizeOfThings": 1}}}, "sizeOfThings"),
    ],
)
def test_the_schema_refuses_wrong_log_values(values: dict[str, Any], message: str) -> None:
    from helm_python import HelmValuesError

    with pytest.raises(HelmValuesError, match=message):
        render(values)


def test_the_log_values_keep_to_the_gateways_bounds() -> None:
    from services.gateway.config import GatewayConfig

    log = _schema()["properties"]["log"]["properties"]
    for key, prop in log.items():
        if not prop.get("description", "").startswith("CROSSMODAL_GATEWAY_LOG_"):
            continue
        spec = _spec_for(GatewayConfig, prop["description"].split()[0])
        assert spec is not None, key
        values = prop.get("enum") or [prop["minimum"], prop.get("maximum", prop["minimum"])]
        assert spec.min is None or min(values) >= spec.min, key
        assert spec.max is None or max(values) <= spec.max, key
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["log"]
    assert (defaults["replicas"], defaults["partitions"], defaults["maxBytes"]) == (3, 64, -1)


# --- the HTTP/JSON service -----------------------------------------------------------------------------


def _http_pod(r: Rendered) -> tuple[dict[str, Any], dict[str, Any]]:
    (deployment,) = [w for w, t in r.pod_templates() if _component(t) == HTTP]
    return deployment, _main_container(deployment["spec"]["template"])


def test_the_http_service_is_its_own_deployment_with_http_probes(rendered: dict[str, Rendered]) -> None:
    """crossmodal-http in a Deployment of its own, HTTP probes (readiness = the gateway is SERVING), a Service
    with the http and metrics ports, a PDB, and the gateway's in-cluster address in its ConfigMap."""
    r = rendered["default"]
    deployment, container = _http_pod(r)
    assert container["command"] == ["crossmodal-http"] and deployment["spec"]["replicas"] == 2
    port = _port(container, "http")
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = r.get("Service", f"{fullname()}-http")
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {"http": "http", "metrics": "metrics"}
    assert port == 8080 and _port(container, "metrics") == 9109
    config = r.config(HTTP)
    assert config["CROSSMODAL_HTTP_GATEWAY"] == f"{fullname()}-gateway.{NAMESPACE}.svc.cluster.local:50051"
    assert config["CROSSMODAL_HTTP_MEDIA_ROOTS"] == ""  # no media unless volumes are given
    assert r.get("PodDisruptionBudget", f"{fullname()}-http")["spec"]["maxUnavailable"] == 1
    assert [h for h in r.of_kind("HorizontalPodAutoscaler") if h["metadata"]["name"].endswith("-http")] == []
    assert r.of_kind("Ingress") == []
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and security["capabilities"] == {"drop": ["ALL"]}


def test_the_http_service_behind_an_ingress_with_media(rendered: dict[str, Rendered]) -> None:
    """The Ingress routes to the http port; autoscaling replaces the replica count; media volumes are mounted
    and named as the roots; the restricted gateway still accepts the HTTP pods."""
    r = rendered["http-ingress"]
    (ingress,) = r.of_kind("Ingress")
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "search.example.com" and ingress["spec"]["ingressClassName"] == "nginx"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{fullname()}-http", "port": {"name": "http"}}
    deployment, container = _http_pod(r)
    assert "replicas" not in deployment["spec"]
    assert r.get("HorizontalPodAutoscaler", f"{fullname()}-http")["spec"]["minReplicas"] == 3
    assert {"name": "photos", "mountPath": "/media/photos", "readOnly": True} in container["volumeMounts"]
    assert r.config(HTTP)["CROSSMODAL_HTTP_MEDIA_ROOTS"] == "/media/photos"
    policies = r.of_kind("NetworkPolicy")
    http_labels = deployment["spec"]["template"]["metadata"]["labels"]
    http_peer = Peer(http_labels, NAMESPACE, {"kubernetes.io/metadata.name": NAMESPACE})
    gateway_labels, grpc_port, _m = _pods(r)["gateway"]
    assert ingress_allowed(policies, http_peer, gateway_labels, NAMESPACE, grpc_port)
    assert not ingress_allowed(policies, OUTSIDE, gateway_labels, NAMESPACE, grpc_port)
    # The HTTP port is open (browsers through the ingress controller); its metrics only to the scrapers.
    assert ingress_allowed(policies, OUTSIDE, http_labels, NAMESPACE, 8080)
    assert not ingress_allowed(policies, OUTSIDE, http_labels, NAMESPACE, 9109)
    assert ingress_allowed(policies, PROMETHEUS, http_labels, NAMESPACE, 9109)
    assert not ingress_allowed(policies, OUTSIDE, http_labels, NAMESPACE, 22)
    for _name, index_labels in ((c, v[0]) for c, v in _pods(r).items() if c != "gateway"):
        assert not ingress_allowed(policies, http_peer, index_labels, NAMESPACE, 50054)


def test_the_http_service_calls_the_gateway_with_tls(rendered: dict[str, Rendered]) -> None:
    """With mutual TLS its channel to the gateway verifies the CA and presents the client certificate."""
    config = rendered["tls-inline"].config(HTTP)
    assert config["CROSSMODAL_CLIENT_TLS_CA_FILE"] == "/etc/crossmodal/tls/ca.crt"
    assert config["CROSSMODAL_CLIENT_TLS_CERT_FILE"] == "/etc/crossmodal/tls/tls.crt"
    assert "CROSSMODAL_TLS_CERT_FILE" not in config  # plain HTTP in the cluster: TLS ends at the Ingress


def test_the_http_service_can_be_turned_off() -> None:
    """http.enabled=false renders nothing of it, and the gateway's policy names no HTTP pods."""
    r = render(
        {
            "http": {"enabled": False, "autoscaling": {"enabled": True}},
            **{"networkPolicy": HTTP_INGRESS["networkPolicy"]},
        }
    )
    assert [d for d in r.docs if d["metadata"]["name"].endswith("-http")] == []
    gateway_policy = r.get("NetworkPolicy", f"{fullname()}-gateway")
    assert "http" not in json.dumps(gateway_policy)


def test_the_http_settings_match_the_services_bounds() -> None:
    """Each http.settings key names its CROSSMODAL_HTTP_* variable, with the service's bounds."""
    from services.http.config import HttpConfig

    schema = _schema()["properties"]["http"]["properties"]["settings"]["properties"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())["http"]["settings"]
    assert set(values) == set(schema)
    for key, prop in schema.items():
        spec = _spec_for(HttpConfig, prop["description"])
        assert spec is not None, key
        assert prop.get("minimum") == spec.min and prop.get("maximum") == spec.max, key


# --- the audio encoder ---------------------------------------------------------------------------------

AUDIO_ENCODER = "encoder-audio"


def test_the_audio_encoder_is_a_deployment_like_the_image_encoder(rendered: dict[str, Rendered]) -> None:
    """Its own Deployment (command, ports, probes, the bundle verified for its tower), a headless Service, an
    HPA, a PDB and a NetworkPolicy that admits the gateway alone; its settings and limits in its ConfigMap."""
    r = rendered["default"]
    name = f"{fullname()}-{AUDIO_ENCODER}"
    template = r.get("Deployment", name)["spec"]["template"]
    container = _main_container(template)
    assert container["command"] == ["crossmodal-encoder-audio"]
    assert (_port(container, "grpc"), _port(container, "metrics")) == (50055, 9104)
    assert container["readinessProbe"]["grpc"] == {"port": 50055, "service": "crossmodal.v1.EncoderService"}
    (verify,) = template["spec"]["initContainers"]
    assert verify["command"] == ["crossmodal-verify-bundle", "/app/models/default", "--tower", "audio"]
    assert r.get("Service", name)["spec"]["clusterIP"] == "None"
    assert r.get("HorizontalPodAutoscaler", name)["spec"]["scaleTargetRef"]["name"] == name
    assert labels_match(r.get("PodDisruptionBudget", name)["spec"]["selector"], template["metadata"]["labels"])
    config = r.config(AUDIO_ENCODER)
    assert config["CROSSMODAL_ENCODER_BUNDLE"] == "/app/models/default"
    assert (config["CROSSMODAL_ENCODER_MAX_AUDIO_SECONDS"], config["CROSSMODAL_ENCODER_MAX_AUDIO_CHANNELS"]) == (
        "600",
        "8",
    )
    # The limit on sound files reaches the gateway too, so that both refuse the same files.
    assert config["CROSSMODAL_MAX_AUDIO_BYTES"] == r.config("gateway")["CROSSMODAL_MAX_AUDIO_BYTES"] == "20971520"
    policies = r.of_kind("NetworkPolicy")
    assert labels_match(r.get("NetworkPolicy", name)["spec"]["podSelector"], template["metadata"]["labels"])
    pods = _pods(r)
    labels = template["metadata"]["labels"]
    for source, (source_labels, _g, _m) in pods.items():
        peer = Peer(source_labels, NAMESPACE, {"kubernetes.io/metadata.name": NAMESPACE})
        assert ingress_allowed(policies, peer, labels, NAMESPACE, 50055) == (source == "gateway"), source
    http_labels = _http_pod(r)[0]["spec"]["template"]["metadata"]["labels"]
    http_peer = Peer(http_labels, NAMESPACE, {"kubernetes.io/metadata.name": NAMESPACE})
    assert not ingress_allowed(policies, http_peer, labels, NAMESPACE, 50055)
    assert ingress_allowed(policies, PROMETHEUS, labels, NAMESPACE, 9104)


def test_the_audio_encoder_can_be_turned_off(rendered: dict[str, Rendered]) -> None:
    """encoders.audio.enabled=false renders nothing of it; only the gateway's configuration changes."""
    r = rendered["no-audio"]
    assert [d for d in r.docs if AUDIO_ENCODER in d["metadata"]["name"]] == []
    assert {_component(t) for _w, t in r.pod_templates()} == {*COMPONENTS, HTTP} - {AUDIO_ENCODER}
    base, off = _checksums(rendered["default"]), _checksums(r)
    assert {n for n in off if off[n] != base[n]} == {f"{fullname()}-gateway"}
    assert "text, image (no audio: encoders.audio.enabled is false)" in r.notes
    assert "text, image and audio" in rendered["default"].notes


def test_the_image_encoder_can_be_turned_off_for_a_text_and_audio_bundle(rendered: dict[str, Rendered]) -> None:
    """encoders.image.enabled=false renders nothing of it; turning off both image and audio is refused."""
    r = rendered["no-image"]
    assert [d for d in r.docs if "encoder-image" in d["metadata"]["name"]] == []
    assert {_component(t) for _w, t in r.pod_templates()} == {*COMPONENTS, HTTP} - {"encoder-image"}
    base, off = _checksums(rendered["default"]), _checksums(r)
    assert {n for n in off if off[n] != base[n]} == {f"{fullname()}-gateway"}
    assert "encoders        text and audio (no images or videos: encoders.image.enabled is false)" in r.notes
    with pytest.raises(Exception, match="encoders.image.enabled and encoders.audio.enabled are both false"):
        render({"encoders": {"image": {"enabled": False}, "audio": {"enabled": False}}})


def test_the_encoder_alert_and_dashboard_cover_the_audio_tower() -> None:
    """The down alert watches the audio encoder's pods; the dashboard shows its decode time by tower."""
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    rules = {rule["alert"]: rule for group in alerts["groups"] for rule in group["rules"]}
    assert AUDIO_ENCODER in rules["CrossmodalServiceDown"]["expr"]
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert any("crossmodal_encoder_preprocess_seconds_bucket" in e and "tower" in e for e in exprs)
