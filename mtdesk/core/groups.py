"""Reading Redis streams as one consumer of a consumer group: the shards' inbound
partitions and the deletion jobs' queue both read through :class:`GroupReader`.

What a caller may rely on:

- :meth:`GroupReader.ensure_groups` creates the group on every stream (``MKSTREAM``, from
  id ``0``: entries added before the first reader are read too); an existing group is
  left as it is. Call it again after ``NOGROUP`` (a stream key deleted wholesale).
- :meth:`GroupReader.own_pending` pages through what THIS consumer read and never
  acknowledged (a crash, a restart): at-least-once delivery resumes there.
- :meth:`GroupReader.read_new` reads entries never delivered to anyone (``>``), blocking
  up to ``block_ms`` when there are none. On a cluster a master that fails fails only
  its own streams' reads; the read raises only when every master failed.
- :meth:`GroupReader.claim_idle` takes over entries pending longer than ``min_idle_ms``
  on ANY consumer (one that crashed or no longer exists), a page at a time.
- :meth:`GroupReader.ack` acknowledges handled entries and deletes them from their
  stream, all streams in one pipeline (a transaction when asked);
  :meth:`GroupReader.ack_fenced` does the same only where the stream's owner key still
  holds the caller's epoch (a partition handed over is refused, see core/ownership.py):
  one script for all the streams on a single Redis, one per stream on a cluster, where
  a master that fails fails only its own streams' acknowledgements (named in
  :attr:`FencedAcks.failed`, to be sent again); it raises only when every one failed.
- An entry deleted from its stream while pending is acknowledged on sight and never
  returned: every entry handed out has its fields. Ids are returned as ``str``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoScriptError, ResponseError, SlotNotCoveredError

from mtdesk.core.pipelined import PipelinedCluster
from mtdesk.core.redis import (
    Redis,
    StreamReads,
    as_autoclaim,
    as_stream_reads,
    by_master,
    is_cluster,
)
from mtdesk.core.scripts import LuaScript

log = logging.getLogger(__name__)

FENCED_ACK = LuaScript.from_file("mtdesk.core", "lua/fenced_ack.lua")
# The same for every stream of a flush in one call, on a single Redis (on a cluster each
# partition's keys are in a slot of their own: one FENCED_ACK per partition).
FENCED_ACK_MANY = LuaScript.from_file("mtdesk.core", "lua/fenced_ack_many.lua")

# On a cluster, how long a stream read empty may be left out of a busy reader's polls
# (an entry arriving there meanwhile waits up to this long).
_STREAM_GAP_MAX_S = 0.008

Entry = tuple[str, dict[bytes, bytes]]
"""A stream entry: its id and its fields."""


class FencedAcks(NamedTuple):
    """What :meth:`GroupReader.ack_fenced` did not acknowledge: ``refused``, the streams
    whose owner key holds another epoch (handed over: drop those acknowledgements), and
    ``failed``, the streams whose master failed meanwhile (not known acknowledged: send
    them again). Every other stream's entries are acknowledged and deleted."""

    refused: list[str]
    failed: list[str]


def _s(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class GroupReader:
    """Consumer ``consumer`` of group ``group`` on ``streams``."""

    def __init__(self, redis: Redis, group: str, consumer: str, streams: Sequence[str]) -> None:
        self._redis = redis
        self.group = group
        self.consumer = consumer
        self.streams = tuple(streams)
        self._by_name = {s.encode(): s for s in self.streams}
        self._idle_s = 0.0  # a cluster's reads: how long the last empty read slept
        self._due: dict[str, float] = {}  # a stream read empty: when to read it again
        self._gap: dict[str, float] = {}  # and how long it waited the last time
        self._warned_at = float("-inf")  # a cluster's reads: the last failing master told
        self._ack_warned_at = float("-inf")  # and its acknowledgements

    def __repr__(self) -> str:
        return f"GroupReader({self.group}/{self.consumer}, {len(self.streams)} streams)"

    async def ensure_groups(self) -> None:
        """Create the group on each stream (and the stream) unless it exists."""
        await self._create_groups(self.streams)

    async def _create_groups(self, streams: Sequence[str]) -> None:
        for stream in streams:
            try:
                await self._redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def own_pending(
        self, stream: str, *, count: int, after: str = "0"
    ) -> tuple[str | None, list[Entry]]:
        """One page (up to ``count``) of this consumer's unacknowledged entries of
        ``stream`` with ids after ``after``, and the id to page on from (None: nothing
        is left)."""
        answer = as_stream_reads(await self._redis.xreadgroup(
            self.group, self.consumer, {stream: after}, count=count,
        ))
        rows = answer[0][1] if answer else []
        if not rows:
            return None, []
        return _s(rows[-1][0]), await self._live(stream, rows)

    async def read_new(self, *, count: int, block_ms: int | None = None) -> list[tuple[str, list[Entry]]]:
        """New entries, up to ``count`` per stream, as (stream, entries) for the streams
        that had some; waits up to ``block_ms`` (None: no wait) when none has."""
        if not self.streams:
            return []
        if is_cluster(self._redis) and len(self.streams) > 1:
            answer = await self._read_slots(count, block_ms)
        else:
            answer = as_stream_reads(await self._redis.xreadgroup(
                self.group, self.consumer, dict.fromkeys(self.streams, ">"), count=count,
                block=block_ms,
            ))
        out: list[tuple[str, list[Entry]]] = []
        for raw_stream, rows in answer or []:
            stream = self._name(raw_stream)
            entries = await self._live(stream, rows)
            if entries:
                out.append((stream, entries))
        return out

    async def _read_slots(self, count: int, block_ms: int | None) -> StreamReads:
        """On a cluster each stream is its own slot, and one XREADGROUP may name streams
        of one slot only: every stream is read without blocking, one pipeline per master,
        all masters at once. When all were empty the reader sleeps, 1 ms at first and
        twice as long each empty time up to 50 ms (or ``block_ms``): an idle shard costs
        its masters ~20 reads per stream per second, and a busy one never sleeps. A busy
        reader leaves a stream that was empty out of its next polls, 1 ms at first and
        twice as long each empty time up to 8 ms: most of a busy shard's streams are
        empty at any moment (300 msgs/s over 64 partitions is ~5 a second each), and
        reading them on every poll made most of its commands.
        (Blocking reads, one per stream, would each hold a connection, and cancelling the
        ones still blocked when another answered could drop what they had just read.)

        A master that fails (dead, failing over) fails only its own streams' reads: what
        the others returned is handed out (one pipeline for all would raise and drop it,
        those entries left pending until the idle claim, a minute later), and its streams
        are read again next time. Only when every read failed does this raise. A stream
        that lost its group (NOGROUP) has it made again, the other streams read as usual."""
        cluster = cast(RedisCluster, self._redis)
        now = time.monotonic()
        due = [s for s in self.streams if self._due.get(s, 0.0) <= now]
        if not due:  # every stream read empty a moment ago: wait for the first one due
            await asyncio.sleep(max(0.0, min(self._due.get(s, 0.0) for s in self.streams) - now))
            now = time.monotonic()
            due = [s for s in self.streams if self._due.get(s, 0.0) <= now] or list(self.streams)
        try:
            by_node: list[tuple[ClusterNode | None, list[str]]] = list(
                by_master(cluster, ((s, s) for s in due)))
        except SlotNotCoveredError:  # no slot map yet: one pipeline, routed by the keys
            by_node = [(None, due)]
        results = await asyncio.gather(
            *(self._read_on(cluster, node, streams, count) for node, streams in by_node),
            return_exceptions=True)
        answer: StreamReads = []
        failed: list[tuple[list[str], BaseException]] = []
        for (_, streams), result in zip(by_node, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):  # cancelled: not a read failure
                    raise result
                failed.append((streams, result))  # the master failed: read again next time
                continue
            for stream, reply in zip(streams, result, strict=True):
                if isinstance(reply, Exception):  # this stream's read alone (NOGROUP)
                    failed.append(([stream], reply))
                    continue
                reads = as_stream_reads(reply) or []
                answer.extend(reads)
                if reads:  # read again at once
                    self._due.pop(stream, None)
                    self._gap.pop(stream, None)
                else:  # skipped for a while: 1 ms, twice as long each empty time, up to 8 ms
                    gap = min(max(self._gap.get(stream, 0.0) * 2, 0.001), _STREAM_GAP_MAX_S)
                    self._gap[stream] = gap
                    self._due[stream] = now + gap
        if failed and sum(len(streams) for streams, _ in failed) == len(self.streams):
            raise failed[0][1]  # nothing could be read: the caller's retry applies
        for streams, exc in failed:
            if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                with contextlib.suppress(Exception):
                    await self._create_groups(streams)
                continue
            now = time.monotonic()
            if now - self._warned_at > 5.0:  # polls go on ~20 times a second meanwhile
                self._warned_at = now
                log.warning("reading %d streams failed on one master (%s); the others were "
                            "read", len(streams), type(exc).__name__)
        if answer:
            self._idle_s = 0.0
        elif block_ms:
            self._idle_s = min(max(self._idle_s * 2, 0.001), 0.05, block_ms / 1000)
            await asyncio.sleep(self._idle_s)
        return answer

    async def _read_on(self, cluster: RedisCluster, node: ClusterNode | None,
                       streams: Sequence[str], count: int) -> list[Any]:
        """One master's streams, one pipeline. Each read names its master (the slot
        map's): XREADGROUP's keys follow STREAMS, which redis-py would otherwise resolve
        with a COMMAND GETKEYS round trip per read. A MOVED answer (failover, migration)
        still re-routes the read by its key."""
        commands = [("XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count,
                     "STREAMS", stream, ">") for stream in streams]
        if node is not None and isinstance(cluster, PipelinedCluster):
            # The master's shared connection (the shards' client): one write, no pool.
            try:
                replies = await cluster.call_on(node, commands)
            except ConnectionError:
                replies = None  # broken or refused: redis-py's way notices a failover
            if replies is not None:
                return replies
        return await self._pipelined(cluster, node, commands)

    @staticmethod
    async def _pipelined(cluster: RedisCluster, node: ClusterNode | None,
                         commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        pipe = cluster.pipeline(transaction=False)
        for args in commands:
            if node is not None:
                pipe.execute_command(*args, target_nodes=node)
            else:
                pipe.execute_command(*args)
        # A read that failed alone (NOGROUP) comes back as its error, the others' entries
        # with it; a master that fails raises.
        return list(await pipe.execute(raise_on_error=False))

    async def claim_idle(
        self, stream: str, *, min_idle_ms: int, count: int, start: str = "0-0"
    ) -> tuple[str, list[Entry]]:
        """One page of entries of ``stream`` idle longer than ``min_idle_ms``, now this
        consumer's, and the id to continue from (``"0-0"``: the whole list was seen)."""
        result = as_autoclaim(await self._redis.xautoclaim(
            stream, self.group, self.consumer,
            min_idle_time=min_idle_ms, start_id=start, count=count,
        ))
        deleted = result[2] if len(result) > 2 else []
        if deleted:  # Redis 7 names entries deleted while pending: off the pending list
            await self._redis.xack(stream, self.group, *deleted)
        return _s(result[0]), await self._live(stream, result[1])

    async def ack(self, handled: Mapping[str, Sequence[str]], *, transaction: bool = False) -> None:
        """Acknowledge and delete ``handled`` (stream → entry ids), in one pipeline;
        raises what Redis raises (then nothing is known acknowledged: retry it all)."""
        if not any(handled.values()):
            return
        pipe = self._redis.pipeline(transaction=transaction)
        for stream, ids in handled.items():
            if ids:
                pipe.xack(stream, self.group, *ids)
                pipe.xdel(stream, *ids)
        await pipe.execute()

    async def ack_fenced(
        self, handled: Mapping[str, tuple[str, str, Sequence[str]]]
    ) -> FencedAcks:
        """Acknowledge and delete ``handled`` (stream → (owner key, epoch, entry ids)),
        each stream only while its owner key holds that epoch (or is absent; an empty
        epoch is never refused). On a cluster one pipeline per master, all at once: a
        master that fails (dead, failing over) leaves only its own streams
        unacknowledged, listed in ``failed``. Raises when nothing could be sent (every
        stream failed: then nothing is known acknowledged)."""
        todo = [(stream, fence) for stream, fence in handled.items() if fence[2]]
        if not todo:
            return FencedAcks([], [])
        replies = await self._fenced_acks(todo, load=False)
        if any(isinstance(r, NoScriptError) for r in replies):  # nothing ran: send again
            replies = await self._fenced_acks(todo, load=True)
        errors = [r for r in replies if isinstance(r, Exception)]
        if errors and len(errors) == len(replies):
            raise errors[0]
        if errors:
            now = time.monotonic()
            if now - self._ack_warned_at > 5.0:
                self._ack_warned_at = now
                log.warning("acknowledging %d of %d streams failed on a master (%s); the "
                            "others were acknowledged", len(errors), len(replies),
                            type(errors[0]).__name__)
        return FencedAcks(
            refused=[s for (s, _), r in zip(todo, replies, strict=True) if r == -1],
            failed=[s for (s, _), r in zip(todo, replies, strict=True)
                    if isinstance(r, Exception)])

    async def _fenced_acks(self, todo: Sequence[tuple[str, tuple[str, str, Sequence[str]]]],
                           *, load: bool) -> list[object]:
        """Each of ``todo``'s answer (the script's, or the exception that stopped it)."""
        if is_cluster(self._redis):
            return await self._fenced_acks_by_master(todo)
        if len(todo) > 1:
            return await self._fenced_acks_at_once(todo, load=load)
        pipe = self._redis.pipeline(transaction=False)
        if load:
            FENCED_ACK.load(pipe)
        for stream, (owner, epoch, ids) in todo:
            FENCED_ACK.queue(pipe, [stream, owner], [self.group, epoch, *ids])
        replies = list(await pipe.execute(raise_on_error=False))
        return replies[1:] if load else replies

    async def _fenced_acks_by_master(
        self, todo: Sequence[tuple[str, tuple[str, str, Sequence[str]]]]
    ) -> list[object]:
        """A cluster's: the masters at once, each on its shared connection (the shards'
        client) or in one pipeline (each stream's script names its keys, so a stale
        slot map is corrected by MOVED; a cluster's pipeline sends the script's source:
        no NOSCRIPT); a master that raises gives its exception as the answer of each of
        its streams."""
        cluster = cast(RedisCluster, self._redis)
        parts: list[tuple[ClusterNode | None, list[int]]]
        try:
            parts = list(by_master(cluster, ((stream, i) for i, (stream, _) in enumerate(todo))))
        except SlotNotCoveredError:  # no slot map yet: one pipeline, routed by the keys
            parts = [(None, list(range(len(todo))))]

        async def pipelined(items: list[int]) -> list[object]:
            pipe = cluster.pipeline(transaction=False)
            for i in items:
                stream, (owner, epoch, ids) = todo[i]
                FENCED_ACK.queue(pipe, [stream, owner], [self.group, epoch, *ids])
            return list(await pipe.execute(raise_on_error=False))

        async def run(node: ClusterNode | None, items: list[int]) -> list[object]:
            if node is None or not isinstance(cluster, PipelinedCluster):
                return await pipelined(items)
            # The master's shared connection (the script's source: a flush every half
            # second, never NOSCRIPT); when it broke, the pipeline's way (acknowledging
            # again is harmless).
            try:
                replies = await cluster.call_on(node, [FENCED_ACK.eval(
                    [todo[i][0], todo[i][1][0]], [self.group, todo[i][1][1], *todo[i][1][2]])
                    for i in items])
            except ConnectionError:
                replies = None
            return await pipelined(items) if replies is None else replies

        results = await asyncio.gather(*(run(node, items) for node, items in parts),
                                       return_exceptions=True)
        replies: list[object] = [None] * len(todo)
        for (_, items), result in zip(parts, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancelled: not a master's failure
            for n, i in enumerate(items):
                replies[i] = result if isinstance(result, Exception) else result[n]
        return replies

    async def _fenced_acks_at_once(
        self, todo: Sequence[tuple[str, tuple[str, str, Sequence[str]]]], *, load: bool
    ) -> list[object]:
        """One script for all of ``todo`` (a single Redis); its answer per stream."""
        names: list[str] = []
        args: list[str] = [self.group]
        for stream, (owner, epoch, ids) in todo:
            names += [stream, owner]
            args += [epoch, str(len(ids)), *ids]
        pipe = self._redis.pipeline(transaction=False)
        if load:
            FENCED_ACK_MANY.load(pipe)
        FENCED_ACK_MANY.queue(pipe, names, args)
        reply = (await pipe.execute(raise_on_error=False))[-1]
        if isinstance(reply, Exception):
            return [reply] * len(todo)
        return [int(r) for r in reply]

    async def _live(
        self, stream: str, rows: Sequence[tuple[bytes, dict[bytes, bytes] | None]]
    ) -> list[Entry]:
        entries: list[Entry] = []
        gone: list[str] = []
        for raw_id, fields in rows:
            if fields:
                entries.append((_s(raw_id), fields))
            else:
                gone.append(_s(raw_id))
        if gone:  # deleted from the stream while pending (Redis < 7 hands them out empty)
            await self._redis.xack(stream, self.group, *gone)
        return entries

    def _name(self, raw: bytes | str) -> str:
        if isinstance(raw, str):
            return raw
        return self._by_name.get(raw) or raw.decode()
