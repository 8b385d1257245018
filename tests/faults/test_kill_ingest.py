"""kill -9 of a shard, the text encoder or the gateway during streamed ingests, over seeded random rounds.

Each round streams ITEMS new text items through a resumable ingest with a journal file, kills one
process once a random share of the acks arrived, restarts it on its port, checks that every item
acknowledged OK survived, resumes from the journal file (as a restarted client would) and checks that
the resume sent exactly the items not acknowledged OK, and that every item is then stored once with
its metadata, across all rounds so far.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import pytest

from crossmodal.client import Ack, Client, IngestJournal, Item
from crossmodal.cluster import LocalCluster
from tests.faults.helpers import assert_stored_once, fault_spec, ingest_killing, text_items, wait_whole
from tests.reliability import record

SEED = 20261126
ROUNDS = 20
ITEMS = 5000
# Kills per kind over the rounds, in a seeded random order: at least 5 of each.
KILLS = {"shard": 7, "encoder": 7, "gateway": 6}
VICTIMS = {"shard": ("index-0-0", "index-1-0"), "encoder": ("encoder_text",), "gateway": ("gateway",)}


def plan(rng: random.Random) -> list[tuple[str, str, float]]:
    """(kind, process, share of the acks after which it is killed) for every round."""
    kinds = [kind for kind, count in KILLS.items() for _ in range(count)]
    assert len(kinds) == ROUNDS
    rng.shuffle(kinds)
    return [(kind, rng.choice(VICTIMS[kind]), rng.uniform(0.05, 0.90)) for kind in kinds]


# ~1 minute a round at most on 2 shared cores under heavy load; a few seconds on an idle machine.
@pytest.mark.timeout(2400)
@pytest.mark.slow  # 12 min on the shared 2-core machine: run by `make test-all`
def test_acknowledged_items_survive_kill_9_of_any_process(tmp_path: Path, bundle_dir: Path) -> None:
    rng = random.Random(SEED)
    rounds = plan(rng)
    started = time.monotonic()
    kills: Counter[str] = Counter()
    endings: Counter[str] = Counter()
    resent_total = 0
    everything: list[Item] = []
    with LocalCluster(fault_spec(tmp_path / "c", bundle_dir)) as cluster:
        for number, (kind, victim, share) in enumerate(rounds):
            items = text_items(f"r{number:02d}", ITEMS)
            everything.extend(items)
            path = tmp_path / "journals" / f"round-{number:02d}.journal"
            with IngestJournal(path) as journal:
                _, ended = ingest_killing(cluster, items, journal, victim, max(1, int(ITEMS * share)))
                acknowledged = journal.acknowledged
            kills[kind] += 1
            endings[f"{kind}:{ended}"] += 1
            cluster.restart(victim)
            wait_whole(cluster.address)
            with Client(cluster.address) as client:
                # Every item acknowledged OK survived the crash, before any resume.
                assert_stored_once(client, [i for i in items if i.id in acknowledged])
            # A new journal object read from the file stands for a restarted client process.
            with IngestJournal(path) as resumed, Client(cluster.address) as client:
                assert resumed.acknowledged == acknowledged
                acks: list[Ack] = list(client.ingest_resumable(items, resumed))
            resent = [a.id for a in acks]
            assert len(resent) == len(set(resent)), "the resume sent an item twice"
            assert set(resent) == {i.id for i in items} - acknowledged, f"round {number}: resume sent other items"
            assert all(a.ok for a in acks), f"round {number}: {[a for a in acks if not a.ok][:1]}"
            resent_total += len(resent)
            with Client(cluster.address) as client:
                assert_stored_once(client, items)
                assert client.stats().total_count == len(everything)
            print(
                f"round {number:2d}: {kind:<7} {victim:<12} killed after {share:4.0%} of the acks, stream {ended}; "
                f"resent {len(resent):5d}; {time.monotonic() - started:5.0f} s",
                flush=True,
            )
        with Client(cluster.address) as client:
            assert_stored_once(client, everything)
            assert client.stats().total_count == ROUNDS * ITEMS
    elapsed = time.monotonic() - started
    assert kills == Counter(KILLS) and all(count >= 5 for count in kills.values())
    # A gateway kill breaks the client's stream; shard and encoder kills only fail items.
    assert all(e.endswith(":complete") for e in endings if not e.startswith("gateway:"))
    assert sum(c for e, c in endings.items() if e.startswith("gateway:")) == KILLS["gateway"]
    assert not any(e == "gateway:complete" for e in endings)
    print(
        f"\n{ROUNDS} rounds in {elapsed:.0f} s; kills {dict(kills)}; stream ends {dict(endings)}; resent {resent_total}"
    )
    record(
        "faults",
        "kill -9 of any process during a streamed ingest",
        f"{ROUNDS} rounds x {ITEMS:,} text items (seed {SEED}), 2 shards x 1 replica; {kills['shard']} shard, "
        f"{kills['encoder']} text encoder and {kills['gateway']} gateway kills at 5-90% of the acks; victim "
        "restarted on its port, client resumed from its journal file",
        f"all {ROUNDS * ITEMS - resent_total:,} items acknowledged OK before the kills present once with their "
        f"metadata before any resume; the resumes re-sent exactly the {resent_total:,} items not acknowledged OK "
        f"and nothing else; then all {ROUNDS * ITEMS:,} present once; {elapsed:.0f} s in all",
    )
