"""After the fuzz: no leak on a repeated pass, every process alive and correct, the known set intact, the totals.

This module runs last (pytest collects the directory in name order) and needs the fuzz modules before it.
"""

from __future__ import annotations

import math
import time
from collections import Counter

import pytest

from crossmodal.v1 import encoder_pb2, gateway_pb2, index_pb2, types_pb2
from tests.fuzz import catalog, harness
from tests.fuzz.conftest import known_state
from tests.fuzz.harness import CASES, MIN_TOTAL_INPUTS, SENT, Env, Resources, replay
from tests.reliability import record

# The repeated pass re-runs every case on this share of its inputs (the same deterministic ones first).
REPEAT_SHARE = 0.15
# Growth allowed over the repeated pass. A leak of even 1 KiB per request would show as several MiB;
# allocator arenas and caches that were already warm move by far less.
MAX_RSS_GROWTH_KIB = 24 * 1024
MAX_THREAD_GROWTH = 4
MAX_FD_GROWTH = 8
FUZZ_MODULES = ("test_encoder_fuzz.py", "test_gateway_fuzz.py", "test_index_fuzz.py")

FIGURES: dict[str, object] = {}


def _mib(kib: int) -> str:
    return f"{kib / 1024:+.1f} MiB"


def _full_run(request: pytest.FixtureRequest) -> bool:
    """Whether this session ran every fuzz test (a subset may not reach the total)."""
    ran = {item.nodeid for item in request.session.items}
    return all(any(nodeid.endswith(name) or f"/{name}::" in nodeid for nodeid in ran) for name in FUZZ_MODULES)


def test_repeated_pass_keeps_resources_bounded(env: Env, resources_before: dict[str, Resources]) -> None:
    """RSS, threads and open fds of every process stay bounded over a second fuzz pass."""
    if not CASES:
        pytest.skip("no fuzz case ran in this session")
    after_first = harness.settle(env)
    started = time.monotonic()
    sent_before = sum(SENT.values())
    for case in list(CASES):
        replay(max(10, int(case.examples * REPEAT_SHARE)), case.strategy, case.body)
    repeated = sum(SENT.values()) - sent_before
    after_second = harness.settle(env)
    lines = []
    for name in env.processes:
        first, second, base = after_first[name], after_second[name], resources_before[name]
        lines.append(
            f"{name}: RSS {base.rss_kib // 1024} -> {first.rss_kib // 1024} -> {second.rss_kib // 1024} MiB, "
            f"threads {base.threads} -> {first.threads} -> {second.threads}, fds {base.fds} -> {first.fds} -> "
            f"{second.fds}"
        )
        assert second.rss_kib - first.rss_kib < MAX_RSS_GROWTH_KIB, lines[-1]
        assert second.threads - first.threads <= MAX_THREAD_GROWTH, lines[-1]
        assert second.fds - first.fds <= MAX_FD_GROWTH, lines[-1]
    print("\n".join(["resources (start -> after pass 1 -> after pass 2):", *lines]))
    FIGURES["repeat"] = (repeated, time.monotonic() - started)
    FIGURES["resources"] = {
        name: (resources_before[name], after_first[name], after_second[name]) for name in env.processes
    }


def test_every_process_alive_and_correct(env: Env, known_before: tuple[list[bytes], list[bytes]]) -> None:
    """After the fuzz every process runs, answers normal requests correctly and kept the known set."""
    for name, proc in env.processes.items():
        assert proc.proc.poll() is None, f"{name} exited with {proc.proc.returncode}:\n{proc.log()[-3000:]}"
    assert known_state(env) == known_before, "the known items changed during the fuzz"

    only_known = types_pb2.Filter(tags_all=["known-set"])
    reply = env.gateway.Search(gateway_pb2.SearchRequest(text="a red circle number 3", k=5, filter=only_known))
    assert reply.results and all(r.id in env.known_ids for r in reply.results), reply
    image = env.gateway.Search(
        gateway_pb2.SearchRequest(
            image=env.images["jpeg-48x40"], k=3, target=types_pb2.MODALITY_IMAGE, filter=only_known
        )
    )
    assert image.results and image.results[0].id == "known-0", image
    like = env.gateway.Search(gateway_pb2.SearchRequest(like_id="known-1", k=3, filter=only_known))
    assert like.results and "known-1" not in {r.id for r in like.results}

    encoded = env.encoder("text").Encode(
        encoder_pb2.EncodeRequest(items=[encoder_pb2.EncodeItem(key="k", text="a red circle")]), timeout=30
    )
    vector = encoded.results[0].vector
    assert encoded.results[0].status.code == 0 and abs(math.sqrt(sum(v * v for v in vector)) - 1) < 1e-3
    pictures = env.encoder("image").Encode(
        encoder_pb2.EncodeRequest(items=[encoder_pb2.EncodeItem(image=env.images["jpeg-97x33"])]), timeout=30
    )
    assert pictures.results[0].status.code == 0 and len(pictures.results[0].vector) == env.dim
    stats = env.index.GetShardStats(index_pb2.GetShardStatsRequest(), timeout=30)
    assert all(s.model_id == env.model_id and s.dim == env.dim for s in stats.shards)
    FIGURES["alive"] = True


def test_inputs_total_and_record(request: pytest.FixtureRequest) -> None:
    """At least MIN_TOTAL_INPUTS generated inputs were sent; the Reliability rows are recorded."""
    total = sum(SENT.values())
    print(f"\nfuzz inputs sent: {total}")
    for label, count in sorted(SENT.items()):
        print(f"  {label:<32} {count:>6}")
    if not _full_run(request):
        pytest.skip(f"a subset of the fuzz tests ran ({total} inputs); the total applies to the full run")
    assert total >= MIN_TOTAL_INPUTS, f"only {total} generated inputs were sent"
    assert FIGURES.get("alive"), "the after-fuzz checks did not pass"
    _record(total)


def _codes(service: str, rpcs: tuple[str, ...]) -> Counter[str]:
    tally: Counter[str] = Counter()
    for (svc, rpc), codes in catalog.SEEN_CALLS.items():
        if svc.startswith(service) and rpc in rpcs:
            tally.update(codes)
    return tally


def _share(tally: Counter[str]) -> str:
    total = sum(tally.values()) or 1
    return ", ".join(f"{name} {_percent(n, total)}" for name, n in tally.most_common())


def _percent(n: int, total: int) -> str:
    share = 100 * n / total
    return "<1%" if 0 < share < 1 else f"{share:.0f}%"


def _record(total: int) -> None:
    resources = FIGURES.get("resources")
    growth = ""
    if isinstance(resources, dict):
        growth = "; repeat pass: " + ", ".join(
            f"{name} RSS {_mib(second.rss_kib - first.rss_kib)}, threads {second.threads - first.threads:+d}, "
            f"fds {second.fds - first.fds:+d}"
            for name, (_, first, second) in resources.items()
        )
    groups = [
        (
            "gateway Search",
            "gateway",
            ("Search",),
            "random/NaN/Inf/subnormal/huge/wrong-dim vectors, odd-unicode and over-long texts, random, truncated "
            "and bomb images, odd like_ids, K 0/2^32-1/negative, unknown targets, filters over every limit, "
            "invalid UTF-8 and random bytes",
        ),
        (
            "gateway Ingest",
            "gateway",
            ("Ingest",),
            "streamed items with odd/empty/over-long/duplicate ids, bad texts and images, metadata and tags of "
            "every size and character, invalid UTF-8 and random bytes",
        ),
        (
            "gateway Delete/Get/GetStats",
            "gateway",
            ("Delete", "Get", "GetStats"),
            "0 to 1,001 ids, empty/over-long/odd/duplicate ids, invalid UTF-8 and random bytes",
        ),
        (
            "encoders Encode/GetModelInfo",
            "encoder",
            ("Encode", "GetModelInfo"),
            "texts and images as above on both towers, PNG/JPEG/GIF/BMP/WebP/TIFF headers announcing up to "
            "2^31 x 2^31 pixels, keys of every size, 0 to 65 items, invalid UTF-8 and random bytes",
        ),
        (
            "index shard RPCs",
            "index",
            ("UpsertVectors", "DeleteVectors", "GetVectors", "SearchShard", "GetShardStats", "CreateSnapshot"),
            "bad vectors, K 0/huge/negative, shard numbers 2, 2^32-1 and negative, unknown modalities, other "
            "model ids, metadata/tags over the limits, duplicate ids in a batch, invalid UTF-8 and random bytes",
        ),
    ]
    for case, service, rpcs, what in groups:
        sent = sum(
            n for label, n in SENT.items() if label.split(".")[0].startswith(service) and label.split(".")[1] in rpcs
        )
        tally = _codes(service, rpcs)
        record(
            "input",
            f"hostile input: {case}",
            f"{sent:,} generated requests or stream messages (both passes): {what}",
            f"every status documented ({_share(tally)}); no UNKNOWN/INTERNAL; no crash",
        )
    repeat = FIGURES.get("repeat")
    repeated = int(repeat[0]) if isinstance(repeat, tuple) else 0
    record(
        "input",
        "hostile input: no crash, no leak, no corruption",
        f"{total - repeated:,} generated inputs over every public and internal RPC, then a repeated pass of "
        f"{repeated:,} ({total:,} in all)",
        "every process alive and answering correctly; known items byte-identical before/after" + growth,
    )
