"""Overload benchmark: text searches offered at twice the measured capacity, then a memory soak.

A local cluster (2 shards, 1 replica, default bundle) holds a small ingested gallery. Capacity is the
best sustained rate of successful text->image searches over a few closed-loop client concurrencies.
An open loop then offers searches at a fixed arrival rate of twice that capacity, each with a deadline,
whether or not earlier ones have answered (grpc futures), and records what was admitted, what was shed
with RESOURCE_EXHAUSTED and how fast, and any other error. Last, a soak at the same rate samples the
resident memory (VmRSS) of every cluster process every 5 s; growth is measured from the end of a
warm-up to the end. The client runs on the same machine as the cluster, so it competes for the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import json
import os
import platform
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossmodal.client import Client, Item  # noqa: E402
from crossmodal.cluster import DEFAULT_BUNDLE, ClusterSpec, LocalCluster  # noqa: E402
from crossmodal.scenes import Split, gallery_items, render_scene  # noqa: E402
from crossmodal.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2  # noqa: E402
from services.gateway.config import GatewayConfig  # noqa: E402
from tests.support import metrics_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHED_PREFIX = "gateway at capacity"


@dataclasses.dataclass
class Outcome:
    """One search: when it was sent, how long it took, its status code and whether the gateway shed it."""

    sent: float
    seconds: float
    code: str
    shed: bool = False
    details: str = ""


def percentile(samples: list[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of samples in milliseconds; None when there are none."""
    if not samples:
        return None
    ordered = sorted(samples)
    return 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def loadavg() -> float:
    """The 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def rss_kb(pid: int) -> int | None:
    """VmRSS of a process in kB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(port: int, name: str) -> dict[str, float]:
    """Samples of one metric family from a /metrics endpoint, by their label string."""
    text = metrics_text(port)
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$")
    return {m.group(1) or "": float(m.group(2)) for m in map(pattern.match, text.splitlines()) if m}


class Searcher:
    """Text->image searches on one channel to the gateway, cycling through a list of queries."""

    def __init__(self, address: str, queries: list[str], deadline: float) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = gateway_pb2_grpc.GatewayServiceStub(self.channel)
        self.requests = [gateway_pb2.SearchRequest(text=q, k=10, target=types_pb2.MODALITY_IMAGE) for q in queries]
        self.deadline = deadline
        self._next = 0
        self._lock = threading.Lock()

    def request(self) -> gateway_pb2.SearchRequest:
        """The next query."""
        with self._lock:
            self._next += 1
            return self.requests[self._next % len(self.requests)]

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()


def classify(error: grpc.RpcError | None) -> tuple[str, bool, str]:
    """(status code name, shed by the gateway's admission control, details)."""
    if error is None:
        return "OK", False, ""
    code = error.code()
    details = error.details() or ""
    return code.name, code == grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith(SHED_PREFIX), details


def closed_loop(searcher: Searcher, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` threads each searching back to back for `seconds`; rate and latency of the successful ones."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker() -> None:
        mine = []
        while time.perf_counter() < stop:
            started = time.perf_counter()
            error = None
            try:
                searcher.stub.Search(searcher.request(), timeout=searcher.deadline)
            except grpc.RpcError as exc:
                error = exc
            code, shed, details = classify(error)
            mine.append(Outcome(started, time.perf_counter() - started, code, shed, details))
        with lock:
            outcomes.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ok = [o.seconds for o in outcomes if o.code == "OK"]
    return {
        "clients": clients,
        "qps": len(ok) / wall,
        "p50_ms": percentile(ok, 0.5),
        "p99_ms": percentile(ok, 0.99),
        "not_ok": len(outcomes) - len(ok),
    }


def open_loop(
    searcher: Searcher, rate: float, seconds: float, on_tick: Any = None, lags: list[float] | None = None
) -> list[Outcome]:
    """Send searches at a fixed arrival rate for `seconds`, never waiting for answers; every outcome.

    `lags` receives how late each send was against its schedule: the client's own scheduling delay,
    a floor under every latency it measures on a shared machine.
    """
    outcomes: list[Outcome] = []
    pending: set[Any] = set()
    lock = threading.Lock()
    done = threading.Condition(lock)

    def finished(future: Any, sent: float) -> None:
        elapsed = time.perf_counter() - sent
        error = future.exception()
        code, shed, details = classify(error)
        with lock:
            outcomes.append(Outcome(sent, elapsed, code, shed, details))
            pending.discard(future)
            done.notify_all()

    started = time.perf_counter()
    total = int(rate * seconds)
    for n in range(total):
        due = started + n / rate
        # Arrivals are scheduled from the start, so a late sender catches up instead of lowering the rate.
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        if on_tick is not None:
            on_tick()
        sent = time.perf_counter()
        if lags is not None:
            lags.append(sent - due)
        future = searcher.stub.Search.future(searcher.request(), timeout=searcher.deadline)
        with lock:
            pending.add(future)
        future.add_done_callback(lambda f, s=sent: finished(f, s))
    with lock:
        # Every call has a deadline, so this wait ends; the bound only guards against a lost callback.
        done.wait_for(lambda: not pending, timeout=searcher.deadline + 30)
    return list(outcomes)


class HealthProbe(threading.Thread):
    """Times a gateway health check every 100 ms: the floor for how fast the gateway can answer anything."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.latencies: list[float] = []
        self.failures = 0
        self.halt = threading.Event()

    def run(self) -> None:
        """Probe until halted."""
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while not self.halt.wait(0.1):
                started = time.perf_counter()
                try:
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
                    self.latencies.append(time.perf_counter() - started)
                except grpc.RpcError:
                    self.failures += 1

    def stop(self) -> dict[str, Any]:
        """Stop probing; p50/p99 of the health checks."""
        self.halt.set()
        self.join()
        return {
            "health_check_p50_ms": percentile(self.latencies, 0.5),
            "health_check_p99_ms": percentile(self.latencies, 0.99),
            "health_check_failures": self.failures,
        }


def summarise(outcomes: list[Outcome], seconds: float) -> dict[str, Any]:
    """Rates, shares and latencies of an open-loop run."""
    admitted = [o for o in outcomes if o.code == "OK"]
    shed = [o for o in outcomes if o.shed]
    others: dict[str, int] = {}
    examples: dict[str, str] = {}
    for o in outcomes:
        if o.code != "OK" and not o.shed:
            others[o.code] = others.get(o.code, 0) + 1
            examples.setdefault(o.code, o.details[:300])
    ok_s = [o.seconds for o in admitted]
    shed_s = [o.seconds for o in shed]
    return {
        "seconds": seconds,
        "requests": len(outcomes),
        "offered_qps": len(outcomes) / seconds,
        "admitted_qps": len(admitted) / seconds,
        "rejected_qps": len(shed) / seconds,
        "rejected_share": len(shed) / len(outcomes) if outcomes else 0.0,
        "rejection_p50_ms": percentile(shed_s, 0.5),
        "rejection_p99_ms": percentile(shed_s, 0.99),
        "rejection_max_ms": percentile(shed_s, 1.0),
        "admitted_p50_ms": percentile(ok_s, 0.5),
        "admitted_p99_ms": percentile(ok_s, 0.99),
        "admitted_max_ms": percentile(ok_s, 1.0),
        "errors": others,
        "error_examples": examples,
    }


def ingest_gallery(address: str, n: int) -> int:
    """Ingest n rendered scenes and their captions; the number of items stored."""
    items = []
    for scene in gallery_items(n, seed=21, split=Split.VAL):
        buffer = io.BytesIO()
        render_scene(scene.spec, 96).save(buffer, "PNG")
        items.append(Item(scene.id, image=buffer.getvalue()))
        items.append(Item(scene.id + "#caption", text=scene.caption))
    with Client(address) as client:
        acks = list(client.ingest(items))
    failed = [a for a in acks if not a.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} items not ingested, e.g. {failed[:3]}")
    return len(acks)


def main() -> int:
    """Run the benchmark and write bench/results/<out>.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter phases and a 30 s soak")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--gallery", type=int, default=100, help="scenes ingested (each an image and a caption)")
    parser.add_argument("--levels", default="2,4,8,16,32", help="closed-loop client concurrencies for capacity")
    parser.add_argument("--level-seconds", type=float, default=10.0)
    parser.add_argument("--overload-seconds", type=float, default=30.0)
    parser.add_argument("--soak-seconds", type=float, default=180.0)
    parser.add_argument("--warmup-seconds", type=float, default=30.0, help="soak time before the RSS baseline")
    parser.add_argument("--factor", type=float, default=2.0, help="offered load as a multiple of capacity")
    parser.add_argument("--deadline", type=float, default=2.0, help="deadline of every search, in seconds")
    parser.add_argument(
        "--max-in-flight-searches",
        type=int,
        default=None,
        help="CROSSMODAL_GATEWAY_MAX_IN_FLIGHT_SEARCHES for the gateway (default: the gateway's default; 0: off)",
    )
    parser.add_argument("--out", default="overload", help="name of the result files")
    args = parser.parse_args()
    if args.quick:
        args.level_seconds, args.overload_seconds, args.soak_seconds, args.warmup_seconds = 4.0, 10.0, 30.0, 10.0
    limit = args.max_in_flight_searches
    if limit is None:
        limit = next(f.default for f in dataclasses.fields(GatewayConfig) if f.name == "max_in_flight_searches")
    # More closed-loop clients than the gateway admits only measures how fast rejections come back.
    levels = [n for n in (int(x) for x in args.levels.split(",")) if not limit or n <= limit] or [limit]
    out: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": platform.node(),
        "cpu": cpu_name(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "quick": args.quick,
        "bundle": args.bundle.name,
        "max_in_flight_searches": limit,
        "deadline_s": args.deadline,
        "loadavg_start": loadavg(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        spec = ClusterSpec.on_free_ports(
            Path(tmp) / "c",
            shards=2,
            replicas=1,
            bundle=args.bundle,
            gateway_env={"CROSSMODAL_GATEWAY_MAX_IN_FLIGHT_SEARCHES": str(limit)},
        )
        with LocalCluster(spec, say=print) as cluster:
            out["items"] = ingest_gallery(cluster.address, args.gallery)
            queries = [s.caption for s in gallery_items(200, seed=99, split=Split.VAL)]
            searcher = Searcher(cluster.address, queries, args.deadline)
            try:
                for _ in range(20):  # warm up the channels and the encoder's first batches
                    searcher.stub.Search(searcher.request(), timeout=30)
                rows = []
                for clients in levels:
                    row = closed_loop(searcher, clients, args.level_seconds)
                    rows.append(row)
                    print(f"closed loop: {row}", flush=True)
                out["capacity_levels"] = rows
                capacity = max(r["qps"] for r in rows)
                out["capacity_qps"] = capacity
                rate = args.factor * capacity
                print(f"capacity {capacity:.1f} searches/s; offering {rate:.1f}/s for {args.overload_seconds:.0f}s")

                gateway = cluster.gateway
                assert gateway is not None and gateway.proc is not None
                procs = {p.name: p.proc.pid for p in cluster.processes if p.proc is not None}
                shed_before = sum(scrape(gateway.metrics_port, "crossmodal_gateway_shed_requests_total").values())
                cpu_before = {name: cpu_seconds(pid) for name, pid in procs.items()} | {"client": _own_cpu()}
                wall_before = time.perf_counter()
                probe = HealthProbe(cluster.address)
                probe.start()
                lags: list[float] = []
                overload = summarise(open_loop(searcher, rate, args.overload_seconds, lags=lags), args.overload_seconds)
                overload.update(probe.stop())
                overload.update(sender_lag_p50_ms=percentile(lags, 0.5), sender_lag_p99_ms=percentile(lags, 0.99))
                wall = time.perf_counter() - wall_before
                cpu_after = {name: cpu_seconds(pid) for name, pid in procs.items()} | {"client": _own_cpu()}
                shed_after = sum(scrape(gateway.metrics_port, "crossmodal_gateway_shed_requests_total").values())
                # Share of one core each process used during the overload phase: who the CPU went to.
                overload["cpu_pct_of_one_core"] = {
                    name: 100 * (cpu_after[name] - cpu_before[name]) / wall for name in cpu_before
                }
                overload["gateway_shed_counter_delta"] = shed_after - shed_before
                overload["loadavg"] = loadavg()
                out["overload"] = overload
                print(f"overload: {overload}", flush=True)

                samples: list[dict[str, Any]] = []
                soak_started = time.perf_counter()
                next_sample = [soak_started]

                def sample() -> None:
                    # Called by the sender before each arrival: sampling on its thread keeps the schedule exact.
                    now = time.perf_counter()
                    if now >= next_sample[0]:
                        next_sample[0] += 5.0
                        samples.append(
                            {
                                "t": round(now - soak_started, 1),
                                "loadavg": loadavg(),
                                "rss_kb": {name: rss_kb(pid) for name, pid in procs.items()},
                            }
                        )

                print(f"soak: {rate:.1f} searches/s for {args.soak_seconds:.0f}s", flush=True)
                probe = HealthProbe(cluster.address)
                probe.start()
                lags = []
                soak = summarise(open_loop(searcher, rate, args.soak_seconds, sample, lags), args.soak_seconds)
                soak.update(probe.stop())
                soak.update(sender_lag_p50_ms=percentile(lags, 0.5), sender_lag_p99_ms=percentile(lags, 0.99))
                samples.append(
                    {
                        "t": round(time.perf_counter() - soak_started, 1),
                        "loadavg": loadavg(),
                        "rss_kb": {name: rss_kb(pid) for name, pid in procs.items()},
                    }
                )
            finally:
                searcher.close()
    base = next(s for s in samples if s["t"] >= args.warmup_seconds)
    last = samples[-1]
    rss = {}
    for name in procs:
        start, end = base["rss_kb"][name], last["rss_kb"][name]
        peak = max((s["rss_kb"][name] or 0) for s in samples if s["t"] >= base["t"])
        rss[name] = {
            "start_kb": start,
            "end_kb": end,
            "max_kb": peak,
            "growth_pct": None if not start or end is None else 100.0 * (end - start) / start,
        }
    soak["rss"] = rss
    soak["rss_baseline_t"] = base["t"]
    soak["loadavg_mean"] = sum(s["loadavg"] for s in samples) / len(samples)
    soak["loadavg_max"] = max(s["loadavg"] for s in samples)
    soak["samples"] = samples
    out["soak"] = soak
    growths = [r["growth_pct"] for r in rss.values() if r["growth_pct"] is not None]
    # The flat view the README's Reliability table is generated from.
    out.update(
        {
            "offered_qps": overload["offered_qps"],
            "admitted_qps": overload["admitted_qps"],
            "rejected_share": overload["rejected_share"],
            "rejection_p50_ms": overload["rejection_p50_ms"],
            "rejection_p99_ms": overload["rejection_p99_ms"],
            "admitted_p50_ms": overload["admitted_p50_ms"],
            "admitted_p99_ms": overload["admitted_p99_ms"],
            "admitted_max_ms": overload["admitted_max_ms"],
            "errors": {
                k: overload["errors"].get(k, 0) + soak["errors"].get(k, 0)
                for k in {*overload["errors"], *soak["errors"]}
            },
            "soak_seconds": args.soak_seconds,
            "rss_max_growth_pct": max(growths) if growths else None,
            "rss_target_met": bool(growths) and max(growths) < 10.0,
            "loadavg_end": loadavg(),
        }
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(out, indent=2))
    md = render(out, args)
    (RESULTS / f"{args.out}.md").write_text(md)
    print(md)
    return 0


def render(out: dict[str, Any], args: argparse.Namespace) -> str:
    """The Markdown report."""
    limit = out["max_in_flight_searches"]
    lines = [
        f"## Overload (text->image search at {args.factor:g}x capacity; "
        f"CROSSMODAL_GATEWAY_MAX_IN_FLIGHT_SEARCHES={limit}{' (off)' if limit == 0 else ''})",
        "",
        f"{out['date']}, {out['cpu']}, {out['cores']} cores, load average {out['loadavg_start']:.2f} at start, "
        f"{out['loadavg_end']:.2f} at end; client and cluster (gateway, 2 encoders, 2 shards) on the same cores; "
        f"{out['items']} items stored; deadline {out['deadline_s']:g} s per search"
        f"{'; --quick' if out['quick'] else ''}.",
        "",
        "| closed loop (capacity) | searches/s | p50 ms | p99 ms | not OK |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['clients']} clients | {r['qps']:.1f} | {_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} | {r['not_ok']} |"
        for r in out["capacity_levels"]
    ]
    lines += [
        "",
        "| open loop | seconds | offered/s | admitted/s | rejected/s | rejected share | rejection p50 / p99 ms | "
        "admitted p50 / p99 / max ms | other errors | health check p50 / p99 ms | sender lag p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for name in ("overload", "soak"):
        r = out[name]
        errors = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())) or "none"
        lines.append(
            f"| {name} | {r['seconds']:.0f} | {r['offered_qps']:.1f} | {r['admitted_qps']:.1f} | "
            f"{r['rejected_qps']:.1f} | {100 * r['rejected_share']:.1f}% | {_fmt(r['rejection_p50_ms'])} / "
            f"{_fmt(r['rejection_p99_ms'])} | {_fmt(r['admitted_p50_ms'])} / {_fmt(r['admitted_p99_ms'])} / "
            f"{_fmt(r['admitted_max_ms'])} | {errors} | {_fmt(r['health_check_p50_ms'])} / "
            f"{_fmt(r['health_check_p99_ms'])} | {_fmt(r['sender_lag_p50_ms'])} / {_fmt(r['sender_lag_p99_ms'])} |"
        )
    soak = out["soak"]
    lines += [
        "",
        "Health check: a gateway health check every 100 ms during the phase (the gateway's floor); sender lag: "
        "how late the client sent each search against its schedule (the machine's scheduling delay).",
        "",
        f"Capacity {out['capacity_qps']:.1f} searches/s. Gateway shed counter moved by "
        f"{out['overload']['gateway_shed_counter_delta']:.0f} during the overload phase. CPU used during it, "
        "in % of one core: "
        + ", ".join(f"{k} {v:.0f}" for k, v in out["overload"]["cpu_pct_of_one_core"].items())
        + f" (load average {out['overload']['loadavg']:.2f}).",
        "",
        f"| soak RSS (baseline at {soak['rss_baseline_t']:.0f} s, end at {soak['samples'][-1]['t']:.0f} s) | "
        "start MB | end MB | max MB | growth |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in soak["rss"].items():
        growth = "n/a" if r["growth_pct"] is None else f"{r['growth_pct']:+.1f}%"
        lines.append(
            f"| {name} | {(r['start_kb'] or 0) / 1024:.1f} | {(r['end_kb'] or 0) / 1024:.1f} | "
            f"{r['max_kb'] / 1024:.1f} | {growth} |"
        )
    verdict = "met" if out["rss_target_met"] else "NOT met"
    lines += [
        "",
        f"RSS target (growth < 10% per process over the soak): **{verdict}** "
        f"(largest {_fmt(out['rss_max_growth_pct'])}%). Soak load average mean {soak['loadavg_mean']:.2f}, "
        f"max {soak['loadavg_max']:.2f}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
