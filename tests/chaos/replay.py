"""Check 5 of a chaos run, with the workers stopped: the archive verifies (`muster audit
verify`), and `muster projections checksum` is the same before and after `muster replay
--inline`; when it is not, the homes that differ are named (what the live workers made against
what the replay made).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

import redis.asyncio as aioredis

from chaos.checks import Outcome
from chaos.ledger import Ledger
from chaos.processes import Deployment
from muster import keys


async def replay_check(
    deployment: Deployment,
    redis: aioredis.Redis,
    ledger: Ledger | None = None,
    follows: Mapping[str, Collection[str]] | None = None,
) -> Outcome:
    """With the workers stopped: the archive verifies; checksum, replay, the same checksum.
    When the checksums differ, the homes that differ are named (what the live workers made
    against what the replay made)."""
    out = Outcome("archive intact, replay rebuilds the same projections")
    homes_before = await _homes(redis)
    code, verified = await deployment.command("audit", "verify")
    if code != 0:
        out.fail(f"muster audit verify exited {code}: {verified[-800:]}")
    before = await _checksum(deployment, out)
    code, replayed = await deployment.command("replay", "--inline")
    if code != 0:
        out.fail(f"muster replay --inline exited {code}: {replayed[-800:]}")
    after = await _checksum(deployment, out)
    differ = sorted(
        f for f in before["families"] if before["families"][f] != after["families"].get(f)
    )
    if differ:
        homes_after = await _homes(redis)
        changed = 0
        for key in sorted(set(homes_before) | set(homes_after)):
            owner = key.rsplit(":", 1)[1]
            live, rebuilt = homes_before.get(key, set()), homes_after.get(key, set())
            for post_id, was in [(i, "live only") for i in live - rebuilt] + [
                (i, "replay only") for i in rebuilt - live
            ]:
                changed += 1
                post = ledger.posts.get(post_id) if ledger is not None else None
                what = f"{post.marker} by {post.author} as {post.as_account}" if post else ""
                out.fail(f"{owner}'s home, {was}: {post_id} {what}")
        if differ != ["timelines"] or not changed:
            out.fail(f"checksums differ after the replay: {differ}")
    intact = [line for line in verified.splitlines() if ": intact, " in line]
    records = sum(int(line.split(": intact, ")[1].split()[0]) for line in intact)
    out.figures = {
        "partitions intact": len(intact),
        "archived records": records,
        "checksum": str(after.get("digest", "?"))[:16],
    }
    return out


async def _checksum(deployment: Deployment, out: Outcome) -> dict[str, Any]:
    code, printed = await deployment.command("projections", "checksum", "--json")
    if code != 0:
        out.fail(f"muster projections checksum exited {code}: {printed[-500:]}")
        return {"families": {}}
    found: dict[str, Any] = json.loads(printed)
    found["families"] = {name: row["digest"] for name, row in found["families"].items()}
    return found


async def _homes(redis: aioredis.Redis) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    async for raw in redis.scan_iter(match=keys.home_prefix(0).replace("{p0}", "{p*}") + "*"):
        key = raw.decode()
        members: Any = await redis.zrange(key, 0, -1)
        found[key] = {keys.home_member(m.decode()) for m in members}
    return found
