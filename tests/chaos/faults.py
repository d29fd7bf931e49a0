"""The faults of a chaos run, planned from its seed and injected while the workload runs.

Kinds (`KINDS`): SIGKILL one worker process of a kind (started again after a moment);
SIGKILL both timeline workers (none runs for a couple of seconds: the log backs up, and with
a low MUSTER_MAX_LAG the api pushes back with 429); SIGKILL the api (started again at once,
on the same port); SIGKILL redis-server (started again after a moment on the same port and
data directory); a receiver that fails for a while (webhooks and the SMS provider answer
503, the mail server 451). A plan holds every kind at least once, then more single kills
(and now and then another of any kind), spread over the workload's seconds with a little
jitter. Outages of one receiver are kept apart (`OUTAGE_GAP_S`), so none outlasts the retry
schedule.

On a Redis Cluster (`CLUSTER_KINDS`), "restart redis" gives way to two cluster faults: SIGKILL
one master's process (its replica takes over within a few seconds; the old master is started
again and rejoins as a replica, in sync, before the next fault), and move slots live with
`redis-cli --cluster reshard`: from the lowest slot of a master up to and including the slot of
one of Muster's partitions, so a partition's stream and its keys change master under load.

Faults are injected one after another: a kill's restart (and the api's or Redis's return) is
finished before the next fault starts.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import redis
from redis_cluster import LocalCluster, LocalNode

from chaos.processes import WORKER_KINDS, Deployment
from muster import keys

KINDS = (
    "kill timeline worker",
    "kill delivery worker",
    "kill audit worker",
    "kill every timeline worker",
    "kill api",
    "restart redis",
    "webhooks fail",
    "sms fails",
    "email fails",
)
CLUSTER_KINDS = (
    *KINDS[: KINDS.index("restart redis")],
    "fail over a master",
    "reshard slots",
    *KINDS[KINDS.index("restart redis") + 1 :],
)
"""On a cluster: the same, with a master failover and a live reshard for the Redis restart."""
OUTAGE_S = (1.5, 3.0)
REDIS_DOWN_S = (0.5, 1.5)
KIND_DOWN_S = (1.5, 3.0)
"""How long no timeline worker runs at all (the log backs up: 429 under a low MUSTER_MAX_LAG)."""
"""How long redis-server stays dead before it is started again."""
OUTAGE_GAP_S = 9.0
"""Least time between the starts of two outages of one receiver (retry schedule: 8 x ~1 s)."""
_OUTAGE_CHANNEL = {"webhooks fail": "webhook", "sms fails": "sms", "email fails": "email"}


@dataclass(frozen=True, slots=True)
class Fault:
    at: float  # seconds after the workload began
    kind: str
    target: str = ""  # which worker copy
    seconds: float = 0.0  # an outage's length


@dataclass
class FaultLog:
    done: list[tuple[float, Fault, str]] = field(default_factory=list)  # (at, fault, note)
    unexpected_restarts: list[str] = field(default_factory=list)
    redis_down_s: list[float] = field(default_factory=list)
    api_down_s: list[float] = field(default_factory=list)
    last_ended: float = 0.0  # time.monotonic() when the last fault was over (outages: ended)
    cluster_notes: list[str] = field(default_factory=list)  # failovers and reshards, as done

    def counts(self) -> Counter[str]:
        return Counter(fault.kind for _, fault, _ in self.done)


def plan(
    seed: int, seconds: float, faults: int, copies: int, every: tuple[str, ...] = KINDS
) -> list[Fault]:
    rng = random.Random(f"{seed}:faults")
    kinds = list(every)
    while len(kinds) < faults:
        kinds.append(rng.choice(every[:3] + every[:3] + every))  # single kills twice as often
    rng.shuffle(kinds)
    start, end = 1.0, max(2.0, seconds - 1.5)
    step = (end - start) / max(1, len(kinds))
    found: list[Fault] = []
    last_outage: dict[str, float] = {}
    for n, kind in enumerate(kinds):
        at = start + n * step + rng.uniform(0, step * 0.5)
        channel = _OUTAGE_CHANNEL.get(kind)
        if channel is not None:
            if at - last_outage.get(channel, -OUTAGE_GAP_S) < OUTAGE_GAP_S:
                kind, channel = rng.choice(KINDS[:3]), None  # too soon: a kill instead
            else:
                last_outage[channel] = at
        target = ""
        if kind in KINDS[:3]:
            target = str(rng.randrange(copies))
        seconds_down = round(rng.uniform(*OUTAGE_S), 2) if channel else 0.0
        if kind == "kill every timeline worker":
            seconds_down = round(rng.uniform(*KIND_DOWN_S), 2)
        found.append(Fault(round(at, 2), kind, target, seconds_down))
    return found


class Injector:
    def __init__(self, deployment: Deployment, faults: list[Fault], seed: int) -> None:
        self.deployment = deployment
        self.faults = faults
        self.log = FaultLog()
        self._rng = random.Random(f"{seed}:injector")

    async def run(self, began: float) -> None:
        for fault in self.faults:
            while time.monotonic() < began + fault.at:
                self._supervise()
                await asyncio.sleep(min(0.1, max(0.0, began + fault.at - time.monotonic())))
            note = await self._inject(fault)
            self.log.done.append((round(time.monotonic() - began, 2), fault, note))
            outage = fault.seconds if fault.kind in _OUTAGE_CHANNEL else 0.0
            self.log.last_ended = max(self.log.last_ended, time.monotonic() + outage)

    def _supervise(self) -> None:
        for name in self.deployment.supervise():
            self.log.unexpected_restarts.append(name)

    async def _inject(self, fault: Fault) -> str:
        d = self.deployment
        if fault.kind == "kill api":
            assert d.api is not None
            d.api.kill()
            d.api.start()
            down = await d.wait_api()
            self.log.api_down_s.append(down)
            return f"api back after {down:.2f}s"
        if fault.kind == "restart redis":
            assert d.redis is not None
            down = await d.redis.crash_and_restart(down_s=self._rng.uniform(*REDIS_DOWN_S))
            self.log.redis_down_s.append(down)
            return f"redis back after {down:.2f}s"
        if fault.kind == "fail over a master":
            assert d.cluster is not None
            note = await self._fail_over(d.cluster)
            self.log.cluster_notes.append(note)
            return note
        if fault.kind == "reshard slots":
            assert d.cluster is not None
            note = await self._reshard(d.cluster, d.settings.partitions)
            self.log.cluster_notes.append(note)
            return note
        channel = _OUTAGE_CHANNEL.get(fault.kind)
        if channel is not None:
            d.receivers.outage(channel).fail_for(fault.seconds)
            return f"{channel} failing for {fault.seconds}s"
        if fault.kind == "kill every timeline worker":
            copies = d.workers["timeline"]
            for process in copies:
                process.kill()
            await asyncio.sleep(fault.seconds)
            for process in copies:
                process.start()
            return f"no timeline worker for {fault.seconds}s"
        kind = fault.kind.split()[1]
        assert kind in WORKER_KINDS
        process = d.workers[kind][int(fault.target)]
        process.kill()
        pause = self._rng.uniform(0.0, 0.8)
        await asyncio.sleep(pause)  # dead for a moment: its entries wait for a reclaim
        process.start()
        return f"{process.name} restarted after {pause:.2f}s"

    async def _fail_over(self, cluster: LocalCluster) -> str:
        """SIGKILL a master; once its replica took over, start it again (from this thread:
        PDEATHSIG follows the starting thread) and wait until it is a replica in sync."""
        masters = await asyncio.to_thread(cluster.masters)
        master = self._rng.choice(masters)
        began = time.monotonic()
        promoted = await asyncio.to_thread(cluster.kill_master, master)
        took = time.monotonic() - began
        master.start()
        await asyncio.to_thread(cluster.wait_ready)
        return f"master {master.port} killed, replica {promoted.port} took over in {took:.1f}s"

    async def _reshard(self, cluster: LocalCluster, partitions: int) -> str:
        """Move a master's slots, lowest first, up to one of Muster's partitions' slot, to
        another master (redis-cli moves a source's lowest slots first)."""
        masters = await asyncio.to_thread(cluster.masters)
        wanted = {redis.crc.key_slot(keys.events(p).encode()) for p in range(partitions)}
        moves = []
        for source in masters:
            slots = await asyncio.to_thread(_slots_of, cluster, source)
            for count, slot in enumerate(slots, start=1):
                if slot in wanted:
                    moves.append((count, source))
                    break
        count, source = min(moves, key=lambda move: move[0])
        target = self._rng.choice([m for m in masters if m is not source])
        began = time.monotonic()
        await asyncio.to_thread(cluster.reshard, source, target, count)
        return (
            f"{count} slots (a partition's among them) moved {source.port} -> {target.port} "
            f"in {time.monotonic() - began:.1f}s"
        )


def _slots_of(cluster: LocalCluster, node: LocalNode) -> list[int]:
    """The slots `node` serves, lowest first."""
    return [slot for lo, hi in sorted(cluster.slot_ranges(node)) for slot in range(lo, hi + 1)]
