"""Projection families: the one SCAN pass finds exactly each family's keys, and dropping
them leaves everything that is not a projection (the log, dead letters, idempotency...)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from muster import keys
from muster.projections import families as projections

pytestmark = pytest.mark.anyio

PARTITIONS = 3


def _one_key_per_pattern() -> dict[str, set[bytes]]:
    """A key for every pattern of every family ("*" filled in), by family."""
    return {
        name: {p.replace("*", "a:1").encode() for p in family.patterns(PARTITIONS)}
        for name, family in projections.FAMILIES.items()
    }


NOT_PROJECTIONS = [
    *(keys.events(p) for p in range(PARTITIONS)),
    *(keys.dead_letters(p) for p in range(PARTITIONS)),
    keys.idempotency(1, "pat", "k"),
    keys.archive_head(2),
    keys.LIVE,
    keys.ROLLCALL_LIVE,
    "other-app:home:x",  # not ours at all
]


async def _fill(redis: aioredis.Redis, names: set[bytes] | list[str]) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.set(name, "x")
        await pipe.execute()


async def test_one_pass_finds_each_familys_keys_and_only_them(aredis: aioredis.Redis) -> None:
    expected = _one_key_per_pattern()
    everything = set().union(*expected.values())
    assert sum(map(len, expected.values())) == len(everything)  # families are disjoint
    await _fill(aredis, everything)
    await _fill(aredis, NOT_PROJECTIONS)
    found = await projections.family_keys(aredis, projections.ALL, PARTITIONS)
    assert {name: set(names) for name, names in found.items()} == expected
    only = await projections.family_keys(aredis, ("timelines", "audit"), PARTITIONS)
    assert set(only) == {"timelines", "audit"}
    assert set(only["audit"]) == expected["audit"]


async def test_drop_leaves_what_is_not_a_projection(aredis: aioredis.Redis) -> None:
    expected = _one_key_per_pattern()
    await _fill(aredis, set().union(*expected.values()))
    await _fill(aredis, NOT_PROJECTIONS)
    dropped = await projections.drop(aredis, ("graph", "posts", "timelines"), PARTITIONS)
    assert dropped == sum(len(expected[n]) for n in ("graph", "posts", "timelines"))
    left = {key async for key in aredis.scan_iter(count=1000)}
    kept = {n.encode() for n in NOT_PROJECTIONS}
    assert left == kept | set().union(
        *(expected[n] for n in ("dms", "deliveries", "audit", "accounts"))
    )
