"""Many simple projection writes in one round trip: a buffer of writes per partition slot.

The timeline worker's posts and DMs are mostly plain writes (SET the post, ZADD it to logs,
insert it into capped homes, fan it out). Sent one command at a time, a Python client tops
out near ~100k commands a second, and packing the commands costs more than Redis spends on
them. Here a run of events becomes one list of writes per partition, encoded with msgpack into
a single argument and applied in order by one script call per partition — which is what lets
replay rebuild at tens of thousands of events a second, and the live worker take a burst in
one round trip per batch. The fan-out op runs lua/fanout_page.lua, the very code a lone
fan-out runs; a walk with more followers than one page returns its cursor to be finished.

Every key is built by keys.py and carries its partition's hash tag; a buffer holds only keys
of one partition, and its call names that partition's stream key, so it runs in that slot on
Redis Cluster. Each write is idempotent, as the projections require.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from muster import keys, scripts
from muster.connection import is_cluster, text
from muster.projections.fanout import FANOUT_BATCH

_encode = msgspec.msgpack.Encoder().encode


class Reply:
    """The reply to one command queued on a pipeline, in `value` once WriteBatches.execute
    has run the pipeline: a caller keeps the Reply of what it queued instead of counting
    its way through the pipeline's replies."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: Any = None


class Writes:
    """A buffer of writes, grouped by partition; `queue` puts one script call per partition
    on a pipeline, in the order the writes were added, and the fan-outs after every other
    write; `continued` reads back, from their replies, which fan-outs have more pages.

    Fan-outs go last so that a post is in its account's log before any fan-out reads the
    followers: a follow handled at the same moment elsewhere writes its follow record, then
    reads that log (Timeline.graph_changes), so the post reaches the new follower one way or
    the other. A pipeline runs in order on one connection."""

    def __init__(self, batches: WriteBatches, script: Any, cap: int) -> None:
        self._batches = batches
        self._script = script
        self._cap = cap
        self._ops: dict[int, list[Any]] = {}
        self._fanouts: dict[int, list[Any]] = {}

    def _of(self, p: int, buffers: dict[int, list[Any]] | None = None) -> list[Any]:
        buffers = self._ops if buffers is None else buffers
        ops = buffers.get(p)
        if ops is None:
            ops = buffers[p] = []
        return ops

    def set(self, p: int, key: str, value: bytes | str) -> None:
        """`value` is UTF-8 (JSON): sent as text, since Redis's cmsgpack reads no binary."""
        self._of(p).extend(("S", key, value.decode() if isinstance(value, bytes) else value))

    def zadd(self, p: int, key: str, member: str) -> None:
        """ZADD with score 0 (the zset is ordered by member text: ids)."""
        self._of(p).extend(("Z", key, member))

    def zadd_gt(self, p: int, key: str, member: str, score: int) -> None:
        self._of(p).extend(("G", key, member, str(score)))

    def home(self, p: int, key: str, post_id: str) -> None:
        """Insert a post into a home timeline and keep its newest `cap` entries."""
        self._of(p).extend(("H", key, keys.home_member(post_id)))

    def follow_change(
        self,
        p: int,
        applied: str,
        follower: str,
        seq: int,
        target: str,
        other: str,
        kind: str,
        channels: str,
    ) -> None:
        """Apply one follow change if it is newer than the pair's last (see FC above)."""
        order = ",".join(keys.CHANNELS)
        self._of(p).extend(("FC", applied, follower, seq, target, other, kind, channels, order))

    def follow_home(
        self, p: int, guard: str, follower: str, home: str, post_ids: Sequence[str]
    ) -> None:
        """`homes`, only if `follower` is still in the followers hash `guard` by then."""
        if post_ids:
            members = [keys.home_member(i) for i in post_ids]
            self._of(p).extend(("FM", guard, follower, home, len(members), *members))

    def unfollow_home(
        self, p: int, guards: Sequence[str], follower: str, home: str, post_ids: Sequence[str]
    ) -> None:
        """Take posts out of a home, only if `follower` is in neither followers hash by then,
        and never the ones they wrote themselves (keys.authored)."""
        if post_ids:
            members = [keys.home_member(i) for i in post_ids]
            authored = keys.authored(p, follower)
            self._of(p).extend(("FX", *guards, follower, authored, home, len(members), *members))

    def fanout(self, p: int, walk: int, source: str, post_id: str) -> None:
        """The first page of a plain fan-out of `post_id` to the followers in `source`."""
        self._of(p, self._fanouts).extend(
            ("F", walk, source, keys.home_member(post_id), keys.home_prefix(p))
        )

    def __bool__(self) -> bool:
        return bool(self._ops or self._fanouts)

    async def write_first(self, redis: aioredis.Redis) -> None:
        """In a cluster, send the writes other than fan-outs now, on a pipeline of their own:
        a cluster pipeline runs each node's share on its own connection, all at once, so
        the order `queue` keeps (logs before fan-outs) holds only across two round trips.
        On one Redis nothing: one pipeline keeps that order."""
        if not self._ops or not is_cluster(redis):
            return
        fanouts, self._fanouts = self._fanouts, {}
        async with redis.pipeline(transaction=False) as pipe:
            await self.queue(pipe)  # the ops alone
            await self._batches.execute(pipe)
        self._fanouts = fanouts

    async def queue(self, pipe: Any) -> list[Reply]:
        """Queue the calls; their replies (for `continued`)."""
        replies = []
        for buffers in (self._ops, self._fanouts):
            for p, ops in buffers.items():
                await self._script(
                    keys=[keys.events(p)],
                    args=[self._cap, FANOUT_BATCH, _encode(ops)],
                    client=pipe,
                )
                replies.append(self._batches.reply(pipe))
        self._ops, self._fanouts = {}, {}
        return replies

    @staticmethod
    def continued(replies: Sequence[Reply]) -> list[tuple[int, str]]:
        """(walk, cursor) of every fan-out that has more pages, from the calls' replies."""
        found = []
        for reply in replies:
            pairs = reply.value
            for i in range(0, len(pairs), 2):
                found.append((int(pairs[i]), text(pairs[i + 1])))
        return found


class WriteBatches:
    """Makes `Writes` buffers sharing one registered script, counts followers in bulk, and
    executes pipelines of script calls in one round trip (`execute`)."""

    def __init__(self, redis: aioredis.Redis, *, cap: int) -> None:
        self._script = scripts.register(redis, "apply")
        self._hlens = scripts.register(redis, "hlens")
        self.cap = cap
        self._known: set[str] = set()  # shas this process has seen the server run
        self._expected: dict[int, list[tuple[int, Reply]]] = {}  # by pipeline

    def reply(self, pipe: Any) -> Reply:
        """The Reply of the command just queued on `pipe`, filled by `execute`."""
        reply = Reply()
        self._expected.setdefault(id(pipe), []).append((len(pipe) - 1, reply))
        return reply

    async def execute(self, pipe: Any) -> None:
        """pipe.execute(), filling the Replies taken on it, minus redis-py's SCRIPT EXISTS
        round trip before every pipeline whose scripts this process has seen the server run.
        A server that lost them (a restart, SCRIPT FLUSH) answers NOSCRIPT: that raises here,
        the caller runs again, and the next pipeline asks (and loads) again."""
        expected = self._expected.pop(id(pipe), [])
        registered = getattr(pipe, "scripts", None)  # a cluster pipeline has none (scripts.py)
        used = {script.sha for script in registered or ()}
        if registered is not None and used <= self._known:
            registered.clear()
        try:
            replies: list[Any] = await pipe.execute()
        except NoScriptError:
            self._known.clear()
            scripts.forget_everywhere()
            raise
        self._known |= used
        for index, reply in expected:
            reply.value = replies[index]

    def new(self) -> Writes:
        return Writes(self, self._script, self.cap)

    async def hlens(self, pipe: Any, p: int, names: Sequence[str]) -> Reply:
        """Queue the HLENs of `names` (hashes of partition p) as one call; its reply a list."""
        await self._hlens(keys=[keys.events(p)], args=[_encode(list(names))], client=pipe)
        return self.reply(pipe)
