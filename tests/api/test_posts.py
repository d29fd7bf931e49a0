"""POST /v1/posts and POST /v1/dms: responses, the events they append, length in code points,
and Idempotency-Key (same caller + key + body → the first response, and one event only)."""

from __future__ import annotations

import asyncio
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from api.conftest import Api, Cast, OpenApi, assert_error
from muster import events, keys
from muster.settings import Settings

pytestmark = pytest.mark.anyio

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")
ASTRAL = "\N{GRINNING FACE}"  # U+1F600: 1 code point, 4 UTF-8 bytes, 2 UTF-16 units


def parse_time(value: str) -> datetime:
    assert RFC3339.match(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def post(
    api: Api, token: str, body: dict[str, Any], *, key: str | None = None, status: int = 202
) -> dict[str, Any]:
    headers = {"Idempotency-Key": key} if key is not None else None
    response = await api.call("POST", "/v1/posts", token=token, json=body, headers=headers)
    assert response.status_code == status, response.text
    result: dict[str, Any] = response.json()
    return result


# --- posts ------------------------------------------------------------------------------------
async def test_member_post_defaults_and_its_event(api: Api, cast: Cast) -> None:
    before = await api.log_length()
    body = await post(api, cast.member, {"text": "Deploy at 14:00"})
    assert set(body) >= {
        "id",
        "author",
        "as_account",
        "text",
        "visibility",
        "severity",
        "in_reply_to",
        "created_at",
    }
    assert body["author"] == "mia"
    assert body["as_account"] == "mia"
    assert body["text"] == "Deploy at 14:00"
    assert body["visibility"] == "internal"
    assert body["severity"] == "info"
    assert body["in_reply_to"] is None
    created_at = parse_time(body["created_at"])
    assert abs(datetime.now(UTC) - created_at) < timedelta(seconds=30)

    assert await api.log_length() == before + 1
    published = (await api.events())[-1]
    assert isinstance(published, events.PostPublished)
    assert published.id == body["id"]
    assert published.actor == "mia"
    assert published.author == "mia"
    assert published.as_account == "mia"
    assert published.text == "Deploy at 14:00"
    assert published.visibility == "internal"
    assert published.severity == "info"
    assert published.in_reply_to is None


@pytest.mark.parametrize("severity", ["info", "warning", "critical"])
@pytest.mark.parametrize("visibility", ["public", "internal"])
async def test_severity_and_visibility(
    api: Api, cast: Cast, severity: str, visibility: str
) -> None:
    body = await post(
        api, cast.admin, {"text": "x", "severity": severity, "visibility": visibility}
    )
    assert (body["severity"], body["visibility"]) == (severity, visibility)
    published = (await api.events())[-1]
    assert isinstance(published, events.PostPublished)
    assert (published.severity, published.visibility) == (severity, visibility)


async def test_external_posts_are_public(api: Api, cast: Cast) -> None:
    assert (await post(api, cast.external, {"text": "hello"}))["visibility"] == "public"
    explicit = await post(api, cast.external, {"text": "hello", "visibility": "public"})
    assert explicit["visibility"] == "public"


async def test_service_posts(api: Api, cast: Cast) -> None:
    body = await post(api, cast.service, {"text": "build 42 deployed", "severity": "warning"})
    assert (body["author"], body["as_account"], body["visibility"]) == ("svc", "svc", "internal")


async def test_reply_to_a_recent_post(api: Api, cast: Cast) -> None:
    parent = await post(api, cast.member, {"text": "parent"})
    reply = await post(api, cast.admin, {"text": "reply", "in_reply_to": parent["id"]})
    assert reply["in_reply_to"] == parent["id"]
    published = (await api.events())[-1]
    assert isinstance(published, events.PostPublished)
    assert published.in_reply_to == parent["id"]


async def test_reply_to_a_post_that_never_existed_is_404(api: Api, cast: Cast) -> None:
    before = await api.snapshot()
    response = await api.call(
        "POST", "/v1/posts", token=cast.member, json={"text": "r", "in_reply_to": "12345"}
    )
    assert_error(response, 404, field="in_reply_to")
    assert await api.snapshot() == before


async def test_text_is_kept_exactly(api: Api, cast: Cast) -> None:
    text = "Line 1\nLine 2\t«quoted» — 東京 \N{ROCKET}\r\n  trailing  "
    body = await post(api, cast.member, {"text": text})
    assert body["text"] == text
    published = (await api.events())[-1]
    assert isinstance(published, events.PostPublished)
    assert published.text == text


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(ASTRAL * 500, id="500-astral"),  # 2000 UTF-8 bytes, 1000 UTF-16 units
        pytest.param("x" * 500, id="500-ascii"),
        pytest.param("e\N{COMBINING ACUTE ACCENT}" * 250, id="250-decomposed"),
        pytest.param("\N{FAMILY}" * 499 + "!", id="499-family-1-bang"),
    ],
)
async def test_the_limit_is_500_code_points(api: Api, cast: Cast, text: str) -> None:
    assert len(text) == 500
    body = await post(api, cast.member, {"text": text})
    assert body["text"] == text
    published = (await api.events())[-1]
    assert isinstance(published, events.PostPublished)
    assert published.text == text


async def test_one_code_point_over_is_refused_however_short_in_graphemes(
    api: Api, cast: Cast
) -> None:
    # 251 é as e + combining accent: 251 characters a reader sees, 502 code points
    text = "e\N{COMBINING ACUTE ACCENT}" * 251
    assert len(unicodedata.normalize("NFC", text)) == 251
    before = await api.snapshot()
    response = await api.call("POST", "/v1/posts", token=cast.member, json={"text": text})
    assert_error(response, 422, "text_too_long", field="text")
    assert await api.snapshot() == before


async def test_the_limit_follows_the_setting(api_settings: Settings, open_api: OpenApi) -> None:
    short = msgspec.structs.replace(api_settings, max_post_chars=3)
    async with open_api(short) as api:
        token = await api.person("mia")
        assert (await post(api, token, {"text": ASTRAL * 3}))["text"] == ASTRAL * 3
        refused = await api.call("POST", "/v1/posts", token=token, json={"text": ASTRAL * 4})
        assert_error(refused, 422, "text_too_long")
        refused = await api.call(
            "POST", "/v1/dms", token=token, json={"to": "admin", "text": "abcd"}
        )
        assert_error(refused, 422, "text_too_long")


async def test_body_exactly_at_the_size_limit_is_accepted(
    api_settings: Settings, open_api: OpenApi
) -> None:
    sized = msgspec.structs.replace(api_settings, max_body_bytes=4096, max_post_chars=10_000)
    async with open_api(sized) as api:
        token = await api.person("mia")
        prefix, suffix = b'{"text": "', b'"}'
        exact = prefix + b"a" * (4096 - len(prefix) - len(suffix)) + suffix
        assert len(exact) == 4096
        response = await api.call(
            "POST",
            "/v1/posts",
            token=token,
            content=exact,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 202, response.text
        over = exact[:-2] + b'a"}'
        before = await api.snapshot()
        refused = await api.call("POST", "/v1/posts", token=token, content=over)
        assert_error(refused, 413, "payload_too_large")
        assert await api.snapshot() == before


# --- direct messages --------------------------------------------------------------------------
async def test_dm_and_its_event(api: Api, cast: Cast) -> None:
    before = await api.log_length()
    response = await api.call(
        "POST", "/v1/dms", token=cast.member, json={"to": "eve", "text": "Your ticket is fixed"}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) >= {"id", "from", "to", "text", "created_at"}
    assert (body["from"], body["to"], body["text"]) == ("mia", "eve", "Your ticket is fixed")
    parse_time(body["created_at"])
    assert await api.log_length() == before + 1
    sent = (await api.events())[-1]
    assert isinstance(sent, events.DirectMessageSent)
    assert sent.id == body["id"]
    assert (sent.actor, sent.recipient, sent.text) == ("mia", "eve", "Your ticket is fixed")
    assert sent.in_reply_to is None


@pytest.mark.parametrize(
    ("sender", "to"), [("external", "mia"), ("service", "eve"), ("admin", "mia")]
)
async def test_people_and_services_send_dms(api: Api, cast: Cast, sender: str, to: str) -> None:
    token = cast.by_name(sender)
    response = await api.call("POST", "/v1/dms", token=token, json={"to": to, "text": "hi"})
    assert response.status_code == 202, response.text
    assert response.json()["to"] == to


async def test_dm_at_the_limit_in_code_points(api: Api, cast: Cast) -> None:
    response = await api.call(
        "POST", "/v1/dms", token=cast.member, json={"to": "eve", "text": ASTRAL * 500}
    )
    assert response.status_code == 202, response.text


async def test_dm_reply_within_the_conversation(api: Api, cast: Cast) -> None:
    first = await api.call("POST", "/v1/dms", token=cast.member, json={"to": "eve", "text": "a"})
    parent = first.json()["id"]
    reply = await api.call(
        "POST",
        "/v1/dms",
        token=cast.external,
        json={"to": "mia", "text": "b", "in_reply_to": parent},
    )
    assert reply.status_code == 202, reply.text
    assert reply.json()["in_reply_to"] == parent


# --- Idempotency-Key --------------------------------------------------------------------------
async def test_same_key_same_body_replays_the_first_response(api: Api, cast: Cast) -> None:
    body = {"text": "Incident opened", "severity": "critical"}
    headers = {"Idempotency-Key": "incident-7f3a"}
    first = await api.call("POST", "/v1/posts", token=cast.member, json=body, headers=headers)
    assert first.status_code == 202
    length = await api.log_length()
    for _ in range(3):
        again = await api.call("POST", "/v1/posts", token=cast.member, json=body, headers=headers)
        assert again.status_code == 202
        assert again.content == first.content  # same id, same created_at
    assert await api.log_length() == length
    published = [e for e in await api.events() if isinstance(e, events.PostPublished)]
    assert [e.id for e in published] == [first.json()["id"]]
    ttl = await api.redis.ttl(keys.idempotency(0, "mia", "incident-7f3a"))
    assert 0 < ttl <= keys.IDEMPOTENCY_TTL_S


async def test_same_key_different_body_is_409_and_writes_nothing(api: Api, cast: Cast) -> None:
    headers = {"Idempotency-Key": "k1"}
    await api.call("POST", "/v1/posts", token=cast.member, json={"text": "a"}, headers=headers)
    before = await api.snapshot()
    for body in (
        {"text": "b"},
        {"text": "a", "severity": "critical"},
        {"text": "a", "visibility": "public"},
    ):
        response = await api.call(
            "POST", "/v1/posts", token=cast.member, json=body, headers=headers
        )
        assert_error(response, 409, "idempotency_key_reused")
        assert await api.snapshot() == before
    # the same key on the other write route is another body too
    response = await api.call(
        "POST", "/v1/dms", token=cast.member, json={"to": "eve", "text": "a"}, headers=headers
    )
    assert_error(response, 409, "idempotency_key_reused")
    assert await api.snapshot() == before


async def test_same_key_from_different_callers_is_independent(api: Api, cast: Cast) -> None:
    headers = {"Idempotency-Key": "shared-key"}
    body = {"text": "same text", "visibility": "public"}
    ids = set()
    for token in (cast.member, cast.external, cast.service, cast.admin):
        response = await api.call("POST", "/v1/posts", token=token, json=body, headers=headers)
        assert response.status_code == 202, response.text
        ids.add(response.json()["id"])
    assert len(ids) == 4
    published = [e for e in await api.events() if isinstance(e, events.PostPublished)]
    assert {e.id for e in published} == ids


async def test_dm_idempotency(api: Api, cast: Cast) -> None:
    headers = {"Idempotency-Key": "dm-1"}
    body = {"to": "eve", "text": "once"}
    first = await api.call("POST", "/v1/dms", token=cast.member, json=body, headers=headers)
    again = await api.call("POST", "/v1/dms", token=cast.member, json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.content == again.content
    sent = [e for e in await api.events() if isinstance(e, events.DirectMessageSent)]
    assert len(sent) == 1
    other = await api.call(
        "POST", "/v1/dms", token=cast.member, json={"to": "eve", "text": "twice"}, headers=headers
    )
    assert_error(other, 409, "idempotency_key_reused")


async def test_concurrent_retries_with_one_key_create_one_post(api: Api, cast: Cast) -> None:
    headers = {"Idempotency-Key": "burst"}
    responses = await asyncio.gather(
        *[
            api.call("POST", "/v1/posts", token=cast.member, json={"text": "x"}, headers=headers)
            for _ in range(10)
        ]
    )
    assert {r.status_code for r in responses} == {202}
    assert len({r.content for r in responses}) == 1
    published = [e for e in await api.events() if isinstance(e, events.PostPublished)]
    assert len(published) == 1


async def test_without_a_key_every_request_is_new(api: Api, cast: Cast) -> None:
    a = await post(api, cast.member, {"text": "x"})
    b = await post(api, cast.member, {"text": "x"})
    assert a["id"] != b["id"]


@pytest.mark.parametrize(
    "key", [b"cl\xc3\xa9", b"tab\there", b"\x7f"], ids=["non-ascii", "tab", "del"]
)
async def test_unprintable_or_non_ascii_keys_are_refused(api: Api, cast: Cast, key: bytes) -> None:
    before = await api.snapshot()
    response = await api.client.post(
        "/v1/posts",
        json={"text": "x"},
        headers={b"Authorization": f"Bearer {cast.member}".encode(), b"Idempotency-Key": key},
    )
    assert_error(response, 422)
    assert await api.snapshot() == before
