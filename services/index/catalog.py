"""The in-memory catalog of a shard: live USearch keys, their entries, and posting lists for filters.

USearch's search has no filter predicate, so the shard filters candidates itself. The catalog maps
every live key to its Entry (id, modality, metadata, tags) and keeps posting lists (which keys carry a
modality, a metadata key=value pair, a tag). The posting lists let a search size a filter before
running it: a selective filter is answered by brute force over its few matching keys, a broad one by
over-fetching from the graph. A posting with one key is stored as the bare int, not a set, because
metadata values unique to one item (file names, urls) are common and a set per item would cost
~200 bytes each.

In log mode the catalog also knows each entry's write-log partition (computed from the id's routing key
when the entry is added: `Entry.partition`) with a posting list per partition, so a search can be limited
to the partitions its shard owns at the search's map version, and so that filter costs nothing in the
steady state, when every stored item is in an owned partition (`simplify`).

Not thread-safe: the shard changes and reads it only under its index lock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator

from services.common.placement import item_hash
from services.index.domain import Entry, Filter

Posting = int | set[int]


def _post(table: dict[object, Posting], name: object, key: int) -> None:
    current = table.get(name)
    if current is None:
        table[name] = key
    elif isinstance(current, set):
        current.add(key)
    else:
        table[name] = {current, key}


def _unpost(table: dict[object, Posting], name: object, key: int) -> None:
    current = table.get(name)
    if isinstance(current, set):
        current.discard(key)
        if len(current) == 1:
            table[name] = next(iter(current))
    elif current == key:
        del table[name]


def _size(posting: Posting | None) -> int:
    if posting is None:
        return 0
    return len(posting) if isinstance(posting, set) else 1


def _keys(posting: Posting | None) -> Iterable[int]:
    if posting is None:
        return ()
    return posting if isinstance(posting, set) else (posting,)


class Catalog:
    """Live keys -> entries, with posting lists by modality, metadata pair and tag."""

    def __init__(self, partitions: int | None = None) -> None:
        self._entries: dict[int, Entry] = {}
        self._postings: dict[object, Posting] = {}
        # The write log's partition count (None in direct mode: entries carry no partition).
        self.partitions = partitions
        # Live entries per partition, kept as they change: stats read it without walking the postings.
        self._per_partition: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[int]:
        return iter(self._entries)

    def get(self, key: int) -> Entry | None:
        """The entry of a live key, or None."""
        return self._entries.get(key)

    def add(self, key: int, entry: Entry) -> None:
        """Record a new live key (keys are never reused, so it is not present yet)."""
        if self.partitions:
            entry = dataclasses.replace(entry, partition=item_hash(entry.id) % self.partitions)
        self._entries[key] = entry
        for name in self._names(entry):
            _post(self._postings, name, key)
        if entry.partition >= 0:
            self._per_partition[entry.partition] = self._per_partition.get(entry.partition, 0) + 1

    def remove(self, key: int) -> Entry | None:
        """Forget a key; its entry, or None when it was not live."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            for name in self._names(entry):
                _unpost(self._postings, name, key)
            if entry.partition >= 0:
                left = self._per_partition.pop(entry.partition) - 1
                if left:
                    self._per_partition[entry.partition] = left
        return entry

    def with_partitions(self, partitions: int) -> Catalog:
        """A copy of this catalog whose entries know their partition among `partitions`."""
        out = Catalog(partitions)
        for key, entry in self._entries.items():
            out.add(key, entry)
        return out

    def partition_keys(self, partition: int) -> list[int]:
        """The live keys stored in one partition (log mode)."""
        return list(_keys(self._postings.get(("p", partition))))

    def partition_counts(self) -> dict[int, int]:
        """Live entries per partition that holds any (log mode)."""
        return dict(self._per_partition)

    @staticmethod
    def _names(entry: Entry) -> Iterator[object]:
        if entry.partition >= 0:
            yield ("p", entry.partition)
        yield ("m", entry.modality)
        for pair in entry.metadata.items():
            yield ("k", *pair)
        for tag in set(entry.tags):
            yield ("t", tag)

    def simplify(self, flt: Filter) -> Filter:
        """`flt` without its modality part when every live entry has one of its modalities.

        A search for "any modality but video" on a shard that holds no video frames is then a plain
        graph search again, not a filtered one. The same for the partitions: when every entry is in a
        partition the search may answer for (the steady state, no move under way), the limit goes.
        """
        if flt.partitions is not None:
            covered = sum(_size(self._postings.get(("p", p))) for p in flt.partitions)
            if covered == len(self._entries):
                flt = dataclasses.replace(flt, partitions=None)
        if flt.modalities:
            covered = sum(_size(self._postings.get(("m", m))) for m in flt.modalities)
            if covered == len(self._entries):
                return dataclasses.replace(flt, modalities=frozenset())
        return flt

    def narrowest(self, flt: Filter) -> tuple[int, Callable[[], Iterable[int]]] | None:
        """The part of `flt` with the fewest keys: (that count, a function listing them), or None.

        Every key that passes `flt` is among the listed ones (they may include keys that fail other
        parts of the filter). None when the filter constrains nothing.
        """
        options: list[tuple[int, Callable[[], Iterable[int]]]] = []
        postings = self._postings

        def single(name: object) -> tuple[int, Callable[[], Iterable[int]]]:
            return _size(postings.get(name)), lambda: _keys(postings.get(name))

        def union(names: list[object]) -> tuple[int, Callable[[], Iterable[int]]]:
            def listed() -> Iterable[int]:
                out: set[int] = set()
                for name in names:
                    out.update(_keys(postings.get(name)))
                return out

            return sum(_size(postings.get(name)) for name in names), listed

        if flt.partitions is not None:
            options.append(union([("p", p) for p in flt.partitions]))
        if flt.modalities:
            options.append(union([("m", m) for m in flt.modalities]))
        for field, values in flt.clauses:
            options.append(union([("k", field, value) for value in values]))
        for tag in flt.tags_all:
            options.append(single(("t", tag)))
        if flt.tags_any:
            options.append(union([("t", tag) for tag in flt.tags_any]))
        if not options:
            return None
        return min(options, key=lambda option: option[0])
