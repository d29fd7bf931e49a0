"""Directory sync: what a SCIM request reads and writes, in Muster's terms.

Users are the people the directory created (keys.directory_users); Groups are the teams a
directory group is mapped to (keys.directory_groups, members in keys.directory_members).
Every change goes through writes.py, the api's one write path: a person is created with
writes.create_account, changed with writes.update_account (the same ContactPointsChanged as
PATCH /v1/me), deactivated with writes.set_active; group members are enrolled with
writes.enrol and removed with writes.remove_follow. The directory's own record of each is
an event appended in the same step (events.DirectoryUserChanged, DirectoryGroupChanged).

Refusals are SCIMExceptions (routes/scim.py turns them into SCIM error bodies); a refused
request writes nothing. Lookups by userName, externalId and email read keys.directory_index
(one ZRANGEBYLEX per partition) and check each hit against its record; any other filter
reads every directory user.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from scim2_models import (
    Group,
    InvalidValueException,
    MutabilityException,
    NotFoundException,
    SearchRequest,
    UniquenessException,
    User,
)
from scim2_models.path import AttrPath, CompareOperator, Comparison, FilterNode, LogicalExpr

from muster import events, keys
from muster.api import accounts, scim, writes
from muster.api.schemas import CreateAccount, UpdateMe
from muster.api.state import ApiState
from muster.connection import text
from muster.events import utcnow
from muster.records import (
    Account,
    DirectoryGroup,
    DirectoryIndexKind,
    DirectoryUser,
    account_of,
    directory_group_of,
    directory_index_handle,
    directory_index_range,
    directory_user_of,
)
from muster.writeside import enrolment_rules

DEFAULT_CHANNELS = ("app", "email")
"""How a group's members follow its team unless the team's enrolment rule says otherwise."""


@dataclass(frozen=True, slots=True)
class Person:
    account: Account
    record: DirectoryUser


# --- users: reads --------------------------------------------------------------------------------
async def person(st: ApiState, handle: str) -> Person | None:
    partitions = st.settings.partitions
    p = keys.partition_of(handle, partitions)
    async with st.redis.pipeline(transaction=False) as pipe:
        pipe.hget(keys.directory_users(p), handle)
        pipe.hgetall(accounts.account_key(handle, partitions))
        raw, account_hash = await pipe.execute()
    account = account_of(account_hash) if raw is not None else None
    if raw is None or account is None:
        return None
    return Person(account, directory_user_of(raw))


async def existing_person(st: ApiState, handle: str) -> Person:
    found = await person(st, handle)
    if found is None:
        raise NotFoundException(detail=f"no User {handle!r}")
    return found


async def _people(st: ApiState, handles: Iterable[str]) -> list[Person]:
    found = []
    for handle in sorted(set(handles)):
        one = await person(st, handle)
        if one is not None:
            found.append(one)
    return found


async def _everyone(st: ApiState) -> list[Person]:
    handles: list[str] = []
    for p in range(st.settings.partitions):
        async for handle, _ in st.redis.hscan_iter(keys.directory_users(p), count=1000):
            handles.append(text(handle))
    return await _people(st, handles)


async def _indexed(st: ApiState, kind: DirectoryIndexKind, value: str) -> set[str]:
    low, high = directory_index_range(kind, value)
    async with st.redis.pipeline(transaction=False) as pipe:
        for p in range(st.settings.partitions):
            pipe.zrangebylex(keys.directory_index(p), low, high)
        replies: list[list[bytes]] = await pipe.execute()
    return {directory_index_handle(entry) for reply in replies for entry in reply}


_INDEXED: dict[tuple[str, str | None], DirectoryIndexKind] = {
    ("username", None): "userName",
    ("externalid", None): "externalId",
    ("emails", "value"): "email",
    ("emails", None): "email",
}


def _anchor(node: FilterNode) -> tuple[str, str] | None:
    """An `eq` on an indexed attribute (or `id`) that every match must satisfy."""
    if (
        isinstance(node, Comparison)
        and node.op == CompareOperator.eq
        and isinstance(node.value, str)
    ):
        path: AttrPath = node.attr_path
        if path.uri not in (None, str(User.__schema__)):
            return None
        if path.attr.lower() == "id" and path.sub_attr is None:
            return ("id", node.value)
        kind = _INDEXED.get((path.attr.lower(), path.sub_attr.lower() if path.sub_attr else None))
        return (kind, node.value) if kind else None
    if isinstance(node, LogicalExpr) and node.op.value == "and":
        for term in node.terms:
            found = _anchor(term)
            if found:
                return found
    return None


async def search_people(
    st: ApiState, request: SearchRequest[Any]
) -> tuple[list[scim.UserIn], int, int]:
    """The Users a list request asks for, sorted by id: one page, the total and the start."""
    query = request.filter
    anchor = _anchor(query.ast) if query is not None else None
    if anchor is None:
        candidates = await _everyone(st)
    elif anchor[0] == "id":
        candidates = await _people(st, [anchor[1]])
    else:
        kind: DirectoryIndexKind = anchor[0]  # type: ignore[assignment]
        candidates = await _people(st, await _indexed(st, kind, anchor[1]))
    base = st.settings.public_url
    users = [user_of(c, base) for c in candidates]
    if query is not None:
        users = [u for u in users if query.match(u)]
    start, stop = scim.page(request, len(users))
    return users[start:stop], len(users), start


def user_of(found: Person, base_url: str) -> scim.UserIn:
    return scim.user_of(found.account, found.record, base_url, active=found.account.active)


async def _user_name_taken(st: ApiState, user_name: str, by_other_than: str | None) -> bool:
    for handle in await _indexed(st, "userName", user_name):
        if handle == by_other_than:
            continue
        found = await person(st, handle)
        if found is not None and found.record.user_name.casefold() == user_name.casefold():
            return True
    return False


# --- users: writes -------------------------------------------------------------------------------
async def create_person(st: ApiState, user: scim.UserIn) -> Person:
    assert user.user_name is not None
    handle = scim.handle_for(user.user_name)
    if await _user_name_taken(st, user.user_name, None):
        raise UniquenessException(detail=f"userName {user.user_name!r} is taken")
    if await accounts.load(st.redis, handle, st.settings.partitions) is not None:
        raise UniquenessException(
            detail=f"userName {user.user_name!r} gives the handle {handle!r}, which is taken "
            "(handles are never reused, also after a deactivation)"
        )
    req = CreateAccount(
        handle=handle,
        kind="person",
        display_name=scim.display_name(user, handle),
        email=scim.primary_email(user),
    )
    changed = scim.user_changed(handle, user, st.ids.next())
    account, _ = await writes.create_account(st, scim.ACTOR, req, "member", with_events=[changed])
    if user.active is False:
        await writes.set_active(st, scim.ACTOR, handle, False)
    return await existing_person(st, account.handle)


async def replace_person(st: ApiState, current: Person, user: scim.UserIn) -> Person:
    """Make the person what the User says (PUT, and PATCH once applied)."""
    handle = current.account.handle
    assert user.user_name is not None
    if user.user_name.casefold() != current.record.user_name.casefold() and await _user_name_taken(
        st, user.user_name, handle
    ):
        raise UniquenessException(detail=f"userName {user.user_name!r} is taken")
    display, email = scim.display_name(user, handle), scim.primary_email(user)
    account = current.account
    req = None
    if (display, email) != (account.display_name, account.email):
        req = UpdateMe(display_name=display, email=email)
    changed = scim.user_changed(handle, user, st.ids.next())
    if req is not None or not scim.same_record(current.record, changed):
        await writes.update_account(st, scim.ACTOR, handle, req, with_events=[changed])
    if user.active is not None and user.active != account.active:
        await writes.set_active(st, scim.ACTOR, handle, user.active)
    return await existing_person(st, handle)


async def remove_person(st: ApiState, current: Person) -> None:
    """DELETE: the person is deactivated and no longer the directory's; the account and its
    history stay and its handle is never reused."""
    handle = current.account.handle
    if current.account.active:
        await writes.set_active(st, scim.ACTOR, handle, False)
    removed = events.DirectoryUserRemoved(
        id=st.ids.next(), actor=scim.ACTOR, at=utcnow(), handle=handle
    )
    await writes.update_account(st, scim.ACTOR, handle, None, with_events=[removed])


# --- groups --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Team:
    account: Account
    record: DirectoryGroup
    members: frozenset[str]


async def team(st: ApiState, handle: str) -> Team | None:
    partitions = st.settings.partitions
    p = keys.partition_of(handle, partitions)
    async with st.redis.pipeline(transaction=False) as pipe:
        pipe.hget(keys.directory_groups(p), handle)
        pipe.smembers(keys.directory_members(p, handle))
        pipe.hgetall(accounts.account_key(handle, partitions))
        raw, members, account_hash = await pipe.execute()
    account = account_of(account_hash) if raw is not None else None
    if raw is None or account is None:
        return None
    return Team(account, directory_group_of(raw), frozenset(text(m) for m in members))


async def existing_team(st: ApiState, handle: str) -> Team:
    found = await team(st, handle)
    if found is None:
        raise NotFoundException(detail=f"no Group {handle!r}")
    return found


async def group_of(st: ApiState, found: Team) -> Group:
    """The Group a directory reads; members the directory has since deleted are left out."""
    members = [p.account for p in await _people(st, found.members)]
    return scim.group_of(found.account, found.record, members, st.settings.public_url)


async def search_teams(st: ApiState, request: SearchRequest[Any]) -> tuple[list[Group], int, int]:
    handles: list[str] = []
    for p in range(st.settings.partitions):
        async for handle, _ in st.redis.hscan_iter(keys.directory_groups(p), count=1000):
            handles.append(text(handle))
    groups = []
    for handle in sorted(handles):
        found = await team(st, handle)
        if found is not None:
            groups.append(await group_of(st, found))
    if request.filter is not None:
        groups = [g for g in groups if request.filter.match(g)]
    start, stop = scim.page(request, len(groups))
    return groups[start:stop], len(groups), start


async def create_team(st: ApiState, group: Group) -> Team:
    """Map a group to the team its displayName names (400 invalidValue if there is none)."""
    handle = scim.team_for(group.display_name)
    account = await accounts.load(st.redis, handle, st.settings.partitions)
    if account is None or account.kind != "team":
        raise InvalidValueException(
            detail=f"displayName {group.display_name!r} names no team {handle!r}: a group maps "
            "to the team whose handle its displayName gives; create the team in Muster first"
        )
    if await team(st, handle) is not None:
        raise UniquenessException(detail=f"a group is already mapped to the team {handle!r}")
    await _change_members(st, handle, None, group, set())
    return await existing_team(st, handle)


async def replace_team(st: ApiState, current: Team, group: Group) -> Team:
    """PUT, and PATCH once applied: the members become the Group's."""
    handle = current.account.handle
    if scim.team_for(group.display_name) != handle:
        raise MutabilityException(
            detail=f"a group's displayName names the team it maps to ({handle!r}) and cannot "
            "name another; delete this group and map one to the other team"
        )
    await _change_members(st, handle, current.record, group, set(current.members))
    return await existing_team(st, handle)


async def remove_team(st: ApiState, current: Team) -> None:
    """DELETE: every member's follow of the team is removed, then the mapping."""
    handle = current.account.handle
    for member in sorted(current.members):
        await writes.remove_follow(st, scim.ACTOR, member, handle)
    removed = events.DirectoryGroupRemoved(
        id=st.ids.next(), actor=scim.ACTOR, at=utcnow(), account=handle
    )
    await writes.update_account(st, scim.ACTOR, handle, None, with_events=[removed])


async def _change_members(
    st: ApiState, handle: str, record: DirectoryGroup | None, group: Group, before: set[str]
) -> None:
    """Remove the follows of who left, then enrol who joined with the mapping's change in
    one step. The follows go first: after a crash in between, the mapping still lists who
    left, so the directory's retry removes them again (a removal is a no-op once done);
    recorded first, a crash would leave their follows for good. A member must be a User of
    the directory."""
    after = scim.member_handles(group)
    added, removed = sorted(after - before), sorted(before - after)
    unknown = [h for h in added if await person(st, h) is None]
    if unknown:
        raise InvalidValueException(detail=f"members: no User {', '.join(map(repr, unknown[:20]))}")
    changed = events.DirectoryGroupChanged(
        id=st.ids.next(),
        actor=scim.ACTOR,
        at=utcnow(),
        account=handle,
        display_name=group.display_name,
        external_id=group.external_id,
        added=tuple(added),
        removed=tuple(removed),
    )
    for member in removed:
        await writes.remove_follow(st, scim.ACTOR, member, handle)
    if added:
        rule = (await enrolment_rules(st.redis, st.settings.partitions)).get(handle)
        channels = rule.channels if rule else DEFAULT_CHANNELS
        mandatory = rule.mandatory if rule else True
        followers = dict.fromkeys(added, False)  # directory users are members, never external
        await writes.enrol(
            st, scim.ACTOR, handle, followers, channels, mandatory, with_events=[changed]
        )
    elif (
        removed
        or record is None
        or (record.display_name, record.external_id) != (group.display_name, group.external_id)
    ):
        await writes.update_account(st, scim.ACTOR, handle, None, with_events=[changed])
