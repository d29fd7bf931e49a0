"""Replay: a rebuild equals the original, nothing is sent again, live traffic is not lost.

The state is made through the HTTP API by the real timeline and audit workers (scenario.py),
its checksum taken (`projections.checksum`, what `muster projections checksum` prints), then
projections are dropped and rebuilt with `replay()` — the function the rq job runs — from the
event log and from the archive, with 1 and 3 partitions.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from audit import replay_targets
from audit.conftest import OpenSystem, archived
from audit.scenario import THRESHOLD, make_history
from muster import events, keys, streamids
from muster.connection import text
from muster.ops import processes
from muster.ops import replay as replay_module
from muster.ops.replay import (
    ReplayError,
    ReplayRequest,
    ReplayWorkerFailed,
    owned_by,
    replay,
    workers_for,
)
from muster.ops.verify import verify
from muster.projections import families as projections
from muster.projections.timeline import Timeline, ordering_partition
from muster.records import decode_request
from muster.settings import Settings

pytestmark = pytest.mark.anyio

EVERYTHING = tuple(f for f in projections.ALL if f != "deliveries")


@pytest.fixture
def replay_settings(audit_settings: Settings) -> Settings:
    return msgspec.structs.replace(audit_settings, fanout_on_read_threshold=THRESHOLD)


async def digest(redis: aioredis.Redis, settings: Settings) -> dict[str, tuple[str, int]]:
    return (await projections.checksum(redis, settings.partitions)).families


async def requests(redis: aioredis.Redis) -> list[tuple[str, str, str]]:
    """(message id, recipient, channel) of every delivery request, oldest first."""
    found = []
    for channel in keys.OFFAPP_CHANNELS:
        entries: Any = await redis.xrange(keys.deliveries(0, channel))
        for _, fields in entries:
            r = decode_request(fields[events.STREAM_FIELD])
            found.append((r.message_id, r.recipient, r.channel))
    return found


async def delivery_backlog(redis: aioredis.Redis, partitions: int) -> int:
    total = 0
    for p in range(partitions):
        for channel in keys.OFFAPP_CHANNELS:
            total += int(await redis.xlen(keys.deliveries(p, channel)))
    return total


@pytest.mark.parametrize(("partitions", "workers"), [(1, 1), (3, 1), (3, 3)])
@pytest.mark.parametrize("source", ["log", "archive"])
async def test_a_rebuild_equals_the_original(
    replay_settings: Settings,
    open_system: OpenSystem,
    partitions: int,
    workers: int,
    source: str,
) -> None:
    """In one process or in one per partition (workers=3: spawned processes, each reading
    the whole history and applying its own partition's share), the same projections."""
    settings = msgspec.structs.replace(replay_settings, partitions=partitions)
    async with open_system(settings) as s:
        await make_history(s)
        before = await digest(s.redis, settings)
        assert before["timelines"][1] > 0
        assert before["audit"][1] > 0
        assert before["deliveries"][1] > 0  # routed live (the delivery workers are not running)
        backlog = await delivery_backlog(s.redis, partitions)
        assert await s.redis.scard(keys.BIG_ACCOUNTS) == 1  # ops, merged at read
        request = ReplayRequest(
            projections=EVERYTHING, from_archive=source == "archive", batch=7, workers=workers
        )
        result = await replay(s.redis, settings, request)
        assert result.workers == workers
        assert result.events == len(await s.log_events())
        assert result.dropped_keys > 0
        after = await digest(s.redis, settings)
        assert after == before
        assert await delivery_backlog(s.redis, partitions) == backlog  # nothing sent again
        await s.settle()  # the live workers were never disturbed


async def test_partitions_are_replayed_side_by_side_each_in_its_order(
    replay_settings: Settings, open_system: OpenSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One applier per partition (here in one process, where the test can watch them): their
    timeline batches overlap in time, each holds the events of one ordering partition (a
    follow goes with the account followed) in log order."""
    settings = msgspec.structs.replace(replay_settings, partitions=3)
    calls: list[list[events.AnyEvent]] = []
    running = 0
    most = 0
    original = Timeline.apply_batch

    async def watched(self: Timeline, batch: list[events.AnyEvent]) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        calls.append(list(batch))
        try:
            await asyncio.sleep(0)  # let the other workers' batches start meanwhile
            await original(self, batch)
        finally:
            running -= 1

    async with open_system(settings) as s:
        await make_history(s)
        before = await digest(s.redis, settings)
        entries = sorted(await s.log_events(), key=lambda pair: streamids.parse(pair[0]))
        log_order = [event.id for _, event in entries]
        monkeypatch.setattr(Timeline, "apply_batch", watched)
        request = ReplayRequest(projections=EVERYTHING, batch=3, workers=1)
        await replay(s.redis, settings, request)
        assert await digest(s.redis, settings) == before
    assert most >= 2, "the partitions were applied one after the other"
    position = {event_id: n for n, event_id in enumerate(log_order)}
    seen: dict[int, list[int]] = {}
    for batch in calls:
        (partition,) = {ordering_partition(e, settings.partitions) for e in batch}
        seen.setdefault(partition, []).extend(position[e.id] for e in batch)
    assert len(seen) > 1
    for partition, positions in seen.items():
        assert positions == sorted(positions), f"partition {partition} out of log order"
    follows = [e for batch in calls for e in batch if isinstance(e, events.AccountFollowed)]
    assert follows
    for follow in follows:
        assert ordering_partition(follow, 3) == keys.partition_of(follow.account, 3)


async def test_a_worker_that_dies_fails_the_replay_and_names_its_partitions(
    replay_settings: Settings, open_system: OpenSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = msgspec.structs.replace(replay_settings, partitions=6)
    async with open_system(settings) as s:
        await make_history(s)
        before = await digest(s.redis, settings)
        monkeypatch.setattr(replay_module, "_work", replay_targets.die_in_worker_1)
        request = ReplayRequest(projections=EVERYTHING, batch=5, workers=3)
        with pytest.raises(ReplayWorkerFailed) as failed:
            await replay(s.redis, settings, request)
        assert str(failed.value).startswith(
            "replay worker 1 of 3 (partitions 1, 4) failed: the process ended without "
            "finishing (exit status 137)"
        )
        assert "run the replay again" in str(failed.value)
        assert not [p for p in multiprocessing.active_children() if "replay" in p.name]
        monkeypatch.undo()
        await replay(s.redis, settings, request)  # run again: all there
        assert await digest(s.redis, settings) == before


async def test_a_worker_that_fails_stops_the_replay_and_names_its_partition(
    replay_settings: Settings, open_system: OpenSystem
) -> None:
    settings = msgspec.structs.replace(replay_settings, partitions=3)
    async with open_system(settings) as s:
        await make_history(s)
        p = keys.partition_of("ops", 3)
        broken = keys.account_log(p, "ops")
        await s.redis.delete(broken)
        await s.redis.set(broken, "not a sorted set")  # every write of ops's posts fails
        request = ReplayRequest(projections=("timelines",), workers=3)
        with pytest.raises(
            ReplayWorkerFailed,
            match=rf"^replay worker {p} of 3 \(partitions {p}\) failed: .*WRONGTYPE",
        ):
            await replay(s.redis, settings, request)
        assert not [p for p in multiprocessing.active_children() if "replay" in p.name]


async def test_a_dead_worker_is_noticed_while_the_others_still_report() -> None:
    """Worker 1 dies at once while the others report every 10 ms for a minute: the run fails
    within seconds, naming it, and stops the others."""
    reports = 0

    def applied(count: int) -> None:
        nonlocal reports
        reports += count

    began = time.monotonic()
    with pytest.raises(processes.WorkerFailed) as failed:
        await processes.run(replay_targets.report_or_die, [0, 1, 2], applied, name="test-run")
    took = time.monotonic() - began
    assert failed.value.index == 1
    assert "exit status 137" in str(failed.value)
    assert took < replay_targets.REPORT_FOR_S / 2, f"noticed after {took:.0f} s"
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("test-run")]


def test_workers_are_one_per_partition_up_to_the_cpus_and_never_more_than_partitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    twelve = Settings(partitions=12)
    monkeypatch.setattr(processes, "available_cpus", lambda: 4)
    assert workers_for(ReplayRequest(), twelve) == 4
    assert workers_for(ReplayRequest(workers=8), twelve) == 8
    assert workers_for(ReplayRequest(workers=50), twelve) == 12
    assert workers_for(ReplayRequest(), Settings(partitions=2)) == 2
    with pytest.raises(ReplayError, match="at least 1"):
        workers_for(ReplayRequest(workers=0), twelve)
    shares = [owned_by(w, 4, 10) for w in range(4)]
    assert shares == [(0, 4, 8), (1, 5, 9), (2, 6), (3, 7)]


def test_the_cpus_available_are_bounded_by_the_cgroup_quota(tmp_path: Path) -> None:
    """A Kubernetes CPU limit is a cgroup quota, which os.cpu_count() does not see."""
    usable = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    assert processes.available_cpus(cpu_max) == usable  # no cgroup file: the affinity
    cpu_max.write_text("max 100000\n")
    assert processes.available_cpus(cpu_max) == usable
    cpu_max.write_text("100000 100000\n")
    assert processes.available_cpus(cpu_max) == 1
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs: two processes can use them
    assert processes.available_cpus(cpu_max) == min(2, usable)
    cpu_max.write_text("10000 100000\n")  # a tenth of a CPU: still one
    assert processes.available_cpus(cpu_max) == 1


async def test_the_default_rebuild_drops_only_what_it_rebuilds(
    replay_settings: Settings, open_system: OpenSystem
) -> None:
    async with open_system(replay_settings) as s:
        await make_history(s)
        before = await digest(s.redis, replay_settings)
        account = keys.account(0, "pat")
        await s.redis.hset(account, "marker", "kept")  # the write side is not in the default
        home = keys.home(0, "mia")
        await s.redis.zadd(home, {"1": 0})  # junk in a projection is rebuilt away
        result = await replay(s.redis, replay_settings, ReplayRequest())
        assert result.projections == list(projections.DEFAULT_REPLAY)
        assert await s.redis.hget(account, "marker") == b"kept"
        assert await s.redis.zscore(home, "1") is None
        await s.redis.hdel(account, "marker")
        assert await digest(s.redis, replay_settings) == before


async def test_the_write_side_rebuilt_from_the_log_is_what_the_api_wrote(
    replay_settings: Settings, open_system: OpenSystem
) -> None:
    async with open_system(replay_settings) as s:
        t = await make_history(s)
    # The bootstrap token changes: a restarted api resets admin's token (AccountTokenReset).
    new_admin = "adm-N3wT0k3nQ8v3Lk2xR7pN4tZ9wB6cY1mH"
    changed = msgspec.structs.replace(replay_settings, admin_token=new_admin)
    async with open_system(changed) as s:
        assert (await s.call("GET", "/v1/me", token=new_admin)).status_code == 200
        kinds = {type(e).__name__ for _, e in await s.log_events()}
        assert {"AccountTokenReset", "ContactPointsChanged", "PosterRevoked"} <= kinds
        assert {"FollowerEnrolled", "MembersEnrolled", "FollowChannelsChanged"} <= kinds
        assert {"AccountDeactivated", "AccountReactivated", "AuditRead"} <= kinds
        assert {"NamedTokenCreated", "NamedTokenRevoked"} <= kinds
        before = await projections.checksum(s.redis, 1, ("accounts",))
        assert before.families["accounts"][1] > 20
        result = await replay(s.redis, changed, ReplayRequest(projections=("accounts",)))
        assert result.dropped_keys == before.families["accounts"][1]
        assert await projections.checksum(s.redis, 1, ("accounts",)) == before
        assert (await s.call("GET", "/v1/me", token=new_admin)).status_code == 200
        assert (await s.call("GET", "/v1/me", token=replay_settings.admin_token)).status_code == 401
        works = {h: (await s.call("GET", "/v1/me", token=t[h])).status_code for h in t}
        assert works == {
            **dict.fromkeys(t, 200),
            "tom_old": 401,
            "pat_old": 401,
            "leo": 401,
        }


async def test_redeliver_routes_deliveries_again_and_only_then(
    replay_settings: Settings, open_system: OpenSystem
) -> None:
    async with open_system(replay_settings) as s:
        await make_history(s)
        with pytest.raises(ReplayError, match="--redeliver"):
            await replay(s.redis, replay_settings, ReplayRequest(projections=("deliveries",)))
        backlog = await delivery_backlog(s.redis, 1)
        statuses = (await digest(s.redis, replay_settings))["deliveries"]
        assert backlog > 0
        # With statuses still there, redelivering sends nothing twice...
        await replay(
            s.redis,
            replay_settings,
            ReplayRequest(since="0", projections=("posts",), redeliver=True),
        )
        assert await delivery_backlog(s.redis, 1) == backlog
        # ...and with them dropped, every delivery still possible is requested once more;
        # never an escalation's (its message id `<roll-call>-<round>...`): those are sent
        # by the escalation worker when a round fires, never by replay.
        everything = await requests(s.redis)
        original = [r for r in everything if "-" not in r[0]]
        assert len(original) < len(everything)
        result = await replay(
            s.redis, replay_settings, ReplayRequest(projections=("deliveries",), redeliver=True)
        )
        assert result.dropped_keys == statuses[1]
        again = list((Counter(await requests(s.redis)) - Counter(everything)).elements())
        # Routed as the live path routes now, on the follows and contact points as they are:
        # mia has since removed her email address, so none of hers is requested again.
        assert sorted(again) == sorted(r for r in original if r[1:] != ("mia", "email"))
        assert any(r[1:] == ("mia", "email") for r in original)


async def test_since_catches_up_after_an_outage_without_dropping(
    replay_settings: Settings, open_system: OpenSystem
) -> None:
    async with open_system(replay_settings) as s:
        tokens = await make_history(s)
        whole = await digest(s.redis, replay_settings)
    async with open_system(replay_settings, workers=("audit",)) as s:  # the timeline worker is down
        missed = [await s.post(tokens["pat"], f"while down {i}", as_="infra") for i in range(4)]
        await s.dm(tokens["mia"], "pat", "are you there?")
        mia = keys.home(0, "mia")
        assert await s.redis.zscore(mia, keys.home_member(missed[0]["id"])) is None
        result = await replay(
            s.redis,
            replay_settings,
            ReplayRequest(since=missed[0]["id"], projections=("timelines",)),
        )
        assert result.events == 5
        assert result.dropped_keys == 0
        assert await s.redis.zscore(mia, keys.home_member(missed[-1]["id"])) == 0
        await s.settle()  # the audit worker has indexed what was posted (it is in the digest)
        caught_up = await digest(s.redis, replay_settings)
    assert caught_up["accounts"] == whole["accounts"]
    # The timeline worker, back, handles what it missed: projections stay as caught up (it
    # also routes the deliveries it never routed, which replay without --redeliver did not).
    async with open_system(replay_settings) as s:
        await s.settle()
        back = await digest(s.redis, replay_settings)
        assert without_deliveries(back) == without_deliveries(caught_up)
        assert back["deliveries"][1] > caught_up["deliveries"][1]
        await replay(s.redis, replay_settings, ReplayRequest())  # and a full rebuild agrees
        assert await digest(s.redis, replay_settings) == back


def without_deliveries(families: dict[str, tuple[str, int]]) -> dict[str, tuple[str, int]]:
    return {name: value for name, value in families.items() if name != "deliveries"}


async def test_replay_while_posts_keep_arriving_loses_and_duplicates_nothing(
    replay_settings: Settings, open_system: OpenSystem
) -> None:
    settings = msgspec.structs.replace(
        replay_settings,
        fanout_on_read_threshold=10_000,
        timeline_max=10_000,  # nothing trimmed
    )
    async with open_system(settings) as s:
        pat = await s.person("pat")
        readers = {h: await s.person(h) for h in ("ann", "bob", "cy")}
        await s.team("ops", "pat")
        for token in readers.values():
            await s.follow(token, "ops")
        await s.settle()
        for i in range(300):  # a history that takes the replay a while
            await s.post(pat, f"before {i}", as_="ops")
        await s.settle()
        posted: list[str] = [
            e.id for _, e in await s.log_events() if isinstance(e, events.PostPublished)
        ]
        during: list[str] = []
        replaying = asyncio.Event()
        finished = asyncio.Event()

        async def keep_posting() -> None:
            await replaying.wait()
            i = 0
            while (not finished.is_set() or i < 20) and i < 1000:
                during.append((await s.post(pat, f"during {i}", as_="ops"))["id"])
                i += 1
                await asyncio.sleep(0)

        def progress(phase: str, done: int, total: int, rate: float) -> None:
            replaying.set()  # from the drop on: posts arrive while keys go and come back

        poster = asyncio.create_task(keep_posting())
        try:
            await replay(s.redis, settings, ReplayRequest(batch=10), progress)
            accepted_during_replay = len(during)
        finally:
            finished.set()
            await asyncio.wait_for(poster, timeout=30)
        assert accepted_during_replay >= 10, "too few posts arrived while the replay ran"
        await s.settle()
        everything = posted + during
        for handle, token in readers.items():
            home = await s.ok("GET", "/v1/timelines/home?limit=100", token=token)
            page = [p["id"] for p in home]
            assert len(page) == len(set(page))
            home_key = keys.home(0, handle)
            stored = [keys.home_member(text(i)) for i in await s.redis.zrange(home_key, 0, -1)]
            assert sorted(stored, key=int) == sorted(everything, key=int), handle
        log = [text(i) for i in await s.redis.zrange(keys.account_log(0, "ops"), 0, -1)]
        assert sorted(log, key=int) == sorted(everything, key=int)
        indexed = await s.redis.zrange(keys.audit_by_type(0, "PostPublished"), 0, -1)
        assert sorted(text(i) for i in indexed) == sorted(everything)
        records = archived(settings.archive_dir)
        ids = [events.decode(bytes(r.event)).id for r in records]
        assert len(ids) == len(set(ids)) == len(await s.log_events())
        assert all(report.intact for report in verify(settings.archive_dir))
        # And what the live workers left is exactly what a quiet rebuild makes.
        live = await digest(s.redis, settings)
        await replay(s.redis, settings, ReplayRequest())
        assert await digest(s.redis, settings) == live


async def test_bad_requests_are_refused_before_anything_is_dropped(
    replay_settings: Settings, open_system: OpenSystem
) -> None:
    async with open_system(replay_settings) as s:
        await make_history(s)
        before = await digest(s.redis, replay_settings)
        for request, message in [
            (ReplayRequest(projections=("nonsense",)), "unknown projection"),
            (ReplayRequest(projections=("deliveries",)), "--redeliver"),
            (ReplayRequest(since="yesterday"), "event id"),
        ]:
            with pytest.raises(ReplayError, match=message):
                await replay(s.redis, replay_settings, request)
        empty = msgspec.structs.replace(
            replay_settings, archive_dir=replay_settings.archive_dir / "none"
        )
        with pytest.raises(ReplayError, match="no archive"):
            await replay(s.redis, empty, ReplayRequest(from_archive=True))
        assert await digest(s.redis, replay_settings) == before


def _ids_in(entries: Any) -> list[str]:
    return [text(i) for i, _ in entries]


async def test_progress_is_reported(replay_settings: Settings, open_system: OpenSystem) -> None:
    seen: list[tuple[str, int, int]] = []
    async with open_system(replay_settings) as s:
        await make_history(s)
        total = len(await s.log_events())
        await replay(
            s.redis,
            replay_settings,
            ReplayRequest(batch=5),
            lambda phase, done, all_, rate: seen.append((phase, done, all_)),
        )
    phases = [phase for phase, _, _ in seen]
    assert phases[0] == "dropping"
    assert phases[-1] == "done"
    done = [d for phase, d, _ in seen if phase == "replaying"]
    assert done == sorted(done)
    assert done[-1] == total
    assert len(done) > 3
    assert seen[-1] == ("done", total, total)


async def test_scripts_lost_by_the_server_are_loaded_again(
    replay_settings: Settings, open_system: OpenSystem
) -> None:
    async with open_system(replay_settings) as s:
        await make_history(s)
        expected = await digest(s.redis, replay_settings)
    async with open_system(replay_settings, workers=()) as s:
        await projections.drop(s.redis, projections.TIMELINE_FAMILIES, 1)
        logged = [e for _, e in await s.log_events()]
        timeline = Timeline(s.redis, replay_settings, route=False, announce=False)
        half = len(logged) // 2
        await timeline.apply_batch(logged[:half])
        await s.redis.script_flush()  # as after a restart: every script is gone
        await timeline.apply_batch(logged[half:])
        assert await digest(s.redis, replay_settings) == expected


@pytest.mark.parametrize("partitions", [1, 3])
async def test_replay_gives_the_same_roll_call_report_and_fires_nothing(
    replay_settings: Settings, open_system: OpenSystem, partitions: int
) -> None:
    """The escalated roll-call of the scenario: its report and list (levels, managers) are
    the same after every projection and the write side are rebuilt, and nothing is sent,
    armed or fired: no delivery request, no timer, no due round, no RollCallEscalated."""
    settings = msgspec.structs.replace(replay_settings, partitions=partitions)
    async with open_system(settings) as s:
        await make_history(s)
        (rc,) = [
            e.id
            for _, e in await s.log_events()
            if isinstance(e, events.PostPublished) and e.rollcall and e.rollcall.escalation
        ]
        admin = settings.admin_token

        async def seen() -> tuple[Any, ...]:
            report = await s.ok("GET", f"/v1/rollcalls/{rc}", token=admin)
            rows = await s.ok("GET", f"/v1/rollcalls/{rc}/recipients", token=admin)
            fired = [e for _, e in await s.log_events() if isinstance(e, events.RollCallEscalated)]
            timers = [
                await s.redis.zrange(keys.rollcall_timers(p), 0, -1, withscores=True)
                for p in range(partitions)
            ]
            due = [await s.redis.xlen(keys.rollcall_due(p)) for p in range(partitions)]
            backlog = await delivery_backlog(s.redis, partitions)
            return report, rows, len(fired), timers, due, backlog

        before = await seen()
        assert {r["escalation_level"] for r in before[1]} >= {1, 2}
        assert before[2] >= 3  # two steps and a remind fired
        assert sum(len(t) for t in before[3]) > 0  # armed, never moved (no worker runs here)
        assert "accounts" in EVERYTHING
        await replay(s.redis, settings, ReplayRequest(projections=EVERYTHING))
        assert await seen() == before
