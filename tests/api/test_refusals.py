"""Every refused write answers docs/api.md's status and error code, and writes nothing at all.

"A request that fails leaves no trace": each case below snapshots the whole database (every
key and value: the event log, accounts, follows, posters, tokens, idempotency records) before
and after the request and requires them equal.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from api.conftest import TEAM, Api, Cast, assert_error, bearer

pytestmark = pytest.mark.anyio

MAX_CHARS = 500  # the default MUSTER_MAX_POST_CHARS the `api` fixture runs with
ASTRAL = "\N{GRINNING FACE}"  # one code point; 4 bytes of UTF-8, 2 UTF-16 units

OVERSIZE = object()  # a JSON body just over MUSTER_MAX_BODY_BYTES, with Content-Length
OVERSIZE_CHUNKED = object()  # the same, chunked: no Content-Length at all


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    who: str  # admin, member, external, service, anonymous, unknown, basic
    body: Any  # a JSON-able value, raw bytes, OVERSIZE or OVERSIZE_CHUNKED
    status: int
    code: str | None = None
    field: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


def case(
    id_: str,
    method: str,
    path: str,
    who: str,
    body: Any,
    status: int,
    code: str | None = None,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    return pytest.param(
        Case(method, path, who, body, status, code, field, tuple((headers or {}).items())),
        id=id_,
    )


def account(**fields: Any) -> dict[str, Any]:
    return {"handle": "newbie", "kind": "person", **fields}


NOT_JSON = b'{"text": "hello"'
INVALID_UTF8 = b'{"text": "caf\xe9"}'
PRIVATE_TARGETS = [
    "http://127.0.0.1/hook",
    "http://10.1.2.3/hook",
    "http://192.168.0.10:8080/hook",
    "http://172.16.5.4/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://0.0.0.0/hook",
    "http://localhost:9000/hook",
    "http://api.localhost/hook",
    "http://printer.local/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[fe80::1]/hook",
    "http://[fd00::1]/hook",
]
BAD_URLS = [
    "ftp://example.com/hook",
    "example.com/hook",
    "not a url",
    "http:///hook",
    "https://user:pw@example.com/hook",
    "http://[::1/hook",
    "javascript:alert(1)",
]
BAD_PHONES = [
    "555-1234",
    "+0123456789",
    "+1 555 123 4567",
    "15551234567",
    "+1555",
    "+1555123456789012",
]
BAD_EMAILS = ["mia", "mia@", "@example.com", "mia@example", "mia example@example.com"]

CASES = [
    # --- POST /v1/accounts ------------------------------------------------------------------
    case("account-no-token", "POST", "/v1/accounts", "anonymous", account(), 401, "missing_token"),
    case(
        "account-unknown-token", "POST", "/v1/accounts", "unknown", account(), 401, "unknown_token"
    ),
    case("account-basic-auth", "POST", "/v1/accounts", "basic", account(), 401),
    case("account-member", "POST", "/v1/accounts", "member", account(), 403, "admin_only"),
    case("account-external", "POST", "/v1/accounts", "external", account(), 403, "admin_only"),
    case("account-service", "POST", "/v1/accounts", "service", account(), 403, "admin_only"),
    case("account-not-json", "POST", "/v1/accounts", "admin", NOT_JSON, 400, "invalid_json"),
    case("account-array", "POST", "/v1/accounts", "admin", [account()], 400, "not_an_object"),
    case("account-string", "POST", "/v1/accounts", "admin", "newbie", 400, "not_an_object"),
    case("account-number", "POST", "/v1/accounts", "admin", 42, 400, "not_an_object"),
    case("account-null", "POST", "/v1/accounts", "admin", None, 400, "not_an_object"),
    case("account-empty-body", "POST", "/v1/accounts", "admin", b"", 400),
    case("account-bad-utf8", "POST", "/v1/accounts", "admin", INVALID_UTF8, 400),
    case("account-trailing", "POST", "/v1/accounts", "admin", b'{"handle": "x"} {}', 400),
    case(
        "handle-taken",
        "POST",
        "/v1/accounts",
        "admin",
        account(handle="mia"),
        409,
        "handle_taken",
        field="handle",
    ),
    case(
        "handle-taken-by-team",
        "POST",
        "/v1/accounts",
        "admin",
        account(handle=TEAM, kind="team"),
        409,
        "handle_taken",
    ),
    case("handle-admin-taken", "POST", "/v1/accounts", "admin", account(handle="admin"), 409),
    *[
        case(
            f"bad-handle-{i}",
            "POST",
            "/v1/accounts",
            "admin",
            account(handle=h),
            422,
            field="handle",
        )
        for i, h in enumerate(["Mia", "mia-2", "mia.b", "", "a" * 31, "mïa", "mia ", "😀"])
    ],
    case(
        "unknown-field",
        "POST",
        "/v1/accounts",
        "admin",
        account(nickname="m"),
        422,
        "unknown_field",
        field="nickname",
    ),
    case(
        "token-field", "POST", "/v1/accounts", "admin", account(token="mine"), 422, "unknown_field"
    ),
    case(
        "missing-kind", "POST", "/v1/accounts", "admin", {"handle": "newbie"}, 422, "missing_field"
    ),
    case(
        "missing-handle", "POST", "/v1/accounts", "admin", {"kind": "person"}, 422, "missing_field"
    ),
    case("bad-kind", "POST", "/v1/accounts", "admin", account(kind="robot"), 422, field="kind"),
    case("bad-role", "POST", "/v1/accounts", "admin", account(role="root"), 422, field="role"),
    case(
        "service-with-role",
        "POST",
        "/v1/accounts",
        "admin",
        account(kind="service", role="admin"),
        422,
        "role_not_allowed",
        field="role",
    ),
    case(
        "team-with-role",
        "POST",
        "/v1/accounts",
        "admin",
        account(kind="team", role="member"),
        422,
        "role_not_allowed",
    ),
    case(
        "team-with-email",
        "POST",
        "/v1/accounts",
        "admin",
        account(kind="team", email="ops@example.com"),
        422,
        "team_contact_points",
    ),
    case(
        "blank-display-name",
        "POST",
        "/v1/accounts",
        "admin",
        account(display_name="  "),
        422,
        field="display_name",
    ),
    case(
        "long-display-name",
        "POST",
        "/v1/accounts",
        "admin",
        account(display_name="x" * 101),
        422,
        field="display_name",
    ),
    case("handle-number", "POST", "/v1/accounts", "admin", account(handle=7), 422, field="handle"),
    *[
        case(
            f"bad-url-{i}",
            "POST",
            "/v1/accounts",
            "admin",
            account(webhook_url=u),
            422,
            "invalid_url",
            field="webhook_url",
        )
        for i, u in enumerate(BAD_URLS)
    ],
    *[
        case(
            f"private-webhook-{i}",
            "POST",
            "/v1/accounts",
            "admin",
            account(webhook_url=u),
            422,
            "private_webhook_target",
            field="webhook_url",
        )
        for i, u in enumerate(PRIVATE_TARGETS)
    ],
    *[
        case(
            f"bad-phone-{i}",
            "POST",
            "/v1/accounts",
            "admin",
            account(phone=p),
            422,
            "invalid_phone",
            field="phone",
        )
        for i, p in enumerate(BAD_PHONES)
    ],
    *[
        case(
            f"bad-email-{i}",
            "POST",
            "/v1/accounts",
            "admin",
            account(email=e),
            422,
            "invalid_email",
            field="email",
        )
        for i, e in enumerate(BAD_EMAILS)
    ],
    case("account-oversize", "POST", "/v1/accounts", "admin", OVERSIZE, 413, "payload_too_large"),
    case(
        "account-oversize-chunked",
        "POST",
        "/v1/accounts",
        "admin",
        OVERSIZE_CHUNKED,
        413,
        "payload_too_large",
    ),
    # --- PATCH /v1/me -----------------------------------------------------------------------
    case(
        "me-no-token", "PATCH", "/v1/me", "anonymous", {"display_name": "M"}, 401, "missing_token"
    ),
    case(
        "me-unknown-token",
        "PATCH",
        "/v1/me",
        "unknown",
        {"display_name": "M"},
        401,
        "unknown_token",
    ),
    case("me-not-json", "PATCH", "/v1/me", "member", NOT_JSON, 400, "invalid_json"),
    case("me-array", "PATCH", "/v1/me", "member", [], 400, "not_an_object"),
    case(
        "me-role",
        "PATCH",
        "/v1/me",
        "member",
        {"role": "admin"},
        422,
        "unknown_field",
        field="role",
    ),
    case("me-handle", "PATCH", "/v1/me", "member", {"handle": "boss"}, 422, "unknown_field"),
    case("me-kind", "PATCH", "/v1/me", "service", {"kind": "person"}, 422, "unknown_field"),
    case(
        "me-bad-phone",
        "PATCH",
        "/v1/me",
        "member",
        {"phone": "12345"},
        422,
        "invalid_phone",
        field="phone",
    ),
    case("me-bad-email", "PATCH", "/v1/me", "member", {"email": "nope"}, 422, "invalid_email"),
    case(
        "me-bad-url",
        "PATCH",
        "/v1/me",
        "member",
        {"webhook_url": "ftp://x.org/"},
        422,
        "invalid_url",
    ),
    case(
        "me-private-url",
        "PATCH",
        "/v1/me",
        "service",
        {"webhook_url": "http://127.0.0.1:8000/hook"},
        422,
        "private_webhook_target",
        field="webhook_url",
    ),
    case(
        "me-blank-name",
        "PATCH",
        "/v1/me",
        "member",
        {"display_name": " "},
        422,
        field="display_name",
    ),
    case(
        "me-null-name",
        "PATCH",
        "/v1/me",
        "member",
        {"display_name": None},
        422,
        field="display_name",
    ),
    case("me-oversize", "PATCH", "/v1/me", "member", OVERSIZE, 413, "payload_too_large"),
    case("me-oversize-chunked", "PATCH", "/v1/me", "member", OVERSIZE_CHUNKED, 413),
    # --- posters ----------------------------------------------------------------------------
    case("grant-no-token", "PUT", f"/v1/accounts/{TEAM}/posters/mia", "anonymous", None, 401),
    case(
        "grant-member", "PUT", f"/v1/accounts/{TEAM}/posters/mia", "member", None, 403, "admin_only"
    ),
    case("grant-service", "PUT", f"/v1/accounts/{TEAM}/posters/mia", "service", None, 403),
    case("grant-external", "PUT", f"/v1/accounts/{TEAM}/posters/eve", "external", None, 403),
    case(
        "grant-no-team",
        "PUT",
        "/v1/accounts/nobody/posters/mia",
        "admin",
        None,
        404,
        "no_such_account",
    ),
    case("grant-no-person", "PUT", f"/v1/accounts/{TEAM}/posters/nobody", "admin", None, 404),
    case(
        "grant-to-person", "PUT", "/v1/accounts/eve/posters/mia", "admin", None, 422, "wrong_kind"
    ),
    case("grant-a-team", "PUT", "/v1/accounts/svc/posters/ops", "admin", None, 422, "wrong_kind"),
    case(
        "grant-a-service",
        "PUT",
        f"/v1/accounts/{TEAM}/posters/svc",
        "admin",
        None,
        422,
        "wrong_kind",
    ),
    case("revoke-no-token", "DELETE", f"/v1/accounts/{TEAM}/posters/mia", "anonymous", None, 401),
    case("revoke-member", "DELETE", f"/v1/accounts/{TEAM}/posters/mia", "member", None, 403),
    case("revoke-no-team", "DELETE", "/v1/accounts/nobody/posters/mia", "admin", None, 404),
    # --- follows ----------------------------------------------------------------------------
    case("follow-no-token", "PUT", "/v1/me/follows/ops", "anonymous", None, 401, "missing_token"),
    case("follow-unknown-token", "PUT", "/v1/me/follows/ops", "unknown", None, 401),
    case("follow-service", "PUT", "/v1/me/follows/ops", "service", None, 403, "person_only"),
    case("follow-nobody", "PUT", "/v1/me/follows/nobody", "member", None, 404, "no_such_account"),
    case("follow-self", "PUT", "/v1/me/follows/mia", "member", None, 422, "cannot_follow_self"),
    case(
        "follow-bad-channel", "PUT", "/v1/me/follows/svc", "member", {"channels": ["pigeon"]}, 422
    ),
    case("follow-channels-str", "PUT", "/v1/me/follows/svc", "member", {"channels": "email"}, 422),
    case(
        "follow-unknown-field",
        "PUT",
        "/v1/me/follows/svc",
        "member",
        {"mute": True},
        422,
        "unknown_field",
    ),
    case("follow-not-json", "PUT", "/v1/me/follows/svc", "member", NOT_JSON, 400, "invalid_json"),
    case("follow-array", "PUT", "/v1/me/follows/svc", "member", ["email"], 400, "not_an_object"),
    case("follow-oversize", "PUT", "/v1/me/follows/svc", "member", OVERSIZE, 413),
    case("follow-oversize-chunked", "PUT", "/v1/me/follows/svc", "member", OVERSIZE_CHUNKED, 413),
    case("unfollow-no-token", "DELETE", "/v1/me/follows/ops", "anonymous", None, 401),
    case("unfollow-service", "DELETE", "/v1/me/follows/ops", "service", None, 403, "person_only"),
    case("unfollow-nobody", "DELETE", "/v1/me/follows/nobody", "member", None, 404),
    case(
        "unfollow-mandatory",
        "DELETE",
        "/v1/me/follows/ops",
        "member",
        None,
        403,
        "mandatory_follow",
    ),
    # --- enrolments -------------------------------------------------------------------------
    case(
        "enrol-no-token",
        "PUT",
        "/v1/accounts/svc/enrolments",
        "anonymous",
        {"followers": ["mia"]},
        401,
    ),
    case(
        "enrol-member",
        "PUT",
        "/v1/accounts/svc/enrolments",
        "member",
        {"followers": ["mia"]},
        403,
        "admin_only",
    ),
    case(
        "enrol-service",
        "PUT",
        "/v1/accounts/svc/enrolments",
        "service",
        {"followers": "all_members"},
        403,
    ),
    case(
        "enrol-external",
        "PUT",
        "/v1/accounts/svc/enrolments",
        "external",
        {"followers": ["eve"]},
        403,
    ),
    case(
        "enrol-nobody",
        "PUT",
        "/v1/accounts/nobody/enrolments",
        "admin",
        {"followers": ["mia"]},
        404,
    ),
    case(
        "enrol-unknown-follower",
        "PUT",
        "/v1/accounts/svc/enrolments",
        "admin",
        {"followers": ["mia", "ghost"]},
        422,
        "unknown_followers",
        field="followers",
    ),
    case(
        "enrol-a-team",
        "PUT",
        "/v1/accounts/svc/enrolments",
        "admin",
        {"followers": ["mia", TEAM]},
        422,
        "wrong_kind",
        field="followers",
    ),
    case(
        "enrol-a-service",
        "PUT",
        "/v1/accounts/ops/enrolments",
        "admin",
        {"followers": ["svc"]},
        422,
        "wrong_kind",
    ),
    case(
        "enrol-everyone",
        "PUT",
        "/v1/accounts/svc/enrolments",
        "admin",
        {"followers": "everyone"},
        422,
    ),
    case(
        "enrol-bad-handle",
        "PUT",
        "/v1/accounts/svc/enrolments",
        "admin",
        {"followers": ["Mia"]},
        422,
    ),
    case(
        "enrol-no-followers",
        "PUT",
        "/v1/accounts/svc/enrolments",
        "admin",
        {"channels": ["app"]},
        422,
        "missing_field",
    ),
    case(
        "enrol-bad-channel",
        "PUT",
        "/v1/accounts/svc/enrolments",
        "admin",
        {"followers": ["mia"], "channels": ["fax"]},
        422,
    ),
    case(
        "enrol-bad-mandatory",
        "PUT",
        "/v1/accounts/svc/enrolments",
        "admin",
        {"followers": ["mia"], "mandatory": "yes"},
        422,
        field="mandatory",
    ),
    case("enrol-not-json", "PUT", "/v1/accounts/svc/enrolments", "admin", NOT_JSON, 400),
    case(
        "enrol-array", "PUT", "/v1/accounts/svc/enrolments", "admin", ["mia"], 400, "not_an_object"
    ),
    case("enrol-oversize", "PUT", "/v1/accounts/svc/enrolments", "admin", OVERSIZE, 413),
    # --- POST /v1/posts ---------------------------------------------------------------------
    case("post-no-token", "POST", "/v1/posts", "anonymous", {"text": "hi"}, 401, "missing_token"),
    case(
        "post-unknown-token", "POST", "/v1/posts", "unknown", {"text": "hi"}, 401, "unknown_token"
    ),
    case("post-basic-auth", "POST", "/v1/posts", "basic", {"text": "hi"}, 401),
    case("post-not-json", "POST", "/v1/posts", "member", NOT_JSON, 400, "invalid_json"),
    case("post-bad-utf8", "POST", "/v1/posts", "member", INVALID_UTF8, 400, "invalid_json"),
    case("post-array", "POST", "/v1/posts", "member", [{"text": "hi"}], 400, "not_an_object"),
    case("post-string", "POST", "/v1/posts", "member", "hi", 400, "not_an_object"),
    case(
        "post-empty-text",
        "POST",
        "/v1/posts",
        "member",
        {"text": ""},
        422,
        "text_empty",
        field="text",
    ),
    case("post-blank-text", "POST", "/v1/posts", "member", {"text": " \n\t "}, 422, "text_empty"),
    case(
        "post-no-text",
        "POST",
        "/v1/posts",
        "member",
        {"severity": "info"},
        422,
        "missing_field",
        field="text",
    ),
    case("post-null-text", "POST", "/v1/posts", "member", {"text": None}, 422, field="text"),
    case(
        "post-too-long-astral",
        "POST",
        "/v1/posts",
        "member",
        {"text": ASTRAL * (MAX_CHARS + 1)},
        422,
        "text_too_long",
        field="text",
    ),
    case(
        "post-too-long-ascii",
        "POST",
        "/v1/posts",
        "member",
        {"text": "x" * (MAX_CHARS + 1)},
        422,
        "text_too_long",
    ),
    case("post-nul", "POST", "/v1/posts", "member", {"text": "a\x00b"}, 422, field="text"),
    case(
        "post-unknown-field",
        "POST",
        "/v1/posts",
        "member",
        {"text": "hi", "pin": 1},
        422,
        "unknown_field",
        field="pin",
    ),
    case(
        "post-author-field",
        "POST",
        "/v1/posts",
        "member",
        {"text": "hi", "author": "admin"},
        422,
        "unknown_field",
    ),
    case(
        "post-bad-visibility",
        "POST",
        "/v1/posts",
        "member",
        {"text": "hi", "visibility": "secret"},
        422,
        field="visibility",
    ),
    case(
        "post-bad-severity",
        "POST",
        "/v1/posts",
        "member",
        {"text": "hi", "severity": "panic"},
        422,
        field="severity",
    ),
    case(
        "post-bad-reply",
        "POST",
        "/v1/posts",
        "member",
        {"text": "hi", "in_reply_to": "abc"},
        422,
        field="in_reply_to",
    ),
    case(
        "post-as-bad-handle",
        "POST",
        "/v1/posts",
        "member",
        {"text": "hi", "as": "Ops"},
        422,
        field="as",
    ),
    case(
        "post-as-team",
        "POST",
        "/v1/posts",
        "member",
        {"text": "hi", "as": TEAM},
        403,
        "not_a_poster",
        field="as",
    ),
    case(
        "post-as-service",
        "POST",
        "/v1/posts",
        "member",
        {"text": "hi", "as": "svc"},
        403,
        "not_a_poster",
    ),
    case(
        "post-as-person",
        "POST",
        "/v1/posts",
        "member",
        {"text": "hi", "as": "eve"},
        403,
        "not_a_poster",
    ),
    case("post-as-admin", "POST", "/v1/posts", "member", {"text": "hi", "as": "admin"}, 403),
    case(
        "admin-as-team",
        "POST",
        "/v1/posts",
        "admin",
        {"text": "hi", "as": TEAM},
        403,
        "not_a_poster",
    ),
    case("service-as-team", "POST", "/v1/posts", "service", {"text": "hi", "as": TEAM}, 403),
    case("post-as-nobody", "POST", "/v1/posts", "member", {"text": "hi", "as": "nobody"}, 404),
    case(
        "external-internal",
        "POST",
        "/v1/posts",
        "external",
        {"text": "hi", "visibility": "internal"},
        403,
        field="visibility",
    ),
    case(
        "empty-idempotency-key",
        "POST",
        "/v1/posts",
        "member",
        {"text": "hi"},
        422,
        headers={"Idempotency-Key": ""},
    ),
    case(
        "long-idempotency-key",
        "POST",
        "/v1/posts",
        "member",
        {"text": "hi"},
        422,
        headers={"Idempotency-Key": "k" * 256},
    ),
    case("post-oversize", "POST", "/v1/posts", "member", OVERSIZE, 413, "payload_too_large"),
    case("post-oversize-chunked", "POST", "/v1/posts", "member", OVERSIZE_CHUNKED, 413),
    case("post-oversize-anonymous", "POST", "/v1/posts", "anonymous", OVERSIZE, 413),
    # --- POST /v1/dms -----------------------------------------------------------------------
    case("dm-no-token", "POST", "/v1/dms", "anonymous", {"to": "eve", "text": "hi"}, 401),
    case("dm-unknown-token", "POST", "/v1/dms", "unknown", {"to": "eve", "text": "hi"}, 401),
    case("dm-not-json", "POST", "/v1/dms", "member", NOT_JSON, 400, "invalid_json"),
    case("dm-array", "POST", "/v1/dms", "member", [], 400, "not_an_object"),
    case("dm-nobody", "POST", "/v1/dms", "member", {"to": "nobody", "text": "hi"}, 404, field="to"),
    case(
        "dm-self",
        "POST",
        "/v1/dms",
        "member",
        {"to": "mia", "text": "hi"},
        422,
        "cannot_message_self",
    ),
    case(
        "dm-team",
        "POST",
        "/v1/dms",
        "member",
        {"to": TEAM, "text": "hi"},
        422,
        "wrong_kind",
        field="to",
    ),
    case("dm-service", "POST", "/v1/dms", "member", {"to": "svc", "text": "hi"}, 422, "wrong_kind"),
    case(
        "dm-bad-handle", "POST", "/v1/dms", "member", {"to": "E V E", "text": "hi"}, 422, field="to"
    ),
    case("dm-no-to", "POST", "/v1/dms", "member", {"text": "hi"}, 422, "missing_field", field="to"),
    case("dm-empty", "POST", "/v1/dms", "member", {"to": "eve", "text": ""}, 422, "text_empty"),
    case(
        "dm-too-long",
        "POST",
        "/v1/dms",
        "member",
        {"to": "eve", "text": ASTRAL * (MAX_CHARS + 1)},
        422,
        "text_too_long",
    ),
    case(
        "dm-unknown-field",
        "POST",
        "/v1/dms",
        "member",
        {"to": "eve", "text": "hi", "cc": "x"},
        422,
        "unknown_field",
    ),
    case("dm-oversize", "POST", "/v1/dms", "member", OVERSIZE, 413),
    case("dm-oversize-chunked", "POST", "/v1/dms", "member", OVERSIZE_CHUNKED, 413),
]


@pytest.fixture
async def world(api: Api, cast: Cast) -> Cast:
    """The cast, with mia enrolled (mandatory) to follow the team `ops`."""
    response = await api.call(
        "PUT",
        f"/v1/accounts/{TEAM}/enrolments",
        token=cast.admin,
        json={"followers": ["mia"], "mandatory": True},
    )
    assert response.status_code == 202, response.text
    await api.expand(response.json()["id"])
    return cast


def headers_for(who: str, cast: Cast) -> dict[str, str]:
    if who == "anonymous":
        return {}
    if who == "unknown":
        return bearer("mst_this-token-was-never-issued")
    if who == "basic":
        return {"Authorization": "Basic YWRtaW46YWRtaW4="}
    token = cast.by_name(who)
    assert token is not None, who
    return bearer(token)


def oversize_body(limit: int) -> bytes:
    """Valid JSON for every route, one byte over the limit."""
    prefix, suffix = b'{"text": "', b'"}'
    return prefix + b"a" * (limit + 1 - len(prefix) - len(suffix)) + suffix


async def chunks(body: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize("refused", CASES)
async def test_refused_write_answers_its_status_and_writes_nothing(
    api: Api, world: Cast, refused: Case
) -> None:
    headers = headers_for(refused.who, world)
    headers.update(dict(refused.headers))
    limit = api.settings.max_body_bytes
    content: Any
    if refused.body is OVERSIZE:
        content = oversize_body(limit)
        assert len(content) == limit + 1
    elif refused.body is OVERSIZE_CHUNKED:
        content = chunks(oversize_body(limit))
    elif isinstance(refused.body, bytes):
        content = refused.body
    elif refused.body is None and refused.method in {"PUT", "DELETE"}:
        content = None  # a route without a body
    else:
        content = json.dumps(refused.body).encode()
        headers["Content-Type"] = "application/json"
    before = await api.snapshot()
    response = await api.client.request(
        refused.method, refused.path, content=content, headers=headers
    )
    assert_error(response, refused.status, refused.code, field=refused.field)
    if refused.body is OVERSIZE_CHUNKED:
        assert "content-length" not in {k.lower() for k in response.request.headers}
        assert response.request.headers["transfer-encoding"] == "chunked"
    assert await api.snapshot() == before
