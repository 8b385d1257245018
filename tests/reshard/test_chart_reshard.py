"""The Helm chart grows a cluster: raising index.shards renders the new shards, and a post-upgrade Job reshards."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.chart import fullname, lint, render, require

require("helm_python", "renders the chart with the real Helm engine")

LOG = {"log": {"enabled": True}}


def _job(values: dict[str, Any]) -> dict[str, Any]:
    return render(values).get("Job", f"{fullname()}-reshard")


def _command(job: dict[str, Any]) -> str:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return " ".join(container["args"])


@pytest.mark.parametrize("shards", [2, 4])
def test_the_chart_at_2_and_4_shards_runs_a_reshard_job_for_that_many(shards: int) -> None:
    values = {**LOG, "index": {"shards": shards}}
    rendered = render(values)
    statefulsets = {d["metadata"]["name"] for d in rendered.of_kind("StatefulSet")}
    assert {f"{fullname()}-index-{n}" for n in range(shards)} <= statefulsets
    assert f"{fullname()}-index-{shards}" not in statefulsets
    assert len(rendered.config("gateway")["CROSSMODAL_GATEWAY_SHARDS"].split(";")) == shards
    job = rendered.get("Job", f"{fullname()}-reshard")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-upgrade"
    command = _command(job)
    assert f"crossmodal reshard --shards {shards}" in command
    assert f"--address {fullname()}-gateway.prod.svc.cluster.local:50051" in command
    assert "CROSSMODAL_API_KEY" not in command
    report = lint(values, strict=True)
    assert report["errors"] == [] and not [m for m in report["messages"] if m["severity"] >= 2]


def test_shrinking_first_moves_the_partitions_with_reshard_shards() -> None:
    assert "--shards 2" in _command(_job({**LOG, "index": {"shards": 4}, "reshard": {"shards": 2}}))
    with pytest.raises(Exception, match="reshard.shards \\(8\\) is more than index.shards \\(4\\)"):
        render({**LOG, "index": {"shards": 4}, "reshard": {"shards": 8}})


def test_no_job_without_the_log_or_when_turned_off() -> None:
    assert not render({"index": {"shards": 4}}).of_kind("Job")
    assert not render({**LOG, "reshard": {"enabled": False}}).of_kind("Job")


def test_the_job_authenticates_and_speaks_tls_like_any_client() -> None:
    values = {**LOG, "auth": {"apiKeys": ["k1"]}, "networkPolicy": {"gateway": {"from": [{"podSelector": {}}]}}}
    rendered = render(values)
    job = rendered.get("Job", f"{fullname()}-reshard")
    assert "CROSSMODAL_API_KEY" in _command(job)
    volumes = {v["name"] for v in job["spec"]["template"]["spec"]["volumes"]}
    assert "api-keys" in volumes
    # A restricted gateway still admits the Job's pod.
    policy = rendered.get("NetworkPolicy", f"{fullname()}-gateway")
    peers = policy["spec"]["ingress"][0]["from"]
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    assert any(
        all(job_labels.get(k) == v for k, v in p.get("podSelector", {}).get("matchLabels", {}).items())
        and p.get("podSelector", {}).get("matchLabels")
        for p in peers
    )
