"""Stress test: writes, deletes, searches, snapshots and compactions at once, every answer checked.

Writers own disjoint ids and log each operation with a sequence number taken before the call (issue)
and after its acknowledgement (ack). Searchers log theirs the same way. Afterwards every search answer
is checked against that history: each hit is a version of the item that was live at some moment
during the search, with the right score for that version's vector and the right metadata, passes the
filter, appears once; an exhaustive search contains every item that was live throughout it. Then the
quiescent shard is checked against its store.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import random
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from services.index.domain import MODALITY_IMAGE, MODALITY_TEXT, Filter, Hit, Item, SearchQuery, make_filter
from services.index.shard import Shard
from tests.index.helpers import DIM, MODEL, open_shard

WRITERS = 2
IDS_PER_WRITER = 60
OPS_PER_WRITER = 150
SEARCHERS = 2


@functools.cache
def vector_of(item: str, gen: int) -> np.ndarray:
    """The vector of generation `gen` of `item` (deterministic; cached, so callers must not modify it)."""
    seed = int.from_bytes(f"{item}/{gen}".encode(), "little") % (2**63)
    x = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return x / np.linalg.norm(x)


def item_of(item: str, gen: int, owner: int) -> Item:
    """Generation `gen` of `item`: its modality alternates with the generation."""
    modality = MODALITY_IMAGE if gen % 2 == 0 else MODALITY_TEXT
    return Item(item, modality, vector_of(item, gen), {"gen": str(gen), "owner": str(owner)}, (f"g{gen % 3}",))


@dataclasses.dataclass
class Event:
    """One acknowledged (or at least issued) write of one id."""

    gen: int | None  # None: delete
    issue: int
    ack: int


@dataclasses.dataclass
class SearchRecord:
    """One search and its answer."""

    query: np.ndarray
    flt: Filter
    exact: bool
    k: int
    start: int
    end: int
    hits: list[Hit]


class Sequence:
    """A global, thread-safe logical clock."""

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def next(self) -> int:
        """The next tick."""
        with self._lock:
            return next(self._counter)


def run_writer(shard: Shard, owner: int, clock: Sequence, history: dict[str, list[Event]], seed: int) -> None:
    """Stream upserts (single and batched), re-upserts and deletes over this writer's ids."""
    rng = random.Random(seed)
    ids = [f"w{owner}-{j}" for j in range(IDS_PER_WRITER)]
    gens = dict.fromkeys(ids, 0)
    for _ in range(OPS_PER_WRITER):
        roll = rng.random()
        chosen = rng.sample(ids, 4) if roll < 0.15 else [rng.choice(ids)]
        if roll < 0.7:
            for item in chosen:
                gens[item] += 1
            issue = clock.next()
            result = shard.upsert(MODEL, [item_of(item, gens[item], owner) for item in chosen])
            assert result.errors == [None] * len(chosen)
            ack = clock.next()
            for item in chosen:
                history[item].append(Event(gens[item], issue, ack))
        else:
            issue = clock.next()
            shard.delete(chosen)
            ack = clock.next()
            for item in chosen:
                history[item].append(Event(None, issue, ack))


def run_searcher(shard: Shard, clock: Sequence, done: threading.Event, out: list[SearchRecord], seed: int) -> None:
    """Search with random queries, filters and modes until the writers are done."""
    rng = random.Random(seed)
    filters = [
        Filter(),
        make_filter(MODALITY_TEXT, [], [], []),
        make_filter(0, [("owner", ["1"])], [], []),
        make_filter(MODALITY_IMAGE, [("owner", ["0"])], ["g1"], []),
        make_filter(0, [], [], ["g0", "g2"]),
    ]
    while not done.is_set() or len(out) < 50:
        owner, j = rng.randrange(WRITERS), rng.randrange(IDS_PER_WRITER)
        query = (
            vector_of(f"w{owner}-{j}", rng.randrange(6))
            if rng.random() < 0.7
            else vector_of("random", rng.randrange(10**6))
        )
        flt = rng.choice(filters)
        exact = rng.random() < 0.3
        k = 1000 if exact and flt.is_empty and rng.random() < 0.5 else rng.choice((1, 5, 10, 30))
        start = clock.next()
        result = shard.search(SearchQuery(query, k, flt, exact=exact))
        end = clock.next()
        out.append(SearchRecord(query, flt, exact, k, start, end, result.hits))


def run_maintenance(shard: Shard, done: threading.Event, counts: dict[str, int]) -> None:
    """Snapshots and compactions while everything else runs."""
    while not done.is_set() or counts["compactions"] < 2:
        shard.snapshot_if_changed()
        counts["snapshots"] += 1
        shard.compact()
        counts["compactions"] += 1


def gen_of(hit: Hit) -> int:
    """The generation recorded in a hit's metadata."""
    return int(hit.metadata["gen"])


def live_during(events: list[Event], gen: int, start: int, end: int) -> bool:
    """Whether generation `gen` may have been visible at some moment in [start, end]."""
    for position, event in enumerate(events):
        if event.gen != gen:
            continue
        later = events[position + 1] if position + 1 < len(events) else None
        return event.issue < end and (later is None or later.ack > start)
    return False


def stable_live(events: list[Event], start: int, end: int) -> int | None:
    """The generation live throughout [start, end], if any (each id's events are sequential)."""
    settled = [position for position, event in enumerate(events) if event.ack < start]
    if not settled:
        return None
    last = settled[-1]
    if events[last].gen is None:
        return None
    if last + 1 < len(events) and events[last + 1].issue <= end:
        return None
    return events[last].gen


def check_search(record: SearchRecord, history: dict[str, list[Event]]) -> None:
    """Check one answer against the write history."""
    ids = [h.id for h in record.hits]
    assert len(ids) == len(set(ids)), f"duplicate ids in {ids}"
    assert len(ids) <= record.k
    scores = [h.score for h in record.hits]
    assert scores == sorted(scores, reverse=True)
    query = record.query / np.linalg.norm(record.query)
    keep: Callable[[Hit], bool] = lambda h: (  # noqa: E731 - a local predicate reads best inline
        (not record.flt.modalities or h.modality in record.flt.modalities)
        and all(h.metadata.get(key) in values for key, values in record.flt.clauses)
        and all(t in h.tags for t in record.flt.tags_all)
        and (not record.flt.tags_any or bool(record.flt.tags_any & set(h.tags)))
    )
    for hit in record.hits:
        gen = gen_of(hit)
        assert live_during(history[hit.id], gen, record.start, record.end), (
            f"{hit.id} gen {gen} was not live during the search"
        )
        expected = item_of(hit.id, gen, int(hit.metadata["owner"]))
        assert hit.modality == expected.modality and hit.tags == expected.tags
        assert abs(hit.score - float(np.dot(expected.vector, query))) < 1e-4, (hit.id, hit.score)
        assert keep(hit)
    if record.exact and record.flt.is_empty and record.k == 1000:
        must = {item for item, events in history.items() if stable_live(events, record.start, record.end) is not None}
        assert must <= set(ids), f"exhaustive search missed {sorted(must - set(ids))[:5]}"


@pytest.mark.parametrize("brute_force_factor", [20.0, 0.0], ids=["posting-lists", "graph-only"])
def test_writes_deletes_searches_and_maintenance_at_once(tmp_path: Path, brute_force_factor: float) -> None:
    shard = open_shard(tmp_path, compact_min_deleted=5, compact_ratio=0.05, brute_force_factor=brute_force_factor)
    clock = Sequence()
    history: dict[str, list[Event]] = {}
    for owner in range(WRITERS):
        initial = [item_of(f"w{owner}-{j}", 0, owner) for j in range(IDS_PER_WRITER)]
        issue = clock.next()
        shard.upsert(MODEL, initial)
        ack = clock.next()
        for item in initial:
            history[item.id] = [Event(0, issue, ack)]

    done = threading.Event()
    records: list[list[SearchRecord]] = [[] for _ in range(SEARCHERS)]
    counts = {"snapshots": 0, "compactions": 0}
    errors: list[BaseException] = []

    def guarded(fn: Callable[..., None], *args: object) -> Callable[[], None]:
        def run() -> None:
            try:
                fn(*args)
            except BaseException as exc:
                errors.append(exc)
                done.set()

        return run

    writers = [
        threading.Thread(target=guarded(run_writer, shard, owner, clock, history, 1000 + owner))
        for owner in range(WRITERS)
    ]
    others = [
        threading.Thread(target=guarded(run_searcher, shard, clock, done, records[s], 2000 + s))
        for s in range(SEARCHERS)
    ]
    others.append(threading.Thread(target=guarded(run_maintenance, shard, done, counts)))
    for thread in writers + others:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    for thread in others:
        thread.join()
    assert not errors, errors

    all_records = [r for rs in records for r in rs]
    assert len(all_records) >= 100
    assert counts["compactions"] >= 2
    for record in all_records:
        check_search(record, history)

    # Quiescent: the store, the graph and the history agree exactly.
    expected = {item: events[-1].gen for item, events in history.items() if events[-1].gen is not None}
    stored, missing = shard.get(list(history), include_vectors=True)
    assert {s.id: int(s.metadata["gen"]) for s in stored} == expected
    assert set(missing) == set(history) - set(expected)
    for stored_item in stored:
        assert stored_item.vector is not None
        assert np.array_equal(stored_item.vector, vector_of(stored_item.id, expected[stored_item.id]))
    everything = shard.search(SearchQuery(vector_of("probe", 0), 1000, exact=True)).hits
    assert {h.id: gen_of(h) for h in everything} == expected
    for item_id, gen in list(expected.items())[:40]:
        top = shard.search(SearchQuery(vector_of(item_id, gen), 1)).hits[0]
        assert (top.id, gen_of(top)) == (item_id, gen)
    assert shard.stats().count == len(expected)
    shard.close()
