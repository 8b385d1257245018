"""Render the Helm chart with the real Helm engine (helm-python-sdk) and look into the manifests."""

from __future__ import annotations

import copy
import functools
import importlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.support import ROOT

CHART = ROOT / "deploy" / "helm" / "crossmodal"
CI_VALUES = CHART / "ci"
RELEASE = "search"
NAMESPACE = "prod"
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


def require(module: str, why: str) -> Any:
    """Import a test dependency; skip without it, except under CI (CI=true), where it must be there."""
    try:
        return importlib.import_module(module)
    except ImportError:
        message = f"{module} is not installed ({why})"
        if os.environ.get("CI"):
            pytest.fail(message + " - the CI set-up must install it", pytrace=False)
        pytest.skip(message, allow_module_level=True)


@functools.cache
def _chart() -> Any:
    from helm_python import Chart

    return Chart.load(str(CHART))


def ci_values(name: str) -> dict[str, Any]:
    """The values of deploy/helm/crossmodal/ci/<name>-values.yaml."""
    return yaml.safe_load((CI_VALUES / f"{name}-values.yaml").read_text()) or {}


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two value trees (override wins), as `helm -f a -f b` does."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class Rendered:
    """The manifests of one rendering, parsed, plus NOTES.txt."""

    values: dict[str, Any]
    docs: list[dict[str, Any]]
    notes: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """Every manifest of that kind."""
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """The manifest of that kind and name (fails when absent)."""
        matches = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
        return matches[0]

    def workloads(self) -> list[dict[str, Any]]:
        """Deployments and StatefulSets."""
        return [d for d in self.docs if d["kind"] in WORKLOAD_KINDS]

    def pod_templates(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(workload, pod template) pairs."""
        for w in self.workloads():
            yield w, w["spec"]["template"]

    def config(self, component: str) -> dict[str, str]:
        """The CROSSMODAL_* variables of a component's ConfigMap."""
        return dict(self.get("ConfigMap", f"{fullname()}-{component}")["data"])


def fullname() -> str:
    """The resources' name prefix for the test release."""
    return f"{RELEASE}-crossmodal"


def render(values: Mapping[str, Any] | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE) -> Rendered:
    """Render the chart with `values` over its defaults."""
    out = _chart().render(dict(values or {}), name=name, namespace=namespace)
    docs: list[dict[str, Any]] = []
    for template, text in sorted(out.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert "kind" in doc, f"{template} rendered a document without kind"
                docs.append(doc)
    notes = next((t for k, t in out.items() if k.endswith("NOTES.txt")), "")
    return Rendered(dict(values or {}), docs, notes)


def lint(values: Mapping[str, Any] | None = None, *, strict: bool = True) -> dict[str, Any]:
    """`helm lint` of the chart with `values`."""
    from helm_python import lint as helm_lint

    report: dict[str, Any] = helm_lint(str(CHART), dict(values or {}), strict=strict, namespace=NAMESPACE)
    return report


def labels_match(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) selects `labels`."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, vals = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and labels.get(key) in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def all_containers(pod_spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Init containers and containers of a pod spec."""
    return [*(pod_spec.get("initContainers") or []), *pod_spec["containers"]]


# --- NetworkPolicy evaluation ------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """A pod somewhere: its labels and its namespace's labels."""

    labels: Mapping[str, str]
    namespace: str
    namespace_labels: Mapping[str, str]


def _peer_matches(rule_peer: Mapping[str, Any], source: Peer, policy_namespace: str) -> bool:
    if "ipBlock" in rule_peer:
        # The only ipBlock peers we write would admit outside traffic; treat as "anyone" for pods too.
        return True
    ns_sel = rule_peer.get("namespaceSelector")
    pod_sel = rule_peer.get("podSelector")
    if ns_sel is None:
        if source.namespace != policy_namespace:
            return False
    elif not labels_match(ns_sel, source.namespace_labels):
        return False
    return pod_sel is None or labels_match(pod_sel, source.labels)


def ingress_allowed(
    policies: list[dict[str, Any]], source: Peer, dest_labels: Mapping[str, str], dest_namespace: str, port: int
) -> bool:
    """Whether Kubernetes admits a TCP connection from `source` to a pod with `dest_labels` on `port`.

    A pod that no ingress policy selects accepts everything; otherwise some rule of some policy that
    selects it must admit the source and the port.
    """
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace", dest_namespace) == dest_namespace
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and labels_match(p["spec"]["podSelector"], dest_labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(p.get("protocol", "TCP") == "TCP" and int(p["port"]) == port for p in ports):
                continue
            peers = rule.get("from")
            if not peers or any(_peer_matches(peer, source, dest_namespace) for peer in peers):
                return True
    return False
