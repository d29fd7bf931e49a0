"""What the people of a chaos run do, through the HTTP API only (what they got: ledger.py).

The cast (`build_cast`, made before any fault): members `m00`, `m01`, ... (some with an email
address, a phone, a webhook, some taking DMs on every channel), an admin `boss` besides the
bootstrap `admin`, externals `x0`, ... (every contact point), teams `ops` and `infra` with
posters (an external among infra's), a service `svc`. Every member and admin is enrolled in
`ops` (`all_members`, mandatory), and everyone follows a few accounts on a few channels.

Then lanes of activity run side by side until a deadline or their budget: each lane has its
own people and its own `random.Random` seeded from the run's seed, and one person's requests
always go through one lane, one after another. People post (as themselves or a team they
post for; internal or public; now and then critical), reply to posts they can see, send DMs,
follow, change channels and unfollow; the admin lane enrols lists of people, and once or
twice every member, in `infra` and other accounts. Every text starts with a marker —
`pub-000042-abcde` (public post), `int-…` (internal post), `dm-…` (DM) — that the checks look
for at the receivers, in public reads and in the logs.

Every acknowledged write goes into the `Ledger`, with when it was first sent and when it was
answered. Posts and DMs carry an `Idempotency-Key`, so a retried one is never a second post.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from chaos.client import Answer, Api
from chaos.ledger import (
    OFFAPP,
    SERVICE,
    TEAMS,
    Account,
    Cast,
    Change,
    DmRecord,
    Ledger,
    PostRecord,
    marker,
)
from chaos.processes import ADMIN_TOKEN
from chaos.receivers import Receivers

_WORDS = (
    "db failover",
    "status page",
    "deploy done",
    "call me",
    "bridge open",
    "rollback",
    "all clear",
    "eta 5 min",
    "disk full",
    "cert renewed",
)


@dataclass
class Shape:
    """How big a run's cast and workload are."""

    members: int = 18
    externals: int = 3
    lanes: int = 6
    rate: float = 18.0  # operations per second, all lanes together, aimed at
    budget: int = 600  # operations at most, all lanes together
    all_members_enrolments: int = 1  # during the faults (setup makes one of its own)


class Workload:
    def __init__(
        self, api: Api, receivers: Receivers, seed: int, shape: Shape, ledger: Ledger
    ) -> None:
        self.api = api
        self.receivers = receivers
        self.seed = seed
        self.shape = shape
        self.ledger = ledger
        self.cast = Cast()
        self._all_members_left = shape.all_members_enrolments

    # --- set-up (before any fault) -------------------------------------------------------------
    async def build_cast(self, settled: Callable[[], Awaitable[object]]) -> None:
        """Accounts, posters, DM channels, the `ops` enrolment and first follows. `settled()`
        waits until the workers caught up: the enrolment is expanded before anyone follows,
        so every set-up follow has one known end state."""
        rng = random.Random(f"{self.seed}:cast")
        cast = self.cast
        cast.accounts["admin"] = Account("admin", "person", "admin", ADMIN_TOKEN)
        await self._person(Account("boss", "person", "admin", webhook=True), email=True, phone=1)
        for i in range(self.shape.members):
            dm_all = i % 5 == 0
            await self._person(
                Account(
                    f"m{i:02d}",
                    "person",
                    "member",
                    webhook=i % 4 == 1,
                    dm_channels=("app", *OFFAPP) if dm_all else ("app", "email"),
                ),
                email=i % 2 == 0,
                phone=100 + i if i % 3 == 0 else None,
            )
        for i in range(self.shape.externals):
            await self._person(
                Account(
                    f"x{i}",
                    "person",
                    "external",
                    webhook=True,
                    dm_channels=("app", *OFFAPP) if i == 0 else ("app", "email"),
                ),
                email=True,
                phone=900 + i,
            )
        body = await self.api.ok(
            "POST",
            "/v1/accounts",
            token=ADMIN_TOKEN,
            json={"handle": SERVICE, "kind": "service"},
        )
        cast.accounts[SERVICE] = Account(SERVICE, "service", token=body["token"], dm_channels=())
        for team in TEAMS:
            await self.api.ok(
                "POST", "/v1/accounts", token=ADMIN_TOKEN, json={"handle": team, "kind": "team"}
            )
            cast.accounts[team] = Account(team, "team", dm_channels=())
        posters = {"ops": ["m00", "m01", "m02", "boss"], "infra": ["m03", "m04", "x0"]}
        for team, handles in posters.items():
            for handle in handles:
                await self.api.ok("PUT", f"/v1/accounts/{team}/posters/{handle}", token=ADMIN_TOKEN)
                person = cast[handle]
                person.poster_of = (*person.poster_of, team)
        for person in cast.people:
            if person.handle != "admin" and person.dm_channels != ("app", "email"):
                await self.api.ok(
                    "PATCH",
                    "/v1/me",
                    token=person.token,
                    json={"dm_channels": list(person.dm_channels)},
                )
        await self.enrol("ops", "all_members", ("app",), mandatory=True, setup=True, count=False)
        await settled()
        for person in cast.people:
            picks = self._followable(person)
            for account in rng.sample(picks, k=min(len(picks), rng.randint(2, 4))):
                await self.follow(person, account, rng, setup=True, count=False)

    async def _person(self, account: Account, *, email: bool, phone: int | None) -> None:
        body: dict[str, Any] = {"handle": account.handle, "kind": "person", "role": account.role}
        if email:
            account.email = f"{account.handle}@people.chaos.test"
            body["email"] = account.email
        if phone is not None:
            account.phone = f"+1555{phone:07d}"
            body["phone"] = account.phone
        if account.webhook:
            body["webhook_url"] = self.receivers.webhooks.endpoint(account.handle)
        created = await self.api.ok("POST", "/v1/accounts", token=ADMIN_TOKEN, json=body)
        account.token = created["token"]
        if account.webhook:
            self.receivers.webhooks.secrets[account.handle] = created["webhook_secret"]
        self.cast.accounts[account.handle] = account

    def _followable(self, person: Account) -> list[str]:
        return [h for h, a in self.cast.accounts.items() if h != person.handle and h != "admin"]

    # --- the lanes -----------------------------------------------------------------------------
    async def run(self, seconds: float) -> None:
        """Every lane, until `seconds` have passed or the budget is spent."""
        until = time.monotonic() + seconds
        lanes = max(2, self.shape.lanes)
        actors = [a for a in self.cast.people if a.handle != "admin"] + [self.cast[SERVICE]]
        shuffled = random.Random(f"{self.seed}:lanes").sample(actors, k=len(actors))
        groups = [shuffled[i :: lanes - 1] for i in range(lanes - 1)]
        per_lane = max(1, self.shape.budget // lanes)
        gap = lanes / self.shape.rate
        await asyncio.gather(
            self._lane("admin", [self.cast["admin"]], until, per_lane, gap),
            *(self._lane(str(n), group, until, per_lane, gap) for n, group in enumerate(groups)),
        )

    async def _lane(
        self, name: str, actors: list[Account], until: float, budget: int, gap: float
    ) -> None:
        rng = random.Random(f"{self.seed}:lane:{name}")
        for _ in range(budget):
            if time.monotonic() >= until:
                return
            began = time.monotonic()
            actor = rng.choice(actors)
            await self._one(actor, rng)
            spent = time.monotonic() - began
            # pacing, not synchronisation: each lane aims at its share of the rate
            await asyncio.sleep(max(0.0, rng.uniform(0.0, 2 * gap) - spent))

    async def _one(self, actor: Account, rng: random.Random) -> None:
        if actor.handle == "admin":
            roll = rng.random()
            if roll < 0.06 and self._all_members_left > 0:
                self._all_members_left -= 1
                channels = tuple(c for c in OFFAPP if rng.random() < 0.3)
                await self.enrol("infra", "all_members", ("app", *channels))
            elif roll < 0.5:
                account = rng.choice(["infra", SERVICE, "ops", *self._members(rng, 2)])
                people = [p.handle for p in self.cast.people if p.handle not in (account, "admin")]
                chosen = rng.sample(people, k=rng.randint(2, 5))
                channels = tuple(c for c in OFFAPP if rng.random() < 0.4)
                await self.enrol(account, chosen, ("app", *channels))
            elif roll < 0.85:
                await self.post(actor, rng)
            else:
                await self.dm(actor, rng)
            return
        if actor.kind == "service":
            await (self.post(actor, rng) if rng.random() < 0.6 else self.dm(actor, rng))
            return
        roll = rng.random()
        if roll < 0.30:
            await self.post(actor, rng)
        elif roll < 0.40:
            await self.reply(actor, rng)
        elif roll < 0.60:
            await self.dm(actor, rng)
        elif roll < 0.80:
            await self.follow(actor, rng.choice(self._followable(actor)), rng)
        else:
            await self.unfollow(actor, rng)

    def _members(self, rng: random.Random, k: int) -> list[str]:
        members = [p.handle for p in self.cast.people if p.role == "member"]
        return rng.sample(members, k=min(k, len(members)))

    # --- operations ----------------------------------------------------------------------------
    async def post(
        self, actor: Account, rng: random.Random, *, parent: PostRecord | None = None
    ) -> None:
        op = "reply" if parent else "post"
        as_account = actor.handle
        if actor.poster_of and rng.random() < 0.5:
            as_account = rng.choice(actor.poster_of)
        if actor.employee:
            public = rng.random() < 0.4
        else:  # externals post public only; a service either way
            public = actor.role == "external" or rng.random() < 0.5
        severity = rng.choices(("info", "warning", "critical"), (80, 12, 8))[0]
        number = self.ledger.next_number()
        tag = marker("pub" if public else "int", number, rng)
        text = f"{tag} {rng.choice(_WORDS)}"
        body: dict[str, Any] = {
            "text": text,
            "visibility": "public" if public else "internal",
            "severity": severity,
        }
        if as_account != actor.handle:
            body["as"] = as_account
        if parent is not None:
            body["in_reply_to"] = parent.id
        key = f"chaos-{self.seed}-{number}"
        answer = await self._send(
            op, "POST", "/v1/posts", actor, json=body, headers={"Idempotency-Key": key}
        )
        if severity == "critical" and any(c.startswith("429") for c in answer.causes):
            self.ledger.unexpected.append(f"critical post {key} was pushed back: {answer.causes}")
        if answer.ok:
            got = answer.body
            want = {
                "text": text,
                "author": actor.handle,
                "as_account": as_account,
                "visibility": body["visibility"],
                "severity": severity,
                "in_reply_to": body.get("in_reply_to"),
            }
            if {k: got.get(k) for k in want} != want:
                self.ledger.unexpected.append(f"post {key} answered {got}, sent {want}")
            self.ledger.posts[got["id"]] = PostRecord(
                got["id"],
                actor.handle,
                as_account,
                text,
                tag,
                body["visibility"],
                severity,
                body.get("in_reply_to"),
                answer.sent,
                answer.answered,
                key,
            )

    async def reply(self, actor: Account, rng: random.Random) -> None:
        visible = [
            p
            for p in list(self.ledger.posts.values())[-200:]
            if p.visibility == "public" or actor.employee
        ]
        if not visible:
            await self.post(actor, rng)
            return
        await self.post(actor, rng, parent=rng.choice(visible))

    async def dm(self, actor: Account, rng: random.Random) -> None:
        others = [p for p in self.cast.people if p.handle != actor.handle]
        recipient = rng.choice(others)
        number = self.ledger.next_number()
        tag = marker("dm", number, rng)
        text = f"{tag} {rng.choice(_WORDS)}"
        key = f"chaos-{self.seed}-{number}"
        answer = await self._send(
            "dm",
            "POST",
            "/v1/dms",
            actor,
            json={"to": recipient.handle, "text": text},
            headers={"Idempotency-Key": key},
        )
        if answer.ok:
            got = answer.body
            if (got.get("from"), got.get("to"), got.get("text")) != (
                actor.handle,
                recipient.handle,
                text,
            ):
                self.ledger.unexpected.append(f"dm {key} answered {got}")
            self.ledger.dms[got["id"]] = DmRecord(
                got["id"],
                actor.handle,
                recipient.handle,
                text,
                tag,
                answer.sent,
                answer.answered,
                key,
            )

    async def follow(
        self,
        actor: Account,
        account: str,
        rng: random.Random,
        *,
        setup: bool = False,
        count: bool = True,
    ) -> None:
        channels = [c for c in OFFAPP if rng.random() < 0.4]
        answer = await self._send(
            "follow",
            "PUT",
            f"/v1/me/follows/{account}",
            actor,
            json={"channels": channels},
            count=count,
        )
        if answer.ok:
            got = answer.body
            want = ("app", *channels)
            if tuple(got["channels"]) != want:
                self.ledger.unexpected.append(f"follow {actor.handle}→{account}: {got}")
            self.ledger.change(
                actor.handle,
                account,
                Change(
                    "follow",
                    tuple(got["channels"]),
                    bool(got["mandatory"]),
                    answer.sent,
                    answer.answered,
                    answer.status,
                    setup,
                ),
            )

    async def unfollow(self, actor: Account, rng: random.Random) -> None:
        followed = [
            account
            for (follower, account), changes in self.ledger.changes.items()
            if follower == actor.handle and changes[-1].kind != "unfollow"
        ]
        account = rng.choice(followed or self._followable(actor))
        answer = await self._send("unfollow", "DELETE", f"/v1/me/follows/{account}", actor)
        if answer.ok or answer.code == "mandatory_follow":
            self.ledger.change(
                actor.handle,
                account,
                Change("unfollow", (), False, answer.sent, answer.answered, answer.status, False),
            )

    async def enrol(
        self,
        account: str,
        followers: list[str] | str,
        channels: tuple[str, ...],
        *,
        mandatory: bool = False,
        setup: bool = False,
        count: bool = True,
    ) -> None:
        answer = await self._send(
            "enrol",
            "PUT",
            f"/v1/accounts/{account}/enrolments",
            self.cast["admin"],
            json={"followers": followers, "channels": list(channels), "mandatory": mandatory},
            count=count,
        )
        if not answer.ok:
            return
        if followers == "all_members":
            followers = [p.handle for p in self.cast.employees if p.handle != account]
        assert isinstance(followers, list)
        for follower in followers:
            self.ledger.change(
                follower,
                account,
                Change(
                    "enrol",
                    channels,
                    mandatory,
                    answer.sent,
                    answer.answered,
                    answer.status,
                    setup,
                ),
            )

    async def _send(
        self,
        op: str,
        method: str,
        path: str,
        actor: Account,
        *,
        count: bool = True,
        **kw: Any,
    ) -> Answer:
        if count:
            self.ledger.attempted[op] += 1
        answer = await self.api.call(method, path, token=actor.token, **kw)
        if answer.ok:
            if count:
                self.ledger.acknowledged[op] += 1
        else:
            self.ledger.refused[f"{op} {answer.status} {answer.code}"] += 1
        return answer
