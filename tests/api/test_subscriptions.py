"""Subscriptions open to the internet: bad input and abuse are refused with a clear 4xx and
change nothing (the whole database is snapshotted around each refusal, as in
test_refusals.py; only the rate counters a refusal is counted in may change, never state),
the answer does not tell whether an address is subscribed, and posters list and remove.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any
from urllib.parse import urlencode

import msgspec
import pytest
from twilio.request_validator import RequestValidator

from api.conftest import TEAM, Api, Cast, assert_error, bearer
from muster import keys, subscriptions
from muster.settings import Settings

pytestmark = pytest.mark.anyio

TWILIO_TOKEN = "inbound-test-auth-token-0123456789"
PUBLIC = "https://status.example.test"


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    from api.conftest import ADMIN_TOKEN

    return msgspec.structs.replace(
        settings,
        admin_token=ADMIN_TOKEN,
        public_url=PUBLIC,
        twilio_auth_token=TWILIO_TOKEN,
        subscribe_rate=4,
        subscribe_address_rate=2,
        subscribe_daily_confirmations=3,
    )


def state(snapshot: dict[bytes, Any]) -> dict[bytes, Any]:
    """Everything but rate counters (keys.rate), which count refusals on purpose."""
    return {k: v for k, v in snapshot.items() if not k.startswith(b"muster:rate:")}


async def refused(
    api: Api, method: str, path: str, status: int, code: str, **kw: Any
) -> dict[str, Any]:
    before = state(await api.snapshot())
    response = await api.call(method, path, **kw)
    error = assert_error(response, status, code)
    assert state(await api.snapshot()) == before, f"{method} {path} changed the database"
    return error


BAD_BODIES = [
    pytest.param({}, 422, "one_address_needed", id="no-address"),
    pytest.param(
        {"email": "a@example.test", "phone": "+15551234567"},
        422,
        "one_address_needed",
        id="two-addresses",
    ),
    pytest.param({"email": "not an address"}, 422, "invalid_email", id="bad-email"),
    pytest.param({"phone": "0791234567"}, 422, "invalid_phone", id="bad-phone"),
    pytest.param({"webhook_url": "ftp://example.test/x"}, 422, "invalid_url", id="bad-url"),
    pytest.param(
        {"webhook_url": "http://127.0.0.1/hook"},
        422,
        "private_webhook_target",
        id="private-webhook",
    ),
    pytest.param(
        {"webhook_url": "http://10.1.2.3/hook"}, 422, "private_webhook_target", id="private-range"
    ),
    pytest.param({"email": "a" * 250 + "@example.test"}, 422, "invalid_field", id="long-email"),
    pytest.param(
        {"email": "a@example.test", "components": ["a,b"]}, 422, "invalid_field", id="bad-component"
    ),
    pytest.param(
        {"email": "a@example.test", "components": ["x"] * 21},
        422,
        "invalid_field",
        id="too-many-components",
    ),
    pytest.param(
        {"email": "a@example.test", "role": "admin"}, 422, "unknown_field", id="unknown-field"
    ),
    pytest.param(b"[1]", 400, "not_an_object", id="not-an-object"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_BODIES)
async def test_bad_requests_are_refused_and_change_nothing(
    api: Api, cast: Cast, body: Any, status: int, code: str
) -> None:
    kw: dict[str, Any] = (
        {"json": body}
        if not isinstance(body, bytes)
        else {"content": body, "headers": {"Content-Type": "application/json"}}
    )
    await refused(api, "POST", f"/v1/accounts/{TEAM}/subscriptions", status, code, **kw)


async def test_unknown_account_is_404(api: Api, cast: Cast) -> None:
    await refused(
        api,
        "POST",
        "/v1/accounts/nobody/subscriptions",
        404,
        "no_such_account",
        json={"email": "a@example.test"},
    )


async def requests_for(api: Api, channel: str) -> list[Any]:
    found: Any = await api.redis.xrange(keys.deliveries(0, channel))
    return list(found)


async def test_the_answer_is_the_same_subscribed_or_not_and_limits_answer_429(
    api: Api, cast: Cast
) -> None:
    path = f"/v1/accounts/{TEAM}/subscriptions"
    first = await api.call("POST", path, json={"email": "kim@example.test"})
    second = await api.call("POST", path, json={"email": "KIM@example.test"})
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json() == {"status": "confirmation_sent"}
    assert len(await requests_for(api, "email")) == 2  # one confirmation per request
    # per target address: the third request for kim within the hour
    error = await refused(
        api, "POST", path, 429, "too_many_requests", json={"email": "kim@example.test"}
    )
    assert "address" in error["message"]
    # per client network: 4 an hour (two used above)
    await api.ok("POST", path, 202, json={"email": "lee@example.test"})
    await api.ok("POST", path, 202, json={"email": "max@example.test"})
    response = await api.call("POST", path, json={"email": "ned@example.test"})
    assert_error(response, 429, "too_many_requests")
    assert 1 <= int(response.headers["Retry-After"]) <= 3600
    assert len(await requests_for(api, "email")) == 4


async def test_confirmation_messages_per_address_are_capped_per_day(
    api: Api, cast: Cast, open_api: Any, api_settings: Settings
) -> None:
    relaxed = msgspec.structs.replace(api_settings, subscribe_rate=100, subscribe_address_rate=100)
    async with open_api(relaxed) as roomy:
        for _ in range(3):
            await roomy.ok(
                "POST", f"/v1/accounts/{TEAM}/subscriptions", 202, json={"phone": "+15551230000"}
            )
        await refused(
            roomy,
            "POST",
            f"/v1/accounts/{TEAM}/subscriptions",
            429,
            "confirmation_limit",
            json={"phone": "+15551230000"},
        )
        assert len(await requests_for(roomy, "sms")) == 3


async def confirmation_secret(api: Api, channel: str) -> str:
    """The token or code the latest confirmation request carries (what the worker sends)."""
    (_, entry), *_ = reversed(await requests_for(api, channel))
    secret = msgspec.json.decode(entry[b"e"])["secret"]
    assert isinstance(secret, str)
    return secret


async def test_forged_and_reused_tokens_and_wrong_codes_change_nothing(
    api: Api, cast: Cast
) -> None:
    await api.ok(
        "POST", f"/v1/accounts/{TEAM}/subscriptions", 202, json={"email": "kim@example.test"}
    )
    token = await confirmation_secret(api, "email")
    sid = subscriptions.subscription_id(TEAM, "email", "kim@example.test")
    await refused(
        api,
        "POST",
        "/v1/subscriptions/confirm",
        404,
        "invalid_token",
        json={"token": f"{sid}.{'A' * 43}"},
    )
    await refused(
        api,
        "POST",
        "/v1/subscriptions/confirm",
        404,
        "invalid_token",
        json={"token": f"{'0' * 20}.{token}"},
    )
    page = await api.call("POST", f"/subscriptions/confirm/{sid}.{'B' * 43}")
    assert page.status_code == 404
    await api.ok("POST", "/v1/subscriptions/confirm", json={"token": f"{sid}.{token}"})
    await refused(
        api,
        "POST",
        "/v1/subscriptions/confirm",
        404,
        "invalid_token",
        json={"token": f"{sid}.{token}"},
    )

    await api.ok("POST", f"/v1/accounts/{TEAM}/subscriptions", 202, json={"phone": "+15551230001"})
    code = await confirmation_secret(api, "sms")
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    await refused(
        api,
        "POST",
        "/v1/subscriptions/confirm",
        422,
        "wrong_code",
        json={"phone": "+15551230001", "code": wrong},
    )
    for _ in range(4):  # five wrong codes an hour, then 429 even for the right one
        await api.call(
            "POST", "/v1/subscriptions/confirm", json={"phone": "+15551230001", "code": wrong}
        )
    await refused(
        api,
        "POST",
        "/v1/subscriptions/confirm",
        429,
        "too_many_requests",
        json={"phone": "+15551230001", "code": code},
    )
    # forged unsubscribe links
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    before = state(await api.snapshot())
    for link in (f"{sid}.{'C' * 43}", "nothing", f"{'0' * 20}.{token}"):
        assert (
            await api.call("POST", f"/unsubscribe/{link}", content=b"x=1", headers=form)
        ).status_code == 404
        assert (await api.call("GET", f"/unsubscribe/{link}")).status_code == 404
    assert state(await api.snapshot()) == before


def twilio_headers(url: str, params: dict[str, str], token: str) -> dict[str, str]:
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": RequestValidator(token).compute_signature(url, params),
    }


async def test_inbound_sms_unsigned_or_forged_is_403_and_changes_nothing(
    api: Api, cast: Cast
) -> None:
    url = f"{PUBLIC}/v1/inbound/sms"
    stop = {"From": "+15551230001", "To": "+15550001111", "Body": "STOP"}
    body = urlencode(stop).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    await refused(api, "POST", "/v1/inbound/sms", 403, "bad_signature", content=body, headers=form)
    forged = twilio_headers(url, stop, "someone-elses-token")
    await refused(
        api, "POST", "/v1/inbound/sms", 403, "bad_signature", content=body, headers=forged
    )
    other_url = twilio_headers("https://elsewhere.test/v1/inbound/sms", stop, TWILIO_TOKEN)
    await refused(
        api, "POST", "/v1/inbound/sms", 403, "bad_signature", content=body, headers=other_url
    )
    tampered = twilio_headers(url, stop, TWILIO_TOKEN)
    changed = urlencode({**stop, "From": "+15551230002"}).encode()
    await refused(
        api, "POST", "/v1/inbound/sms", 403, "bad_signature", content=changed, headers=tampered
    )
    ok = await api.call("POST", "/v1/inbound/sms", content=body, headers=tampered)
    assert ok.status_code == 200
    assert ok.text.startswith("<?xml")


def test_the_signature_scheme_on_twilios_published_vector() -> None:
    """The vector Twilio's own library tests with (auth token 12345): the validator we use
    accepts it, and the scheme it implements is the documented one — HMAC-SHA1 of the URL
    followed by each POST parameter, sorted by name, name then value, base64."""
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
        "Caller": "+14158675309",
    }
    expected = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert RequestValidator("12345").validate(url, params, expected)
    assert not RequestValidator("12346").validate(url, params, expected)
    signed = url + "".join(k + params[k] for k in sorted(params))
    digest = hmac.new(b"12345", signed.encode(), hashlib.sha1).digest()
    assert base64.b64encode(digest).decode() == expected


async def test_posters_and_admins_list_and_remove_subscribers(api: Api, cast: Cast) -> None:
    await api.ok("PUT", f"/v1/accounts/{TEAM}/posters/mia", 204, token=cast.admin)
    await api.ok(
        "POST",
        f"/v1/accounts/{TEAM}/subscriptions",
        202,
        json={"email": "kim@example.test", "components": ["api", "db"]},
    )
    (sub,) = await api.ok("GET", f"/v1/accounts/{TEAM}/subscriptions", token=cast.member)
    assert sub["channel"] == "email"
    assert sub["address"] == "kim@example.test"
    assert sub["state"] == "pending"
    assert sub["components"] == ["api", "db"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT.*Z", sub["requested_at"])
    assert sub["confirmed_at"] is None
    for who in (cast.external, cast.service):
        response = await api.call("GET", f"/v1/accounts/{TEAM}/subscriptions", token=who)
        assert_error(response, 403, "not_allowed")
    assert_error(await api.call("GET", f"/v1/accounts/{TEAM}/subscriptions"), 401)
    await refused(
        api,
        "DELETE",
        f"/v1/accounts/{TEAM}/subscriptions/{sub['id']}",
        403,
        "not_allowed",
        headers=bearer(cast.external),
    )
    await refused(
        api,
        "DELETE",
        f"/v1/accounts/{TEAM}/subscriptions/{'f' * 20}",
        404,
        "no_such_subscription",
        headers=bearer(cast.admin),
    )
    await api.ok("DELETE", f"/v1/accounts/{TEAM}/subscriptions/{sub['id']}", 204, token=cast.member)
    (ended,) = await api.ok("GET", f"/v1/accounts/{TEAM}/subscriptions", token=cast.admin)
    assert (ended["state"], ended["ended_how"]) == ("ended", "removed")
    removal = [e for e in await api.events() if type(e).__name__ == "SubscriptionEnded"]
    assert [(e.actor, getattr(e, "how", None)) for e in removal] == [("mia", "removed")]
