"""The index service: opens its shards, serves them over gRPC and runs their background maintenance.

With a write log configured (CROSSMODAL_LOG_URL) it also follows the log (`follower.py`) and turns
SERVING only once every partition its shards own has been caught up with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import structlog

from crossmodal.v1 import index_pb2_grpc
from services.index.config import IndexConfig
from services.index.follower import LogFollower
from services.index.servicer import IndexServicer, ShardSet
from services.index.shard import Shard

log = structlog.get_logger("index.service")


class IndexService:
    """Serves crossmodal.v1.IndexService for the shards named in the configuration."""

    name = "index"

    def __init__(self, config: IndexConfig) -> None:
        self.config = config
        self.shards = ShardSet(config.shards)
        # Requests and maintenance get separate threads so that a long compaction never starves searches.
        self._executor = ThreadPoolExecutor(config.workers, thread_name_prefix="index-rpc")
        self._maintenance_executor = ThreadPoolExecutor(1, thread_name_prefix="index-maintenance")
        self.follower = LogFollower(config.log) if config.log.enabled else None
        self._servicer = IndexServicer(self.shards, config.limits, self._executor, self.follower)
        self._tasks: list[asyncio.Task[None]] = []

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        """Add the servicer to the gRPC server."""
        index_pb2_grpc.add_IndexServiceServicer_to_server(self._servicer, server)
        return ["crossmodal.v1.IndexService"]

    def shard_directory(self, number: int) -> Path:
        """The directory of shard `number` under the data directory."""
        return self.config.data_dir / f"shard-{number}"

    async def start(self) -> None:
        """Open every shard (load snapshot + replay, or rebuild), start their maintenance, catch up with the log."""
        loop = asyncio.get_running_loop()
        opened = await asyncio.gather(
            *(
                loop.run_in_executor(self._executor, Shard, number, self.shard_directory(number), self.config)
                for number in self.config.shards
            ),
            return_exceptions=True,
        )
        errors = [result for result in opened if isinstance(result, BaseException)]
        for result in opened:
            if isinstance(result, Shard):
                self.shards.shards[result.number] = result
        if errors:
            await self._close_shards(snapshot=False)
            raise errors[0]
        for shard in self.shards.shards.values():
            self._tasks.append(asyncio.create_task(self._maintain(shard), name=f"index-maintain-{shard.number}"))
        if self.follower is not None:
            try:
                await self.follower.start(dict(self.shards.shards))
            except BaseException:
                # A failed or cancelled start (SIGTERM while waiting for the log) gets no stop(): clean up here.
                await self.stop()
                raise

    async def _maintain(self, shard: Shard) -> None:
        loop = asyncio.get_running_loop()
        # A periodic timer: each pass decides whether a snapshot or a compaction is due.
        period = min(5.0, max(0.05, self.config.snapshot_interval_seconds / 4))
        while True:
            await asyncio.sleep(period)
            try:
                await loop.run_in_executor(self._maintenance_executor, shard.maintain)
            except Exception:
                log.exception("shard maintenance failed", shard=shard.number)

    async def _close_shards(self, snapshot: bool) -> None:
        loop = asyncio.get_running_loop()
        shards = list(self.shards.shards.values())
        self.shards.shards.clear()
        await asyncio.gather(*(loop.run_in_executor(self._executor, shard.close, snapshot) for shard in shards))

    async def stop(self) -> None:
        """Stop following the log and maintenance, write a final snapshot of each changed shard, release them."""
        if self.follower is not None:
            await self.follower.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        # A maintenance pass already running on its thread finishes before the shards close. Waiting for
        # threads happens on a thread of its own: the event loop keeps serving (health, other services,
        # signals) while a call that outlived the drain finishes.
        await asyncio.to_thread(self._maintenance_executor.shutdown, True)
        await self._close_shards(snapshot=True)
        await asyncio.to_thread(self._executor.shutdown, True)
