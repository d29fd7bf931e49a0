"""What an account's public status shows, read once for every form of it: the status page,
the Statuspage JSON (statusapi.py) and the feeds (feeds.py).

Public data only: public incidents (internal ones are in other lists and never read here),
components, public posts. `version` is what the cache (pagecache.py) keys renderings by:
the account's change counter (keys.status_page: incidents, components, the page's look,
its display name) and its newest public post, read in one round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from muster import incidents as vocabulary
from muster import keys
from muster.api import incidents
from muster.api.reads import can_see
from muster.api.schemas import IncidentOut
from muster.api.state import ApiState
from muster.connection import text, texts
from muster.errors import NotFound
from muster.records import Account, Component, component_change_of
from muster.views import Post

PAST_DAYS = 14
"""Past incidents are shown for this many days before today, each day even when quiet."""
PAST_READ = 50
"""Resolved incidents read for the page (the newest; older ones are in the API)."""
POSTS_SHOWN = 20


@dataclass(frozen=True, slots=True)
class Version:
    changes: int
    changed_ms: int
    newest_post: str | None

    @property
    def last_modified_ms(self) -> int:
        post_ms = int(self.newest_post) >> 16 if self.newest_post else 0
        return max(self.changed_ms, post_ms)

    @property
    def tag(self) -> str:
        return f"{self.changes}-{self.newest_post or 0}"


async def version(st: ApiState, handle: str) -> Version:
    """404 when there is no such account; one round trip."""
    p = keys.partition_of(handle, st.settings.partitions)
    async with st.redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.account(p, handle))
        pipe.hmget(keys.status_page(p, handle), ["changes", "changed_ms"])
        pipe.zrange(keys.public_log(p, handle), 0, 0)
        exists, (changes, changed_ms), newest = await pipe.execute()
    if not exists:
        raise NotFound(f"There is no status page for @{handle}.", code="no_such_account")
    newest_ids = texts(newest)
    return Version(
        changes=int(changes or 0),
        changed_ms=int(changed_ms or 0),
        newest_post=keys.home_member(newest_ids[0]) if newest_ids else None,
    )


@dataclass(frozen=True, slots=True)
class ComponentView:
    component: Component
    days: list[vocabulary.Day]

    @property
    def uptime(self) -> float:
        """Share of the days with no outage (degraded and maintenance count as up), in %."""
        down = sum(d.status in {"partial_outage", "major_outage"} for d in self.days)
        return 100.0 * (len(self.days) - down) / len(self.days)


@dataclass(frozen=True, slots=True)
class PastDay:
    day: date
    incidents: list[IncidentOut]


@dataclass(frozen=True, slots=True)
class StatusView:
    account: Account
    logo_url: str | None
    accent_color: str | None
    components: list[ComponentView]
    open: list[IncidentOut]
    """Open public incidents, newest first."""
    resolved: list[IncidentOut]
    """The newest resolved public incidents, newest first."""
    posts: list[Post]
    """Public posts that are not incident updates, newest first."""
    now: datetime

    @property
    def indicator(self) -> str:
        return vocabulary.indicator(
            (i.impact for i in self.open), (c.component.status for c in self.components)
        )

    @property
    def description(self) -> str:
        return vocabulary.INDICATOR_DESCRIPTIONS[self.indicator]

    @property
    def worst_open(self) -> IncidentOut | None:
        """The open incident with the worst impact (the newest among equals)."""
        if not self.open:
            return None
        return max(self.open, key=lambda i: (vocabulary.IMPACTS.index(i.impact), int(i.id)))

    def past(self, days: int = PAST_DAYS) -> list[PastDay]:
        """Today and the `days` before it, newest first, with the incidents resolved since
        that were opened that day (UTC)."""
        today = self.now.date()
        by_day: dict[date, list[IncidentOut]] = {}
        for incident in self.resolved:
            opened = datetime.fromisoformat(incident.created_at).date()
            by_day.setdefault(opened, []).append(incident)
        return [
            PastDay(day, by_day.get(day, []))
            for day in (today - timedelta(days=n) for n in range(days + 1))
        ]


async def read(st: ApiState, account: Account, now: datetime) -> StatusView:
    handle = account.handle
    p = keys.partition_of(handle, st.settings.partitions)
    async with st.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.status_page(p, handle))
        pipe.zrange(keys.component_history(p, handle), 0, -1)
        look, history = await pipe.execute()
    components = await incidents.components(st, handle)
    changes = [vocabulary.Change(*component_change_of(m)) for m in history]
    open_ = await incidents.list_incidents(st, handle, state="open", public=True, limit=100)
    resolved = await incidents.list_incidents(
        st, handle, state="resolved", public=True, limit=PAST_READ
    )
    posts = await st.reader.account_posts(account, None, None, POSTS_SHOWN * 2)
    updates = {u.id for i in (*open_, *resolved) for u in i.updates}
    plain = [
        post
        for post in posts
        if can_see(post, None) and post.id not in updates and post.in_reply_to not in updates
    ]
    fields: dict[str, str] = {text(k): text(v) for k, v in look.items()}
    return StatusView(
        account=account,
        logo_url=fields.get("logo_url"),
        accent_color=fields.get("accent_color"),
        components=[
            ComponentView(c, vocabulary.history(changes, c.name, now.date())) for c in components
        ],
        open=open_,
        resolved=resolved,
        posts=plain[:POSTS_SHOWN],
        now=now,
    )


def affected(incident: IncidentOut) -> list[str]:
    """The components an incident's updates named, in the order they first did."""
    seen: dict[str, None] = {}
    for update in incident.updates:
        seen.update(dict.fromkeys(update.components))
    return list(seen)


def latest(incident: IncidentOut) -> Any:
    return incident.updates[-1]
