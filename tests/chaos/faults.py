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

Faults are injected one after another: a kill's restart (and the api's or Redis's return) is
finished before the next fault starts.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from chaos.processes import WORKER_KINDS, Deployment

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

    def counts(self) -> Counter[str]:
        return Counter(fault.kind for _, fault, _ in self.done)


def plan(seed: int, seconds: float, faults: int, copies: int) -> list[Fault]:
    rng = random.Random(f"{seed}:faults")
    kinds = list(KINDS)
    while len(kinds) < faults:
        kinds.append(rng.choice(KINDS[:3] + KINDS[:3] + KINDS))  # single kills twice as often
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
