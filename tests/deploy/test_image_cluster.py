"""The whole cluster run from the service image, each pod as the Helm chart would run it, in Docker.

The chart is rendered (two shards of one replica, the write log on one NATS node, one gateway, one encoder
of each kind) and every pod it asks for runs as a container of the image scripts/image.sh built
(`make image BASE=local`), on a user-defined Docker network whose aliases are the cluster DNS names the
chart's ConfigMaps point at. From each pod template: the command and args, the environment (ConfigMap,
env, the fieldRefs filled in), the security context (its user, a read-only root, every capability
dropped, no privilege escalation), the memory and CPU limits, emptyDirs as tmpfs, each StatefulSet
claim as a named volume, the init containers run to completion first, restart policy Always. The chart's
gRPC probes are asked as the kubelet asks them (the pod's IP, the service name), and Docker runs their
exec form, crossmodal-healthcheck, inside each container as its health check.

The NATS pod runs the same image with Debian's nats-server mounted in: the chart's NATS image comes from
a registry this test does not need. Skipped, with the reason, when no Docker engine answers.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crossmodal.bundle import Manifest
from crossmodal.cli.ingest import wait_searchable
from crossmodal.client import Client, Item
from crossmodal.logserver import nats_server_binary
from crossmodal.scenes import Split, gallery_items, write_gallery
from tests.deploy.chart import CHART, NAMESPACE, Rendered, render
from tests.deploy.conftest import BuiltImage
from tests.support import ROOT, wait_for

pytestmark = pytest.mark.timeout(1500)

# The audio encoder runs when the image's bundle (models/default) has an audio tower, as the chart's users
# are told to set it.
DEFAULT_BUNDLE = ROOT / "models" / "default"
AUDIO = (DEFAULT_BUNDLE / "model.json").is_file() and "audio" in Manifest.load(DEFAULT_BUNDLE).towers
VALUES: dict[str, Any] = {
    "gateway": {"replicas": 1},
    "encoders": {"audio": {"enabled": AUDIO}},
    "index": {"shards": 2, "replicas": 1},
    "log": {"enabled": True, "replicas": 1, "nats": {"replicas": 1}},
}
CLUSTER_DOMAIN = str(yaml.safe_load((CHART / "values.yaml").read_text())["clusterDomain"])
# Every container, network and volume of a run carries OWNER=<pid of the pytest process>: what a run that
# was killed before its clean-up left behind is removed by the next one (only when that process is gone).
OWNER = "io.crossmodal.test.owner"
GALLERY = 12
READY_SECONDS = 300.0


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the docker command; fails the test with its stderr when `check` and it fails."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {shlex.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _quantity(value: str, cpu: bool) -> str:
    """A Kubernetes CPU or memory quantity in docker run's terms (2 -> 2, 500m -> 0.5; 4Gi -> 4g)."""
    if cpu:
        return str(int(value[:-1]) / 1000) if value.endswith("m") else value
    units = {"Ki": "k", "Mi": "m", "Gi": "g"}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", value)
    assert match, f"unsupported memory quantity {value}"
    return match.group(1) + units.get(match.group(2) or "", "b")


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) references in a command, args or env value, from the container's environment."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), text)


@dataclass
class Pod:
    """One pod the chart asks for, run as one container (plus its init containers, run first)."""

    name: str
    spec: dict[str, Any]
    labels: dict[str, str]
    claims: list[str]
    aliases: list[str] = field(default_factory=list)
    container_name: str = ""

    @property
    def main(self) -> dict[str, Any]:
        """The pod's (single) service container."""
        containers = self.spec["containers"]
        assert len(containers) == 1, f"{self.name}: one container per pod expected"
        return dict(containers[0])


def pods_of(rendered: Rendered) -> list[Pod]:
    """Every pod of the rendered workloads, with the DNS names the cluster would give it."""
    services = rendered.of_kind("Service")
    pods = []
    for workload in rendered.workloads():
        spec = workload["spec"]
        template = spec["template"]
        labels = dict(template["metadata"]["labels"])
        claims = [c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])]
        # With an autoscaler the Deployment leaves replicas out: the HPA's minimum, 1 here.
        for ordinal in range(int(spec.get("replicas", 1))):
            pod = Pod(f"{workload['metadata']['name']}-{ordinal}", template["spec"], labels, claims)
            if workload["kind"] == "StatefulSet":
                pod.aliases.append(f"{pod.name}.{spec['serviceName']}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}")
            for service in services:
                selector = service["spec"].get("selector") or {}
                if selector and all(labels.get(k) == v for k, v in selector.items()):
                    pod.aliases.append(f"{service['metadata']['name']}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}")
            pods.append(pod)
    return pods


def environment(rendered: Rendered, pod: Pod, container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom ConfigMaps, then env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(rendered.get("ConfigMap", source["configMapRef"]["name"])["data"])
    fields = {"metadata.name": pod.name, "metadata.namespace": NAMESPACE}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = _expand(str(var["value"]), env)
        else:
            env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


@dataclass
class DockerCluster:
    """The chart's pods as containers of one image on one Docker network; everything named with `prefix`."""

    rendered: Rendered
    image: BuiltImage
    nats_binary: str
    prefix: str = field(default_factory=lambda: f"cmtest-{uuid.uuid4().hex[:8]}")
    pods: list[Pod] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        """The labels of everything this cluster creates: its own, and the owning process's."""
        return [f"--label=io.crossmodal.test={self.prefix}", f"--label={OWNER}={os.getpid()}"]

    @property
    def network(self) -> str:
        """The user-defined network every container joins."""
        return f"{self.prefix}-net"

    def volume(self, claim: str, pod: Pod) -> str:
        """The named volume standing in for the claim `claim` of `pod` (Kubernetes names it claim-pod)."""
        return f"{self.prefix}-{claim}-{pod.name}"

    def _run_args(self, pod: Pod, container: dict[str, Any], name: str) -> list[str]:
        """docker run options and the command line for one container of the chart's pod template."""
        env = environment(self.rendered, pod, container)
        context = {**(pod.spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
        assert context.get("runAsNonRoot") and context["runAsUser"] != 0
        args = [
            f"--name={name}",
            f"--hostname={pod.name}",
            f"--network={self.network}",
            *self.labels,
            f"--user={context['runAsUser']}:{context['runAsGroup']}",
        ]
        if context.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        if context.get("allowPrivilegeEscalation") is False:
            args.append("--security-opt=no-new-privileges")
        for capability in (context.get("capabilities") or {}).get("drop", []):
            args.append(f"--cap-drop={capability}")
        limits = (container.get("resources") or {}).get("limits") or {}
        if "memory" in limits:
            args.append(f"--memory={_quantity(str(limits['memory']), cpu=False)}")
        if "cpu" in limits:
            args.append(f"--cpus={_quantity(str(limits['cpu']), cpu=True)}")
        for key, value in sorted(env.items()):
            args.append(f"--env={key}={value}")
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            path, read_only = mount["mountPath"], mount.get("readOnly", False)
            if mount["name"] in pod.claims:
                args.append(f"--volume={self.volume(mount['name'], pod)}:{path}{':ro' if read_only else ''}")
            elif "emptyDir" in volumes[mount["name"]]:
                size = volumes[mount["name"]]["emptyDir"].get("sizeLimit")
                args.append(f"--tmpfs={path}:rw,mode=1777{',size=' + _quantity(size, cpu=False) if size else ''}")
            else:
                raise AssertionError(f"{pod.name}: volume {volumes[mount['name']]} is not run by this test")
        command = [_expand(c, env) for c in container.get("command", [])]
        command += [_expand(a, env) for a in container.get("args", [])]
        image = self.image.ref
        if container["image"].split("/")[-1].split(":")[0] == "nats":
            # Debian's nats-server in this image, as the chart's command names it (on PATH).
            args.append(f"--volume={self.nats_binary}:/usr/local/bin/nats-server:ro")
        else:
            assert "/crossmodal:" in container["image"] or container["image"].startswith("crossmodal:")
        if command:
            args += [f"--entrypoint={command[0]}", image, *command[1:]]
        else:
            args.append(image)
        return args

    def _health_args(self, container: dict[str, Any]) -> list[str]:
        """Docker's health check: the exec form of the chart's gRPC readiness probe (crossmodal-healthcheck)."""
        probe = container.get("readinessProbe") or {}
        if "grpc" in probe:
            check = [
                "crossmodal-healthcheck",
                f"--port={probe['grpc']['port']}",
                f"--service={probe['grpc'].get('service', '')}",
                f"--timeout={probe.get('timeoutSeconds', 1)}",
            ]
        elif "exec" in probe:
            check = list(probe["exec"]["command"])
        else:
            return []  # HTTP probes (NATS) are asked from outside only, as the kubelet does
        return [
            f"--health-cmd={shlex.join(check)}",
            f"--health-interval={probe.get('periodSeconds', 10)}s",
            f"--health-timeout={probe.get('timeoutSeconds', 1)}s",
            f"--health-retries={probe.get('failureThreshold', 3)}",
        ]

    def start(self) -> None:
        """Create the network and volumes, run every pod's init containers, then start every pod at once."""
        self.pods = pods_of(self.rendered)
        remove_leftovers()
        docker("network", "create", *self.labels, self.network)
        for pod in self.pods:
            for claim in pod.claims:
                docker("volume", "create", *self.labels, self.volume(claim, pod))
            for init in pod.spec.get("initContainers", []):
                name = f"{self.prefix}-{pod.name}-{init['name']}"
                ran = docker("run", "--rm", *self._run_args(pod, init, name), timeout=300, check=False)
                assert ran.returncode == 0, f"init container {init['name']} of {pod.name} failed: {ran.stderr}"
        for pod in self.pods:
            self.run(pod)

    def run(self, pod: Pod) -> None:
        """Start (or start again) the pod's service container, restart policy Always."""
        pod.container_name = f"{self.prefix}-{pod.name}"
        grace = pod.spec.get("terminationGracePeriodSeconds", 30)
        aliases = [f"--network-alias={a}" for a in pod.aliases]
        docker(
            "run",
            "--detach",
            "--restart=always",
            f"--stop-timeout={grace}",
            *aliases,
            *self._health_args(pod.main),
            *self._run_args(pod, pod.main, pod.container_name),
        )

    def pod(self, prefix: str) -> Pod:
        """The pod whose name is the release name, '-', then `prefix`... (e.g. 'index-0')."""
        matches = [p for p in self.pods if p.name.startswith(f"search-crossmodal-{prefix}")]
        assert len(matches) == 1, (prefix, [p.name for p in self.pods])
        return matches[0]

    def state(self, pod: Pod) -> dict[str, Any]:
        """docker inspect of the pod's container."""
        return dict(json.loads(docker("inspect", pod.container_name).stdout)[0])

    def ip(self, pod: Pod) -> str:
        """The pod's IP on the network (it may change when the container restarts)."""
        return str(self.state(pod)["NetworkSettings"]["Networks"][self.network]["IPAddress"])

    def probe(self, pod: Pod, kind: str = "readinessProbe") -> bool:
        """Ask the chart's probe of `kind` the way the kubelet does: from outside, to the pod's IP."""
        probe = pod.main[kind]
        state = self.state(pod)
        if not state["State"]["Running"]:
            return False
        ip = state["NetworkSettings"]["Networks"][self.network]["IPAddress"]
        timeout = float(probe.get("timeoutSeconds", 1))
        try:
            if "grpc" in probe:
                with grpc.insecure_channel(f"{ip}:{probe['grpc']['port']}") as channel:
                    request = health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", ""))
                    reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
            if "httpGet" in probe:
                port = probe["httpGet"]["port"]
                if isinstance(port, str):
                    port = next(p["containerPort"] for p in pod.main["ports"] if p["name"] == port)
                url = f"http://{ip}:{port}{probe['httpGet']['path']}"
                with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 - a pod on the test network
                    return 200 <= int(reply.status) < 400
        except (grpc.RpcError, OSError):
            return False
        raise AssertionError(f"{pod.name}: probe {probe} is not asked by this test")

    def healthy(self, pod: Pod) -> bool:
        """Whether Docker's exec health check (when the pod has one) last passed."""
        health = self.state(pod)["State"].get("Health")
        return health is None or health["Status"] == "healthy"

    def wait_ready(self, pods: list[Pod] | None = None, timeout: float = READY_SECONDS) -> None:
        """Wait until every pod passes its readiness probe and Docker's health check; fail with their logs.

        A container that Docker restarted three more times meanwhile fails it at once (a crash loop).
        """
        waiting = list(pods or self.pods)
        restarts = {p.name: int(self.state(p)["RestartCount"]) for p in waiting}
        deadline = time.monotonic() + timeout
        while waiting:
            waiting = [p for p in waiting if not (self.probe(p) and self.healthy(p))]
            looping = [p for p in waiting if int(self.state(p)["RestartCount"]) >= restarts[p.name] + 3]
            if looping or (waiting and time.monotonic() > deadline):
                stuck = looping or waiting
                logs = "\n".join(f"--- {p.name}:\n{self.logs(p)[-3000:]}" for p in stuck)
                why = "restarting again and again" if looping else f"not ready after {timeout:.0f} s"
                raise AssertionError(f"{why}: {[p.name for p in stuck]}\n{logs}")
            time.sleep(0.5)

    def logs(self, pod: Pod) -> str:
        """The container's output (every run of it)."""
        result = docker("logs", pod.container_name, check=False)
        return result.stdout + result.stderr

    def crash(self, pod: Pod) -> int:
        """SIGKILL the container's process from outside, as an OOM kill or a crash would end it; its restart count."""
        state = self.state(pod)
        pid = int(state["State"]["Pid"])
        try:
            os.kill(pid, signal.SIGKILL)
        except PermissionError:
            # Not root here: a helper container in the host's PID namespace sends the signal.
            docker(
                "run", "--rm", "--pid=host", "--user=0", "--cap-drop=ALL", "--cap-add=KILL", "--network=none",
                "--entrypoint=python", self.image.ref, "-c", f"import os; os.kill({pid}, 9)",
            )  # fmt: skip
        return int(state["RestartCount"])

    def wait_restarted(self, pod: Pod, restarts: int, timeout: float = 120) -> None:
        """Wait until Docker's restart policy has started the container again, and it is ready."""
        wait_for(
            lambda: self.state(pod)["RestartCount"] > restarts and self.state(pod)["State"]["Running"],
            timeout,
            f"docker restarting {pod.name}",
            interval=0.2,
        )
        self.wait_ready([pod])

    def streams(self, pod: Pod) -> dict[str, tuple[str, int]]:
        """The NATS pod's JetStream streams, from its monitoring port: name -> (created, messages)."""
        port = next(p["containerPort"] for p in pod.main["ports"] if p["name"] == "monitor")
        url = f"http://{self.ip(pod)}:{port}/jsz?streams=true"
        with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - a pod on the test network
            report = json.load(reply)
        return {
            s["name"]: (s["created"], int(s["state"]["messages"]))
            for account in report.get("account_details", [])
            for s in account.get("stream_detail", [])
        }

    def client(self) -> Client:
        """An SDK client of the gateway pod, dialled at its IP as a Service would route to it."""
        gateway = self.pod("gateway")
        return Client(f"{self.ip(gateway)}:{gateway.main['ports'][0]['containerPort']}", timeout=30)

    def close(self) -> None:
        """Remove this cluster's containers, network and volumes (only those carrying its label)."""
        label = f"label=io.crossmodal.test={self.prefix}"
        ids = docker("ps", "--all", "--quiet", f"--filter={label}", check=False).stdout.split()
        if ids:
            docker("rm", "--force", "--volumes", *ids, timeout=300, check=False)
        docker("network", "rm", self.network, check=False)
        volumes = docker("volume", "ls", "--quiet", f"--filter={label}", check=False).stdout.split()
        if volumes:
            docker("volume", "rm", *volumes, check=False)


def remove_leftovers() -> None:
    """Remove the containers, networks and volumes of earlier runs whose pytest process no longer exists."""
    for kind, listing, name in (
        ("container", "ps --all", "{{.Names}}"),
        ("network", "network ls", "{{.Name}}"),
        ("volume", "volume ls", "{{.Name}}"),
    ):
        rows = docker(*listing.split(), f"--filter=label={OWNER}", "--format", f'{name} {{{{.Label "{OWNER}"}}}}')
        owned = [row.split() for row in rows.stdout.splitlines() if row.strip()]
        dead = [item for item, pid in owned if not Path(f"/proc/{pid}").exists()]
        if dead:
            remove = ["rm", "--force", "--volumes"] if kind == "container" else [kind, "rm"]
            docker(*remove, *dead, timeout=300, check=False)


def _events(logs: str, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of one event."""
    out = []
    for line in logs.splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            record = json.loads(line)
            if record.get("event") == event:
                out.append(record)
    return out


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    """A small rendered gallery: records with id, path and caption."""
    out = tmp_path_factory.mktemp("image-gallery")
    items = gallery_items(GALLERY, seed=11, split=Split.VAL)
    write_gallery(out, items, size=96)
    return [{"id": i.id, "path": str(out / "images" / f"{i.id}.png"), "caption": i.caption} for i in items]


@pytest.fixture(scope="module")
def cluster(service_image: BuiltImage, gallery: list[dict[str, str]]) -> Iterator[DockerCluster]:
    """The chart's cluster running in Docker from the image, the gallery ingested and applied everywhere."""
    running = DockerCluster(render(VALUES), service_image, nats_server_binary())
    try:
        started = time.monotonic()
        running.start()
        running.wait_ready()
        print(f"\n{len(running.pods)} pods ready {time.monotonic() - started:.0f} s after the first docker run")
        items = []
        for record in gallery:
            items.append(Item.from_image_file(record["id"], record["path"], {"kind": "image"}))
            items.append(Item(record["id"] + "#caption", text=record["caption"], metadata={"kind": "caption"}))
        with running.client() as client:
            acks = list(client.ingest(items))
            assert all(a.ok for a in acks), [a for a in acks if not a.ok][:3]
            assert wait_searchable(client), "the shards did not apply the writes"
        yield running
    finally:
        running.close()


def test_every_pod_runs_as_the_chart_asks(cluster: DockerCluster) -> None:
    names = sorted(p.name.removeprefix("search-crossmodal-") for p in cluster.pods)
    assert names == [
        *(["encoder-audio-0"] if AUDIO else []),
        "encoder-image-0",
        "encoder-text-0",
        "gateway-0",
        "http-0",
        "http-1",
        "index-0-0",
        "index-1-0",
        "log-0",
    ]
    for pod in cluster.pods:
        state = cluster.state(pod)
        host = state["HostConfig"]
        assert state["Config"]["Image"] == cluster.image.ref
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"], pod.name
        assert "no-new-privileges" in host["SecurityOpt"] and host["RestartPolicy"]["Name"] == "always"
        assert state["Config"]["User"] == "10001:10001"
        # The running process itself, not only the configuration: uid and gid 10001, nothing effective.
        status = docker("exec", pod.container_name, "cat", "/proc/1/status").stdout
        assert re.search(r"^Uid:\s+10001\s+10001\s+10001\s+10001$", status, re.M), (pod.name, status)
        assert re.search(r"^Gid:\s+10001\s+10001\s+10001\s+10001$", status, re.M), (pod.name, status)
        assert re.search(r"^CapEff:\s+0+$", status, re.M), (pod.name, status)
        # Nothing written outside the mounts: the root cannot be written, and the container layer is untouched.
        denied = docker("exec", pod.container_name, "touch", "/app/written", check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr, (pod.name, denied.stderr)
        # (The one change allowed: the mount point Docker creates for a bind mount of a file, nats-server.)
        binds = {m["Destination"] for m in state["Mounts"] if m["Type"] == "bind"}
        changed = docker("diff", pod.container_name).stdout.split("\n")
        changed = [c for c in changed if c.strip() and not any(b == c[2:] or b.startswith(c[2:] + "/") for b in binds)]
        assert changed == [], (pod.name, changed)
        # Writable: /tmp (a tmpfs, the chart's emptyDir) and, for the StatefulSets, /data (the claim's volume).
        assert set(host.get("Tmpfs") or {}) == {"/tmp"}, pod.name
        mounts = {m["Destination"]: m["Type"] for m in state["Mounts"]}
        expected = {"/data": "volume"} if pod.claims else {}
        if pod.name.endswith("-log-0"):
            expected["/usr/local/bin/nats-server"] = "bind"
        assert mounts == expected, (pod.name, mounts)


def test_every_probe_of_the_chart_passes_as_the_kubelet_asks_it(cluster: DockerCluster) -> None:
    for pod in cluster.pods:
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert cluster.probe(pod, kind), f"{pod.name}: {kind} {pod.main[kind]}"
        if "grpc" in pod.main["readinessProbe"]:
            assert cluster.healthy(pod), cluster.state(pod)["State"]["Health"]["Log"][-1:]
            grpc_probe = pod.main["readinessProbe"]["grpc"]
            # The exec form the chart uses under TLS, run in the container as the kubelet would run it.
            ok = docker(
                "exec", pod.container_name, "crossmodal-healthcheck",
                f"--port={grpc_probe['port']}", f"--service={grpc_probe['service']}",
            )  # fmt: skip
            assert ok.stdout.strip() == "SERVING"
            wrong = docker(
                "exec", pod.container_name, "crossmodal-healthcheck",
                f"--port={grpc_probe['port']}", "--service=crossmodal.v1.NoSuchService",
            check=False)  # fmt: skip
            assert wrong.returncode == 1 and "NOT_FOUND" in wrong.stderr, wrong.stderr


def test_ingest_and_search_in_every_direction(cluster: DockerCluster, gallery: list[dict[str, str]]) -> None:
    model_id = json.loads((ROOT / "models" / "default" / "model.json").read_text())["model_id"]
    first = gallery[0]
    image = Path(first["path"]).read_bytes()
    with cluster.client() as client:
        stats = client.stats()
        assert stats.model_id == model_id and stats.total_count == 2 * GALLERY
        assert sorted(stats.shards) == [0, 1] and all(r[0].count > 0 and r[0].healthy for r in stats.shards.values())
        cases = {
            "text->image": client.search(first["caption"], k=5, target="image"),
            "image->image": client.search(image=image, k=5, target="image"),
            "text->text": client.search(first["caption"], k=5, target="text"),
            "image->text": client.search(image=image, k=5, target="text"),
        }
    for name, result in cases.items():
        wanted = name.split("->")[1]
        assert len(result.hits) == 5 and {h.modality for h in result.hits} == {wanted}, name
        assert result.partial_shards == [] and result.model_id == model_id, name
    # Identical queries find the stored item first; the cross-modal ones find the scene's pair near the top.
    assert cases["image->image"].hits[0].id == first["id"] and cases["image->image"].hits[0].score > 0.999
    assert cases["text->text"].hits[0].id == first["id"] + "#caption" and cases["text->text"].hits[0].score > 0.999
    assert first["id"] in [h.id for h in cases["text->image"].hits[:3]], cases["text->image"].hits
    assert first["id"] + "#caption" in [h.id for h in cases["image->text"].hits[:3]], cases["image->text"].hits


def test_a_killed_shard_is_restarted_by_docker_with_its_data(
    cluster: DockerCluster, gallery: list[dict[str, str]]
) -> None:
    shard = cluster.pod("index-0")
    with cluster.client() as client:
        count = client.stats().shards[0][0].count
        before = client.search(gallery[1]["caption"], k=8)
    assert count > 0
    opened_before = len(_events(cluster.logs(shard), "shard open"))
    restarts = cluster.crash(shard)
    cluster.wait_restarted(shard, restarts)
    # The restarted process opened its store from the volume with every item: nothing came from elsewhere
    # (the root is read-only and /tmp a fresh tmpfs), and the log had nothing left for it to apply.
    opened = _events(cluster.logs(shard), "shard open")
    assert len(opened) == opened_before + 1 and opened[-1]["items"] == count, opened
    cluster.wait_ready()
    with cluster.client() as client:
        assert client.stats().shards[0][0].count == count
        after = wait_for(
            lambda: (r := client.search(gallery[1]["caption"], k=8)).partial_shards == [] and r,
            30,
            "a complete search through the gateway after the restart",
            interval=0.2,
        )
    assert [(h.id, round(h.score, 5)) for h in after.hits] == [(h.id, round(h.score, 5)) for h in before.hits]


def test_a_killed_log_node_is_restarted_by_docker_with_its_stream(
    cluster: DockerCluster, gallery: list[dict[str, str]]
) -> None:
    nats = cluster.pod("log")
    with cluster.client() as client:
        total = client.stats().total_count
    streams = cluster.streams(nats)
    assert streams and sum(messages for _created, messages in streams.values()) >= total, streams
    restarts = cluster.crash(nats)
    cluster.wait_restarted(nats, restarts)
    # JetStream kept the streams on its volume: the same streams (not created again) with every message.
    assert cluster.streams(nats) == streams
    item = Item("after-log-restart", text=gallery[2]["caption"] + " again", metadata={"kind": "caption"})
    with cluster.client() as client:

        def stored() -> bool:
            (ack,) = list(client.ingest([item]))
            assert ack.ok or ack.retryable, ack
            return ack.ok

        wait_for(stored, 90, "an ingest acknowledged after the log node's restart", interval=0.5)
        assert wait_searchable(client)
        assert client.stats().total_count == total + 1
        hits = client.search(item.text, k=1, target="text").hits
        assert hits[0].id == item.id and hits[0].score > 0.999
    after = cluster.streams(nats)
    assert sum(m for _c, m in after.values()) == sum(m for _c, m in streams.values()) + 1
    cluster.wait_ready()
