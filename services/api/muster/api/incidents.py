"""Incidents and components: open, update, set a component, and read them back.

Each update is a post in the incident's thread: the api appends the update's PostPublished
together with IncidentOpened / IncidentUpdated and a ComponentChanged per component it sets,
in one MULTI on the account's partition (checked under WATCH of the incident, the posters
and the components), so followers and subscribers get it through the ordinary fan-out and
routing, and the write side (muster.writeside) keeps the incident's state for the checks
and the status page. The opening post's id is the incident's id: it is the thread's root.

An incident lives in its account's partition; a read by id alone looks in every partition
in one pipeline (`locate`): incidents are read by id rarely, status pages read by account.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from muster import eventlog, events, keys, views
from muster import incidents as vocabulary
from muster.api import lookups, validation
from muster.api.schemas import (
    ComponentOut,
    CreateIncident,
    IncidentOut,
    IncidentUpdateOut,
    PutComponent,
    UpdateIncident,
)
from muster.api.state import ApiState
from muster.api.writes import transact
from muster.connection import text, texts
from muster.errors import Forbidden, Invalid, NotFound
from muster.events import ComponentStatus, utcnow
from muster.records import (
    Account,
    Component,
    Incident,
    IncidentUpdate,
    component_of,
    incident_member,
    incident_of,
    incident_of_member,
    incident_update_of,
)

TITLE_MAX = 200


@dataclass(frozen=True, slots=True)
class Located:
    partition: int
    incident: Incident


def _p(st: ApiState, handle: str) -> int:
    return keys.partition_of(handle, st.settings.partitions)


# --- who may ---------------------------------------------------------------------------------
async def _may_post_as(st: ApiState, pipe: Any, caller: Account, account: str) -> bool:
    """A service as itself, or a person who is a poster of the team or service."""
    if caller.kind == "service":
        return caller.handle == account
    if caller.kind != "person":
        return False
    return bool(await pipe.sismember(keys.posters(_p(st, account), account), caller.handle))


async def may_manage(st: ApiState, caller: Account, account: str) -> bool:
    """Components and the page's look: admins, the service itself, the account's posters."""
    return caller.is_admin or await _may_post_as(st, st.redis, caller, account)


def sees_internal(viewer: Account | None, account: str) -> bool:
    """Who sees an account's internal incidents: employees and the account itself."""
    return viewer is not None and (viewer.is_employee or viewer.handle == account)


def _not_a_poster(account: str) -> Forbidden:
    return Forbidden(f"you may not post as {account}", code="not_a_poster", field="as")


# --- checks ------------------------------------------------------------------------------------
def _states(components: Mapping[str, str] | None) -> tuple[ComponentStatus, ...]:
    out = []
    for name, status in (components or {}).items():
        if not name.strip():
            raise Invalid(
                "a component name must not be blank", code="text_empty", field="components"
            )
        out.append(ComponentStatus(name=name, status=status))
    return tuple(out)


def _known(states: tuple[ComponentStatus, ...], current: dict[str, Component]) -> None:
    unknown = sorted(c.name for c in states if c.name not in current)
    if unknown:
        raise Invalid(
            f"no component {unknown[0]!r}: create it first (PUT /v1/accounts/{{handle}}"
            "/components/{name})",
            code="unknown_component",
            field="components",
        )


async def _components(pipe: Any, p: int, account: str) -> dict[str, Component]:
    raw: dict[Any, Any] = await pipe.hgetall(keys.components(p, account))
    return {text(k): component_of(v) for k, v in raw.items()}


def _component_changes(
    st: ApiState,
    caller: Account,
    account: str,
    incident: str,
    states: tuple[ComponentStatus, ...],
    current: dict[str, Component],
) -> list[events.ComponentChanged]:
    return [
        events.ComponentChanged(
            id=st.ids.next(),
            actor=caller.handle,
            at=utcnow(),
            account=account,
            name=c.name,
            status=c.status,
            description=current[c.name].description,
            incident=incident,
        )
        for c in states
        if current[c.name].status != c.status
    ]


async def _append(
    st: ApiState,
    pipe: Any,
    changes: list[events.AnyEvent],
    mark: str | None = None,
    made: str = "",
) -> None:
    """Queue the events and their state in the MULTI, with the Idempotency-Key's receipt
    (`mark`, naming what was `made`) when there is one."""
    pipe.multi()
    for event in changes:
        await st.writeside.apply(pipe, event)
        eventlog.append(pipe, event, st.settings.partitions)
    if mark is not None:
        pipe.set(mark, made, ex=keys.IDEMPOTENCY_TTL_S)


def _count(st: ApiState, changes: list[events.AnyEvent] | str, made: str) -> str:
    """What the write made: `made`, or, for a retry its receipt answered, the first one's."""
    if isinstance(changes, str):
        return changes
    for event in changes:
        st.metrics.ingested.labels(events.event_type(event)).inc()
    return made


# --- writes ------------------------------------------------------------------------------------
def receipt(st: ApiState, account: str, caller: str, key: str | None) -> str | None:
    """Where an Idempotency-Key's write leaves its mark, in the MULTI of the write (the
    account's partition): a retry finds it and writes nothing (publishing.Claim)."""
    return None if key is None else keys.idempotency_receipt(_p(st, account), caller, key)


async def _earlier(pipe: Any, mark: str | None) -> str | None:
    """The id a retried write made the first time, if its receipt says so."""
    if mark is None:
        return None
    found = await pipe.get(mark)
    return None if found is None else str(found.decode() if isinstance(found, bytes) else found)


async def open_incident(
    st: ApiState, caller: Account, req: CreateIncident, *, idempotency_key: str | None = None
) -> IncidentOut:
    account = req.as_ or caller.handle
    if await lookups.kind_of(st, account, field="as", active=True) not in {"team", "service"}:
        raise Invalid(f"{account} is not a team or service", code="wrong_kind", field="as")
    title = validation.text(req.title, limit=TITLE_MAX, field="title")
    body = validation.text(req.text, limit=st.settings.max_post_chars)
    states = _states(req.components)
    p = _p(st, account)
    incident_id = st.ids.next()
    severity = req.severity or vocabulary.severity_of(req.impact)
    mark = receipt(st, account, caller.handle, idempotency_key)

    async def step(pipe: Any) -> list[events.AnyEvent] | str:
        if not await _may_post_as(st, pipe, caller, account):
            raise _not_a_poster(account)
        earlier = await _earlier(pipe, mark)
        if earlier is not None:
            return earlier
        current = await _components(pipe, p, account)
        _known(states, current)
        at = utcnow()
        post = events.PostPublished(
            id=incident_id,
            actor=caller.handle,
            at=at,
            author=caller.handle,
            as_account=account,
            text=vocabulary.post_text(title, req.status, body),
            visibility=req.visibility,
            severity=severity,
            components=tuple(c.name for c in states),
        )
        opened = events.IncidentOpened(
            id=st.ids.next(),
            actor=caller.handle,
            at=at,
            incident=incident_id,
            account=account,
            title=title,
            status=req.status,
            impact=req.impact,
            visibility=req.visibility,
            severity=severity,
            text=body,
            components=states,
        )
        changes: list[events.AnyEvent] = [opened]
        changes += _component_changes(st, caller, account, incident_id, states, current)
        changes.append(post)
        await _append(st, pipe, changes, mark, incident_id)
        return changes

    watch = [keys.posters(p, account), keys.components(p, account), *([mark] if mark else [])]
    changes = await transact(st.redis, watch, step)
    made = _count(st, changes, incident_id)
    found = await load(st, made, partition=p)
    assert found is not None
    return found


async def update_incident(
    st: ApiState,
    caller: Account,
    incident_id: str,
    req: UpdateIncident,
    *,
    idempotency_key: str | None = None,
) -> IncidentUpdateOut:
    located = await locate(st, incident_id)
    if located is None or not (
        located.incident.visibility == "public" or sees_internal(caller, located.incident.account)
    ):
        raise NotFound(f"no incident {incident_id}", code="no_such_incident")
    account, p = located.incident.account, located.partition
    body = validation.text(req.text, limit=st.settings.max_post_chars)
    states = _states(req.components)
    post_id = st.ids.next()
    mark = receipt(st, account, caller.handle, idempotency_key)

    async def step(pipe: Any) -> list[events.AnyEvent] | str:
        if not await _may_post_as(st, pipe, caller, account):
            raise _not_a_poster(account)
        earlier = await _earlier(pipe, mark)
        if earlier is not None:
            return earlier
        incident = incident_of(incident_id, await pipe.hgetall(keys.incident(p, incident_id)))
        assert incident is not None  # incidents are never deleted
        current = await _components(pipe, p, account)
        _known(states, current)
        impact = req.impact or incident.impact
        severity = req.severity or vocabulary.severity_of(impact)
        at = utcnow()
        updated = events.IncidentUpdated(
            id=st.ids.next(),
            actor=caller.handle,
            at=at,
            incident=incident_id,
            account=account,
            post=post_id,
            status=req.status,
            impact=impact,
            visibility=incident.visibility,
            severity=severity,
            text=body,
            components=states,
        )
        post = events.PostPublished(
            id=post_id,
            actor=caller.handle,
            at=at,
            author=caller.handle,
            as_account=account,
            text=vocabulary.post_text(incident.title, req.status, body),
            visibility=incident.visibility,
            severity=severity,
            in_reply_to=incident_id,
            components=tuple(c.name for c in states),
        )
        changes: list[events.AnyEvent] = [updated]
        changes += _component_changes(st, caller, account, incident_id, states, current)
        changes.append(post)
        await _append(st, pipe, changes, mark, post_id)
        return changes

    watch = [keys.incident(p, incident_id), keys.posters(p, account), keys.components(p, account)]
    changes = await transact(st.redis, [*watch, *([mark] if mark else [])], step)
    made = _count(st, changes, post_id)
    found = await load(st, incident_id, partition=p)
    assert found is not None
    (out,) = [u for u in found.updates if u.id == made]
    return out


async def set_component(
    st: ApiState, caller: Account, account: Account, name: str, req: PutComponent
) -> ComponentOut:
    if account.kind not in {"team", "service"}:
        raise Invalid(f"{account.handle} is not a team or service", code="wrong_kind")
    if not await may_manage(st, caller, account.handle):
        raise Forbidden(
            "only the account's posters and admins set its components", code="not_allowed"
        )
    if not name.strip():
        raise Invalid("a component name must not be blank", code="text_empty", field="name")
    p = _p(st, account.handle)
    key = keys.components(p, account.handle)

    async def step(pipe: Any) -> tuple[Component, bool]:
        raw = await pipe.hget(key, name)
        current = component_of(raw) if raw is not None else None
        description = req.description if req.description is not None else ""
        if current is not None and req.description is None:
            description = current.description
        if current is not None and (current.status, current.description) == (
            req.status,
            description,
        ):
            return current, False
        changed = events.ComponentChanged(
            id=st.ids.next(),
            actor=caller.handle,
            at=utcnow(),
            account=account.handle,
            name=name,
            status=req.status,
            description=description,
        )
        await _append(st, pipe, [changed])
        after = Component(
            name=name, status=req.status, description=description, updated_at=changed.at
        )
        return after, True

    component, changed = await transact(st.redis, [key], step)
    if changed:
        st.metrics.ingested.labels("ComponentChanged").inc()
    return component_out(component)


# --- reads -------------------------------------------------------------------------------------
def component_out(c: Component) -> ComponentOut:
    return ComponentOut(
        name=c.name,
        status=c.status,  # type: ignore[arg-type]
        description=c.description,
        updated_at=views.rfc3339(c.updated_at),
    )


async def components(st: ApiState, account: str) -> list[Component]:
    """`account`'s components in the order they first appeared."""
    p = _p(st, account)
    async with st.redis.pipeline(transaction=False) as pipe:
        pipe.zrange(keys.component_order(p, account), 0, -1)
        pipe.hgetall(keys.components(p, account))
        order, raw = await pipe.execute()
    found = {text(k): component_of(v) for k, v in raw.items()}
    return [found[n] for n in texts(order) if n in found]


async def locate(st: ApiState, incident_id: str) -> Located | None:
    if not incident_id.isdigit() or len(incident_id) > 19:
        return None
    async with st.redis.pipeline(transaction=False) as pipe:
        for p in range(st.settings.partitions):
            pipe.hgetall(keys.incident(p, incident_id))
        found: list[Any] = await pipe.execute()
    for p, raw in enumerate(found):
        incident = incident_of(incident_id, raw)
        if incident is not None:
            return Located(p, incident)
    return None


def update_out(incident: Incident, update: IncidentUpdate) -> IncidentUpdateOut:
    return IncidentUpdateOut(
        id=update.post,
        author=update.author,
        as_account=incident.account,
        text=vocabulary.post_text(incident.title, update.status, update.text),
        visibility=incident.visibility,  # type: ignore[arg-type]
        severity=update.severity,  # type: ignore[arg-type]
        in_reply_to=None if update.post == incident.id else incident.id,
        created_at=views.rfc3339(update.at),
        incident=incident.id,
        status=update.status,  # type: ignore[arg-type]
        impact=update.impact,  # type: ignore[arg-type]
        message=update.text,
        components={c.name: c.status for c in update.components},  # type: ignore[misc]
    )


def incident_out(incident: Incident, updates: list[IncidentUpdate]) -> IncidentOut:
    return IncidentOut(
        id=incident.id,
        account=incident.account,
        title=incident.title,
        status=incident.status,  # type: ignore[arg-type]
        impact=incident.impact,  # type: ignore[arg-type]
        visibility=incident.visibility,  # type: ignore[arg-type]
        created_at=views.rfc3339(incident.created_at),
        updated_at=views.rfc3339(incident.updated_at),
        resolved_at=views.rfc3339(incident.resolved_at) if incident.resolved_at else None,
        components=incident.components,  # type: ignore[arg-type]
        updates=[update_out(incident, u) for u in updates],
    )


async def load_many(st: ApiState, ids: list[str], partition: int) -> list[IncidentOut]:
    """Incidents of one partition with their updates, in the order given (two round trips
    at most: one pipeline)."""
    async with st.redis.pipeline(transaction=False) as pipe:
        for incident_id in ids:
            pipe.hgetall(keys.incident(partition, incident_id))
            pipe.hgetall(keys.incident_updates(partition, incident_id))
        replies: list[Any] = await pipe.execute()
    out = []
    for i, incident_id in enumerate(ids):
        incident = incident_of(incident_id, replies[2 * i])
        if incident is None:
            continue
        updates = sorted(
            (incident_update_of(v) for v in replies[2 * i + 1].values()), key=lambda u: int(u.post)
        )
        out.append(incident_out(incident, updates))
    return out


async def load(st: ApiState, incident_id: str, *, partition: int) -> IncidentOut | None:
    found = await load_many(st, [incident_id], partition)
    return found[0] if found else None


async def visible(st: ApiState, incident_id: str, viewer: Account | None) -> IncidentOut:
    located = await locate(st, incident_id)
    if located is None or not (
        located.incident.visibility == "public" or sees_internal(viewer, located.incident.account)
    ):
        raise NotFound(f"no incident {incident_id}", code="no_such_incident")
    found = await load(st, incident_id, partition=located.partition)
    assert found is not None
    return found


async def list_ids(
    st: ApiState,
    account: str,
    *,
    state: str | None,
    public: bool,
    before: str | None,
    limit: int,
) -> list[str]:
    """Ids of `account`'s incidents in `state` (None: both), newest first, older than
    `before`."""
    p = _p(st, account)
    start = f"({incident_member(before)}" if before is not None else "-"
    states = [state] if state is not None else list(keys.INCIDENT_LISTS)
    async with st.redis.pipeline(transaction=False) as pipe:
        for s in states:
            pipe.zrange(
                keys.incidents(p, account, s, public), start, "+", bylex=True, offset=0, num=limit
            )
        pages: list[Any] = await pipe.execute()
    members = sorted(m for page in pages for m in texts(page))[:limit]
    return [incident_of_member(m) for m in members]


async def list_incidents(
    st: ApiState,
    account: str,
    *,
    state: str | None,
    public: bool,
    before: str | None = None,
    limit: int = 20,
) -> list[IncidentOut]:
    ids = await list_ids(st, account, state=state, public=public, before=before, limit=limit)
    return await load_many(st, ids, _p(st, account))
