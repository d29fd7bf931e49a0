"""With several event-log partitions: each event lands in the partition of the account it
belongs to (eventlog.partition_for), and checks that span partitions still hold."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest

from api.conftest import Api, OpenApi, assert_error
from muster import events, keys
from muster.api import publishing
from muster.eventlog import partition_for
from muster.settings import Settings

pytestmark = pytest.mark.anyio

PARTITIONS = 4


def handles_in_distinct_partitions(count: int, prefix: str) -> list[str]:
    found: dict[int, str] = {}
    i = 0
    while len(found) < count:
        handle = f"{prefix}{i}"
        found.setdefault(keys.partition_of(handle, PARTITIONS), handle)
        i += 1
    return list(found.values())


@pytest.fixture
async def api(api_settings: Settings, open_api: OpenApi) -> AsyncIterator[Api]:
    async with open_api(msgspec.structs.replace(api_settings, partitions=PARTITIONS)) as opened:
        yield opened


async def test_every_event_is_in_its_accounts_partition(api: Api) -> None:
    admin = api.settings.admin_token
    assert admin is not None
    alice, bob = handles_in_distinct_partitions(2, "person")
    team = next(
        h
        for h in handles_in_distinct_partitions(PARTITIONS, "team")
        if keys.partition_of(h, PARTITIONS)
        not in {keys.partition_of(alice, PARTITIONS), keys.partition_of(bob, PARTITIONS)}
    )
    a = await api.person(alice)
    await api.person(bob)
    await api.create(team, "team")
    assert (
        await api.call("PUT", f"/v1/accounts/{team}/posters/{alice}", token=admin)
    ).status_code == 204
    assert (await api.call("PUT", f"/v1/me/follows/{team}", token=a)).status_code == 200
    assert (await api.call("POST", "/v1/posts", token=a, json={"text": "as me"})).status_code == 202
    assert (
        await api.call("POST", "/v1/posts", token=a, json={"text": "as team", "as": team})
    ).status_code == 202
    assert (
        await api.call("POST", "/v1/dms", token=a, json={"to": bob, "text": "psst"})
    ).status_code == 202
    response = await api.call(
        "PUT", f"/v1/accounts/{team}/enrolments", token=admin, json={"followers": "all_members"}
    )
    assert response.status_code == 202
    assert response.json()["followers"] == 3  # admin, alice, bob: members of every partition

    seen = 0
    for p in range(PARTITIONS):
        for event in await api.events_in(p):
            assert partition_for(event, PARTITIONS) == p, event
            seen += 1
    assert seen == await api.log_length()

    # spot checks of what belongs where
    by_partition = {p: await api.events_in(p) for p in range(PARTITIONS)}

    def partition_of_event(predicate: Callable[[events.AnyEvent], bool]) -> set[int]:
        return {p for p, found in by_partition.items() for e in found if predicate(e)}

    pa, pt = keys.partition_of(alice, PARTITIONS), keys.partition_of(team, PARTITIONS)
    assert partition_of_event(
        lambda e: isinstance(e, events.PostPublished) and e.as_account == team
    ) == {pt}
    assert partition_of_event(
        lambda e: isinstance(e, events.PostPublished) and e.as_account == alice
    ) == {pa}
    assert partition_of_event(lambda e: isinstance(e, events.DirectMessageSent)) == {pa}
    assert partition_of_event(lambda e: isinstance(e, events.PosterGranted)) == {pt}
    assert partition_of_event(lambda e: isinstance(e, events.AccountFollowed)) == {pa}
    assert partition_of_event(lambda e: isinstance(e, events.MembersEnrolled)) == {pt}


async def test_an_idempotency_key_is_one_callers_whatever_account_they_post_as(api: Api) -> None:
    """docs/api.md: the same key from the same caller with a different body is 409 — here the
    bodies differ in `as`, whose partition differs from the caller's."""
    admin = api.settings.admin_token
    assert admin is not None
    person = handles_in_distinct_partitions(1, "p")[0]
    team = next(
        h
        for h in handles_in_distinct_partitions(PARTITIONS, "t")
        if keys.partition_of(h, PARTITIONS) != keys.partition_of(person, PARTITIONS)
    )
    token = await api.person(person)
    await api.create(team, "team")
    await api.call("PUT", f"/v1/accounts/{team}/posters/{person}", token=admin)
    headers = {"Idempotency-Key": "k"}
    first = await api.call("POST", "/v1/posts", token=token, json={"text": "x"}, headers=headers)
    assert first.status_code == 202
    before = await api.snapshot()
    second = await api.call(
        "POST", "/v1/posts", token=token, json={"text": "x", "as": team}, headers=headers
    )
    assert_error(second, 409, "idempotency_key_reused")
    assert await api.snapshot() == before


async def _person_and_foreign_team(api: Api) -> tuple[str, str, str]:
    """A person and a team they post for, in different partitions: the claim-first path."""
    admin = api.settings.admin_token
    assert admin is not None
    person = handles_in_distinct_partitions(1, "c")[0]
    team = next(
        h
        for h in handles_in_distinct_partitions(PARTITIONS, "u")
        if keys.partition_of(h, PARTITIONS) != keys.partition_of(person, PARTITIONS)
    )
    token = await api.person(person)
    await api.create(team, "team")
    await api.call("PUT", f"/v1/accounts/{team}/posters/{person}", token=admin)
    return person, team, token


async def test_a_key_across_partitions_replays_its_first_response(api: Api) -> None:
    _, team, token = await _person_and_foreign_team(api)
    headers = {"Idempotency-Key": "across"}
    body = {"text": "x", "as": team}
    first = await api.call("POST", "/v1/posts", token=token, json=body, headers=headers)
    assert first.status_code == 202
    before = await api.snapshot()
    again = await api.call("POST", "/v1/posts", token=token, json=body, headers=headers)
    assert again.status_code == 202
    assert again.content == first.content
    assert await api.snapshot() == before


async def test_a_refused_append_releases_its_claim(api: Api) -> None:
    """Posting as a team you may not post for is 403 and leaves the key free."""
    admin = api.settings.admin_token
    assert admin is not None
    person, team, token = await _person_and_foreign_team(api)
    await api.call("DELETE", f"/v1/accounts/{team}/posters/{person}", token=admin)
    headers = {"Idempotency-Key": "released"}
    refused = await api.call(
        "POST", "/v1/posts", token=token, json={"text": "x", "as": team}, headers=headers
    )
    assert_error(refused, 403, "not_a_poster")
    record = keys.idempotency(keys.partition_of(person, PARTITIONS), person, "released")
    assert await api.redis.exists(record) == 0
    await api.call("PUT", f"/v1/accounts/{team}/posters/{person}", token=admin)
    accepted = await api.call(
        "POST", "/v1/posts", token=token, json={"text": "x", "as": team}, headers=headers
    )
    assert accepted.status_code == 202


async def test_a_retry_after_the_process_died_between_append_and_record_appends_nothing(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event is in the log, the caller's record still says "in progress": the retry
    finds the receipt written with the event and answers as the first request would have."""
    person, team, token = await _person_and_foreign_team(api)
    headers = {"Idempotency-Key": "died"}
    body = {"text": "x", "as": team}

    async def die(self: publishing.Claim, response: bytes) -> None:
        raise RuntimeError("the api process died here")

    with monkeypatch.context() as patched:
        patched.setattr(publishing.Claim, "done", die)
        try:
            died = await api.call("POST", "/v1/posts", token=token, json=body, headers=headers)
        except RuntimeError:
            pass
        else:
            assert died.status_code == 500
    logged = await api.log_length()
    before = await api.snapshot()
    again = await api.call("POST", "/v1/posts", token=token, json=body, headers=headers)
    assert again.status_code == 202
    assert await api.log_length() == logged
    (post,) = [
        e
        for p in range(PARTITIONS)
        for e in await api.events_in(p)
        if isinstance(e, events.PostPublished) and e.as_account == team
    ]
    assert again.json()["id"] == post.id
    after = await api.snapshot()
    # Only the caller's record changed: "in progress" became the answer.
    record = keys.idempotency(keys.partition_of(person, PARTITIONS), person, "died").encode()
    assert {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} == {record}
    other = await api.call(
        "POST", "/v1/posts", token=token, json={"text": "other", "as": team}, headers=headers
    )
    assert_error(other, 409, "idempotency_key_reused")


async def test_a_key_whose_request_died_after_its_append_is_never_reused_with_another_body(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies between the append and recording the answer; the key comes back
    much later with a different body, posting as the caller (another partition than the
    team's receipt). The claim lasts the key's whole window, so that is 409, not a second
    post: a claim that expired after 30 s let it through."""
    person, team, token = await _person_and_foreign_team(api)
    headers = {"Idempotency-Key": "died-then-other"}

    async def die(self: publishing.Claim, response: bytes) -> None:
        raise RuntimeError("the api process died here")

    with monkeypatch.context() as patched:
        patched.setattr(publishing.Claim, "done", die)
        with contextlib.suppress(RuntimeError):
            await api.call(
                "POST", "/v1/posts", token=token, json={"text": "x", "as": team}, headers=headers
            )
    record = keys.idempotency(keys.partition_of(person, PARTITIONS), person, "died-then-other")
    assert await api.redis.ttl(record) > keys.IDEMPOTENCY_TTL_S - 60  # not a 30 s claim
    before = await api.snapshot()
    other = await api.call(
        "POST", "/v1/posts", token=token, json={"text": "something else"}, headers=headers
    )
    assert_error(other, 409, "idempotency_key_reused")
    assert await api.snapshot() == before


async def test_racing_requests_with_one_key_across_partitions_append_once(api: Api) -> None:
    _, team, token = await _person_and_foreign_team(api)
    headers = {"Idempotency-Key": "race"}
    body = {"text": "x", "as": team}
    logged = await api.log_length()
    answers = await asyncio.gather(
        *(api.call("POST", "/v1/posts", token=token, json=body, headers=headers) for _ in range(8))
    )
    assert {a.status_code for a in answers} == {202}
    assert len({a.content for a in answers}) == 1
    assert await api.log_length() == logged + 1
