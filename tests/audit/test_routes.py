"""GET /v1/audit and /v1/audit/export: filters, cursor, export, admins only, secrets redacted.

The events are made through the API and projected by the real audit worker, over two
partitions so results are merged; the expected answers are computed from the event log.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from audit.conftest import ADMIN_TOKEN, OpenSystem, System
from muster.api import auditlog
from muster.events import AnyEvent, AuditRead, event_type
from muster.ids import id_time_ms
from muster.projections.audit import handles_of
from muster.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
async def populated(audit_settings: Settings, open_system: OpenSystem) -> AsyncIterator[System]:
    settings = msgspec.structs.replace(audit_settings, partitions=2)
    async with open_system(settings) as s:
        pat = await s.person("pat", email="pat@example.com")
        mia = await s.person("mia", webhook_url="https://hooks.example.com/mia")
        await s.person("eve", "external")
        await s.team("ops", "pat")
        await s.follow(mia, "ops")
        for i in range(6):
            await s.post(pat, f"update {i}", as_="ops")
        await s.dm(pat, "mia", "psst")
        await s.dm(mia, "pat", "yes?")
        await s.settle()
        yield s


async def logged(s: System) -> list[AnyEvent]:
    return sorted((e for _, e in await s.log_events()), key=lambda e: int(e.id))


async def audit(s: System, token: str | None = ADMIN_TOKEN, **params: Any) -> list[dict[str, Any]]:
    body: list[dict[str, Any]] = await s.ok("GET", "/v1/audit", token=token, params=params)
    return body


async def test_everything_in_log_order_merged_across_partitions(populated: System) -> None:
    expected = await logged(populated)
    assert len(expected) == 15  # 5 accounts (admin too), 1 poster, 1 follow, 6 posts, 2 DMs
    got = await audit(populated, limit=1000)
    assert [e["id"] for e in got] == [e.id for e in expected]
    assert [e["type"] for e in got] == [event_type(e) for e in expected]
    assert len(await audit(populated)) == min(100, len(expected))


async def test_filters_by_account_type_and_both(populated: System) -> None:
    expected = await logged(populated)
    by_mia = await audit(populated, account="mia", limit=1000)
    assert [e["id"] for e in by_mia] == [e.id for e in expected if "mia" in handles_of(e)]
    posts = await audit(populated, type="PostPublished", limit=1000)
    assert [e["id"] for e in posts] == [e.id for e in expected if event_type(e) == "PostPublished"]
    assert len(posts) == 6
    mia_dms = await audit(populated, account="mia", type="DirectMessageSent", limit=1000)
    assert [e["id"] for e in mia_dms] == [
        e.id for e in expected if event_type(e) == "DirectMessageSent" and "mia" in handles_of(e)
    ]
    assert len(mia_dms) == 2
    assert await audit(populated, account="nobody") == []


async def test_time_range_is_since_inclusive_until_exclusive(populated: System) -> None:
    expected = await logged(populated)
    middle = expected[len(expected) // 2]
    cut_ms = id_time_ms(middle.id)
    cut = datetime.fromtimestamp(cut_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
    since = await audit(populated, since=cut, limit=1000)
    until = await audit(populated, until=cut, limit=1000)
    assert [e["id"] for e in since] == [e.id for e in expected if id_time_ms(e.id) >= cut_ms]
    assert [e["id"] for e in until] == [e.id for e in expected if id_time_ms(e.id) < cut_ms]
    assert len(since) + len(until) == len(expected)
    assert await audit(populated, since="2999-01-01T00:00:00Z") == []
    assert await audit(populated, until="1999-01-01T00:00:00Z") == []


async def test_the_cursor_pages_through_everything_once(populated: System) -> None:
    expected = [e.id for e in await logged(populated)]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 4}
    for _ in range(100):
        page = await audit(populated, **params)
        assert len(page) <= 4
        if not page:
            break
        seen += [str(e["id"]) for e in page]
        params["after"] = page[-1]["id"]
    assert seen == expected


async def test_only_admins_may_read_it(populated: System) -> None:
    mia = await populated.person("mia2")
    for path in ("/v1/audit", "/v1/audit/export"):
        response = await populated.call("GET", path, token=mia)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "admin_only"
        response = await populated.call("GET", path)
        assert response.status_code == 401


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"type": "NoSuchEvent"},
        {"since": "yesterday"},
        {"after": "abc"},
        {"account": "Not A Handle"},
    ],
)
async def test_bad_parameters_are_422(populated: System, params: dict[str, object]) -> None:
    response = await populated.call("GET", "/v1/audit", token=ADMIN_TOKEN, params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_parameter"


async def test_secrets_are_redacted(populated: System) -> None:
    response = await populated.call(
        "GET", "/v1/audit", token=ADMIN_TOKEN, params={"type": "AccountCreated", "limit": 1000}
    )
    assert b"whsec_" not in response.content
    created = {e["handle"]: e for e in response.json()}
    assert created["mia"]["webhook_secret"] == "[redacted]"
    assert created["mia"]["webhook_url"] == "https://hooks.example.com/mia"
    assert created["pat"]["token_hash"] == "[redacted]"
    assert created["pat"]["email"] == "pat@example.com"
    assert created["ops"]["token_hash"] is None  # a team has none: nothing to hide
    stored = await populated.redis.hvals(b"muster:{p1}:audit:events")
    stored += await populated.redis.hvals(b"muster:{p0}:audit:events")
    assert any(b"whsec_" in payload for payload in stored)  # redacted on the way out only


async def test_export_streams_every_match_as_json_lines(
    populated: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auditlog, "_PAGE", 3)  # several pages, however few events
    expected = await logged(populated)
    response = await populated.call("GET", "/v1/audit/export", token=ADMIN_TOKEN)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = response.content.decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [e.id for e in expected]
    assert b"whsec_" not in response.content
    response = await populated.call(
        "GET",
        "/v1/audit/export",
        token=ADMIN_TOKEN,
        params={"account": "pat", "type": "DirectMessageSent"},
    )
    dms = [json.loads(line) for line in response.content.decode().splitlines()]
    # An admin sees that the DMs happened, between whom and when, never what they said.
    assert [(d["actor"], d["recipient"], d["text"]) for d in dms] == [
        ("pat", "mia", "[withheld]"),
        ("mia", "pat", "[withheld]"),
    ]


async def test_only_an_auditor_reads_dm_text_and_each_read_is_audited(populated: System) -> None:
    carol = await populated.person("carol", "auditor")
    member = await populated.person("max")
    for token in (ADMIN_TOKEN, member):
        response = await populated.call("GET", "/v1/audit", token=token)
        if token == member:
            assert response.status_code == 403
            continue
        assert b"psst" not in response.content
        assert b"yes?" not in response.content
    before = await logged(populated)
    assert not [e for e in before if event_type(e) == "AuditRead"]  # admins' reads are not

    params = {"type": "DirectMessageSent", "since": "2020-01-01T00:00:00Z"}
    found = await audit(populated, carol, **params)
    assert [e["text"] for e in found] == ["psst", "yes?"]
    assert all(e.get("token_hash") in (None, "[redacted]") for e in found)
    export = await populated.call("GET", "/v1/audit/export", token=carol, params={"account": "mia"})
    assert b"psst" in export.content

    reads = [e for e in await logged(populated) if isinstance(e, AuditRead)]
    assert [(r.actor, r.route) for r in reads] == [
        ("carol", "GET /v1/audit"),
        ("carol", "GET /v1/audit/export"),
    ]
    first, second = reads
    assert first.event_type == "DirectMessageSent"
    assert first.since == datetime(2020, 1, 1, tzinfo=UTC)
    assert second.account == "mia"
    await populated.settle()
    # The record of the read is itself in the audit log, for admins and auditors to find.
    listed = await audit(populated, type="AuditRead")
    assert [e["actor"] for e in listed] == ["carol", "carol"]


async def test_openapi_describes_the_audit_routes(populated: System) -> None:
    document = (await populated.call("GET", "/openapi.json")).json()
    listed = document["paths"]["/v1/audit"]["get"]
    schema = listed["responses"]["200"]["content"]["application/json"]["schema"]
    refs = {item["$ref"].rsplit("/", 1)[1] for item in schema["items"]["anyOf"]}
    assert {"PostPublished", "DirectMessageSent", "AccountCreated"} <= refs
    assert all(name in document["components"]["schemas"] for name in refs)
    names = {p["name"] for p in listed["parameters"]}
    assert names == {"since", "until", "account", "type", "after", "limit"}
    export = document["paths"]["/v1/audit/export"]["get"]["responses"]["200"]["content"]
    assert "application/x-ndjson" in export
