"""One chaos run, start to end: the engine both the CI test and the longer command use.

    report = await run(Config(seed=7, seconds=20))

1. start the receivers (receivers.py) and the deployment (processes.py): redis-server with
   AOF `appendfsync always`, `muster api`, two of each worker kind;
2. build the cast through the API and let it settle (workload.py) — no faults yet;
3. run the workload and the planned faults (faults.py) side by side for `seconds`;
4. stop faulting (every process up, every receiver answering) and wait, bounded, until the
   workers have done everything (settle.py);
5. read what is left (evidence.py) and run checks 1-4 (checks.py), then stop the workers
   (SIGTERM: they must exit 0) and run check 5 (replay.py: audit verify, checksum, replay,
   checksum); last, that every answer made sense (no 500, no refusal the workload did not
   expect) and no process died unasked.

The `Report` holds the figures and every check's outcome; `report.text()` prints them.
Everything started is stopped (killed if need be) on the way out, even when a step fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from chaos import checks, faults, privacy, replay, settle
from chaos.checks import Outcome
from chaos.client import Api, ClientStats
from chaos.evidence import gather
from chaos.ledger import Ledger
from chaos.processes import Deployment, RunSettings
from chaos.receivers import Receivers
from chaos.workload import Shape, Workload
from muster import keys
from muster.connection import text

SETUP_SETTLE_S = 30.0


@dataclass
class Config:
    seed: int
    seconds: float = 20.0  # of workload under faults
    faults: int = 12
    settle_within: float = 60.0
    shape: Shape = field(default_factory=Shape)
    run: RunSettings = field(default_factory=RunSettings)
    directory: Path | None = None  # kept afterwards when given; a temp dir otherwise


@dataclass
class Report:
    config: Config
    directory: Path | None = None
    ledger: Ledger = field(default_factory=Ledger)
    stats: ClientStats = field(default_factory=ClientStats)
    fault_log: faults.FaultLog = field(default_factory=faults.FaultLog)
    outcomes: list[Outcome] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    worker_exits: dict[str, int | None] = field(default_factory=dict)
    reclaimed: dict[str, int] = field(default_factory=dict)  # group → entries, from the logs
    unexpected_exits: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def passed(self) -> bool:
        return not self.error and all(o.passed for o in self.outcomes) and len(self.outcomes) == 6

    def text(self) -> str:
        c = self.config
        lines = [
            f"chaos run: seed {c.seed}, {c.seconds:g} s of workload, "
            f"{c.run.partitions} partitions, {c.run.copies} processes of each worker kind"
            + (
                f", a Redis Cluster of {c.run.masters} masters (MUSTER_WRITE_REPLICAS="
                f"{c.run.write_replicas})"
                if c.run.masters
                else ""
            ),
        ]
        if self.directory is not None:
            lines.append(f"  files (logs, data, archive): {self.directory}")
        for name, seconds in self.timings.items():
            lines.append(f"  {name}: {seconds:.1f} s")
        lines.append("operations (attempted / acknowledged):")
        for op in sorted(self.ledger.attempted):
            lines.append(
                f"  {op:<9} {self.ledger.attempted[op]:>6} / {self.ledger.acknowledged[op]:<6}"
            )
        if self.ledger.refused:
            refused = ", ".join(f"{k} x{n}" for k, n in sorted(self.ledger.refused.items()))
            lines.append(f"  final refusals: {refused}")
        lines.append(
            f"requests sent: {self.stats.requests}; sent again: "
            + (", ".join(f"{k} x{n}" for k, n in self.stats.retried.most_common()) or "none")
        )
        counts = self.fault_log.counts()
        lines.append(
            f"faults injected ({sum(counts.values())}): "
            + ", ".join(f"{k} x{n}" for k, n in sorted(counts.items()))
        )
        if self.fault_log.redis_down_s:
            lines.append(
                "  redis unreachable for "
                + ", ".join(f"{s:.2f}" for s in self.fault_log.redis_down_s)
                + " s; api back after "
                + ", ".join(f"{s:.2f}" for s in self.fault_log.api_down_s)
                + " s"
            )
        if self.fault_log.cluster_notes:
            lines.append("  cluster: " + "; ".join(self.fault_log.cluster_notes))
        if self.reclaimed:
            lines.append(
                "  entries a dead worker held, reclaimed by another: "
                + ", ".join(f"{g} {n}" for g, n in sorted(self.reclaimed.items()))
            )
        if self.fault_log.unexpected_restarts:
            lines.append(f"  processes that died unasked: {self.fault_log.unexpected_restarts}")
        if self.worker_exits:
            lines.append(f"exit codes on SIGTERM: {self.worker_exits}")
        lines.append("checks:")
        lines += [f"  {o.summary()}" for o in self.outcomes]
        for exit_note in self.unexpected_exits[:3]:
            lines.append(f"unexpected exit: {exit_note[-1500:]}")
        if self.error:
            lines.append(f"run failed: {self.error}")
        lines.append(f"result: {'PASS' if self.passed else 'FAIL'} (seed {c.seed})")
        return "\n".join(lines)


async def run(config: Config) -> Report:
    report = Report(config)
    keep = config.directory is not None
    directory = config.directory or Path(tempfile.mkdtemp(prefix="muster-chaos-"))
    directory.mkdir(parents=True, exist_ok=True)
    report.directory = directory if keep else None
    receivers = Receivers()
    deployment = Deployment(directory, receivers, config.run)
    await receivers.start()
    try:
        began = time.monotonic()
        await deployment.start()
        report.timings["start redis, api, workers"] = time.monotonic() - began
        await _run(config, report, deployment, receivers)
    except Exception as exc:
        errors = exc.exceptions if isinstance(exc, ExceptionGroup) else (exc,)
        report.error = "; ".join(f"{type(e).__name__}: {e}" for e in errors)
        report.error += "\n" + _tails(deployment)  # where things stood
    finally:
        deployment.kill_everything()
        await receivers.stop()
        report.unexpected_exits = [e for p in deployment.processes() for e in p.unexpected_exits]
        report.reclaimed = _reclaimed(deployment)
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)
    return report


async def _run(
    config: Config, report: Report, deployment: Deployment, receivers: Receivers
) -> None:
    assert deployment.redis is not None
    partitions = config.run.partitions
    api = Api(deployment.api_url, report.stats, seed=config.seed)
    redis = deployment.client()
    try:
        began = time.monotonic()
        workload = Workload(api, receivers, config.seed, config.shape, report.ledger)

        async def caught_up() -> float:
            return await settle.settle(
                redis, partitions, within=SETUP_SETTLE_S, alive=deployment.supervise
            )

        await workload.build_cast(caught_up)
        await caught_up()
        report.timings["cast set up and settled"] = time.monotonic() - began

        kinds = faults.CLUSTER_KINDS if deployment.cluster is not None else faults.KINDS
        plan = faults.plan(config.seed, config.seconds, config.faults, config.run.copies, kinds)
        injector = faults.Injector(deployment, plan, config.seed)
        report.fault_log = injector.log
        began = time.monotonic()
        async with asyncio.TaskGroup() as both:  # one failing stops the other
            both.create_task(workload.run(config.seconds))
            both.create_task(injector.run(began))
        report.timings["workload under faults"] = time.monotonic() - began

        began = time.monotonic()
        await _until_receivers_answer(receivers)
        await settle.settle(
            redis, partitions, within=config.settle_within, alive=_supervisor(deployment, report)
        )
        settled = time.monotonic()
        report.timings["settled, after the workload ended"] = settled - began
        report.timings["settled, after the last fault ended"] = settled - injector.log.last_ended

        began = time.monotonic()
        evidence = await gather(
            api, redis, workload.cast, receivers, partitions, deployment.archive_dir
        )
        cast, ledger = workload.cast, report.ledger
        report.outcomes.append(await checks.nothing_lost(api, cast, ledger, evidence))
        report.outcomes.append(checks.timelines(cast, ledger, evidence))
        report.outcomes.append(checks.deliveries(cast, ledger, evidence))
        await checks.delivery_reports(api, ledger, evidence, report.outcomes[-1])
        for dead in await _dead_letters(redis, partitions):
            report.outcomes[-1].fail(f"dead letter: {dead}")
        private = await privacy.privacy(api, cast, ledger, evidence)
        report.outcomes.append(private)
        report.worker_exits = await deployment.stop_workers()
        report.worker_exits["api"] = await deployment.stop_api()
        privacy.logs_clean(private, cast, ledger, deployment.log_files())
        replayed = await replay.replay_check(deployment, redis, ledger, evidence.follows)
        for name, code in report.worker_exits.items():
            # uvicorn ends a clean shutdown by raising the signal it caught again: -15
            if code != 0 and not (name == "api" and code == -signal.SIGTERM):
                replayed.fail(f"{name} exited {code} on SIGTERM")
        report.outcomes.append(replayed)
        report.outcomes.append(_sane(report, deployment))
        report.timings["checks"] = time.monotonic() - began
    finally:
        await api.aclose()
        await redis.aclose()


EXPECTED_REFUSALS = ("unfollow 403 mandatory_follow",)
"""Final 4xx answers the workload expects (a person unfollowing an account they were enrolled
in with no opt-out); any other means the workload or the api is wrong."""


def _sane(report: Report, deployment: Deployment) -> Outcome:
    out = Outcome("every answer made sense, no process died unasked")
    for error in report.stats.server_errors:
        out.fail(f"500 to {error}")
    for answer in report.ledger.unexpected:
        out.fail(answer)
    for refusal, n in report.ledger.refused.items():
        if refusal not in EXPECTED_REFUSALS:
            out.fail(f"refused {n} times: {refusal}")
    for process in deployment.processes():
        for note in process.unexpected_exits:
            out.fail(f"{process.name} died unasked: {note[-600:]}")
    out.figures = {"requests": report.stats.requests}
    return out


def _supervisor(deployment: Deployment, report: Report) -> Callable[[], None]:
    def alive() -> None:
        report.fault_log.unexpected_restarts += deployment.supervise()

    return alive


async def _until_receivers_answer(receivers: Receivers) -> None:
    deadline = time.monotonic() + 10
    while receivers.any_failing:
        assert time.monotonic() < deadline, "a receiver outage did not end"
        await asyncio.sleep(0.05)


async def _dead_letters(redis: aioredis.Redis, partitions: int) -> list[str]:
    found = []
    for p in range(partitions):
        entries: Any = await redis.xrange(keys.dead_letters(p))
        for _, fields in entries:
            row = {text(k): text(v) for k, v in fields.items() if k != b"e"}
            found.append(f"{row.get('group')} {row.get('stream')}: {row.get('error')}")
    return found


def _reclaimed(deployment: Deployment) -> dict[str, int]:
    """Entries the consumer loops reclaimed (their `reclaimed` log lines), by group."""
    found: dict[str, int] = {}
    for log in deployment.log_files():
        for line in log.read_text(errors="replace").splitlines():
            if '"reclaimed"' not in line:
                continue
            with contextlib.suppress(ValueError, TypeError):
                row = json.loads(line)
                if row.get("event") == "reclaimed":
                    group = str(row.get("group"))
                    found[group] = found.get(group, 0) + int(row.get("count", 0))
    return found


def _tails(deployment: Deployment) -> str:
    parts = []
    for process in deployment.processes():
        parts.append(f"--- {process.name} (started {process.starts}x)\n{process.tail(1500)}")
    return "\n".join(parts)
