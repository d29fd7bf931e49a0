"""Operations: /healthz, /readyz, the metrics' content, /openapi.json, errors outside the routes,
Redis down. (The metrics listener itself, a separate port of `muster api`: tests/test_metrics.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector
from redis_server import RedisServer

from api.conftest import ADMIN_TOKEN, Api, Cast, OpenApi, assert_error
from muster import keys
from muster.api.metrics import read_system
from muster.api.routes.ops import expected_groups
from muster.settings import Settings

pytestmark = pytest.mark.anyio

# Routes docs/api.md names (the sections this suite covers) → whether they take a JSON body.
CONTRACT: dict[tuple[str, str], bool] = {
    ("post", "/v1/accounts"): True,
    ("get", "/v1/accounts/{handle}"): False,
    ("get", "/v1/me"): False,
    ("patch", "/v1/me"): True,
    ("put", "/v1/accounts/{team}/posters/{handle}"): False,  # no body: the path says it all
    ("delete", "/v1/accounts/{team}/posters/{handle}"): False,
    ("put", "/v1/me/follows/{handle}"): True,
    ("delete", "/v1/me/follows/{handle}"): False,
    ("get", "/v1/me/follows"): False,
    ("put", "/v1/accounts/{handle}/enrolments"): True,
    ("patch", "/v1/accounts/{handle}"): True,
    ("post", "/v1/accounts/{handle}/token"): False,
    ("post", "/v1/me/tokens"): True,
    ("get", "/v1/me/tokens"): False,
    ("delete", "/v1/me/tokens/{token_id}"): False,
    ("post", "/v1/rollcalls/{rollcall_id}/close"): False,  # the path says it all
    ("post", "/v1/posts"): True,
    ("post", "/v1/dms"): True,
    ("get", "/healthz"): False,
    ("get", "/readyz"): False,
}
BODILESS_WRITES = {k for k, has_body in CONTRACT.items() if not has_body and k[0] != "get"}


async def create_groups(api: Api, *, skip: tuple[str, str] | None = None) -> None:
    for stream, groups in expected_groups(api.settings.partitions).items():
        for group in groups:
            if (stream, group) != skip:
                await api.redis.xgroup_create(stream, group, id="0", mkstream=True)


# --- health and readiness ---------------------------------------------------------------------
async def test_healthz(api: Api) -> None:
    response = await api.call("GET", "/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_expected_groups_cover_every_stream_that_workers_read() -> None:
    groups = expected_groups(3)
    for p in range(3):
        assert groups[keys.events(p)] == set(keys.EVENT_LOG_GROUPS)
        for channel in keys.OFFAPP_CHANNELS:
            assert groups[keys.deliveries(p, channel)] == {keys.GROUP_DELIVERY}


async def test_readyz_waits_for_every_consumer_group(
    api_settings: Settings, open_api: OpenApi
) -> None:
    async with open_api(msgspec.structs.replace(api_settings, partitions=2)) as api:
        response = await api.call("GET", "/readyz")
        assert response.status_code == 503
        missing = response.json()["detail"]
        assert set(missing) == set(expected_groups(2))

        last = (keys.deliveries(1, "webhook"), keys.GROUP_DELIVERY)
        await create_groups(api, skip=last)
        response = await api.call("GET", "/readyz")
        assert response.status_code == 503
        assert response.json()["detail"] == {last[0]: last[1]}

        await api.redis.xgroup_create(last[0], last[1], id="0", mkstream=True)
        response = await api.call("GET", "/readyz")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "ready"


async def test_readyz_ignores_unrelated_groups(api: Api) -> None:
    await api.redis.xgroup_create(keys.events(0), "someone_else", id="0", mkstream=True)
    assert (await api.call("GET", "/readyz")).status_code == 503


# --- metrics ----------------------------------------------------------------------------------
def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one Prometheus sample, or None when absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] != name:
            continue
        found = dict(
            part.split("=", 1) for part in series.partition("{")[2].rstrip("}").split(",") if part
        )
        if {k: v.strip('"') for k, v in found.items()} == labels:
            return float(value)
    return None


class Snapshot(Collector):
    def __init__(self, metrics: list[Any]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        return iter(self.metrics)


async def scrape(api: Api) -> str:
    """What the metrics listener serves for this process: its counters and the system gauges."""
    registry = CollectorRegistry()
    registry.register(Snapshot(await read_system(api.redis, api.settings.partitions)))
    return (generate_latest(api.state.metrics.registry) + generate_latest(registry)).decode()


async def test_metrics_are_not_on_the_public_port(api: Api) -> None:
    assert_error(await api.call("GET", "/metrics"), 404)


async def test_metrics_counts_ingest_and_shows_lag(api: Api, cast: Cast) -> None:
    await create_groups(api)
    for i in range(3):
        await api.call("POST", "/v1/posts", token=cast.member, json={"text": f"{i}"})
    await api.call("POST", "/v1/dms", token=cast.member, json={"to": "eve", "text": "x"})
    text = await scrape(api)
    assert "muster_ingest_events_total" in text
    assert "muster_stream_lag" in text
    assert sample(text, "muster_ingest_events_total", type="PostPublished") == 3
    assert sample(text, "muster_ingest_events_total", type="DirectMessageSent") == 1
    assert sample(text, "muster_ingest_events_total", type="AccountCreated") == 5
    stream = keys.events(0)
    total = await api.log_length()
    for group in keys.EVENT_LOG_GROUPS:
        assert sample(text, "muster_stream_lag", stream=stream, group=group) == total


async def test_metrics_count_refusals(api_settings: Settings, open_api: OpenApi) -> None:
    async with open_api(msgspec.structs.replace(api_settings, max_lag=1)) as api:
        token = await api.person("mia")
        await api.redis.xgroup_create(keys.events(0), keys.GROUP_TIMELINE, id="0")
        await api.state.lag.refresh()
        assert (
            await api.call("POST", "/v1/posts", token=token, json={"text": "x"})
        ).status_code == 429
        text = await scrape(api)
        assert sample(text, "muster_ingest_refused_total", reason="backpressure") == 1


# --- errors outside the routes ----------------------------------------------------------------
async def test_unknown_route_is_404_in_the_error_shape(api: Api) -> None:
    assert_error(await api.call("GET", "/v1/nothing-here"), 404)
    assert_error(await api.call("POST", "/v2/posts", json={"text": "x"}), 404)


async def test_wrong_method_is_405_in_the_error_shape(api: Api, cast: Cast) -> None:
    assert_error(await api.call("DELETE", "/v1/posts", token=cast.member), 405)
    assert_error(await api.call("POST", "/v1/me", token=cast.member, json={}), 405)


# --- Redis down -------------------------------------------------------------------------------
async def test_redis_down_gives_503_with_retry_after(
    redis_factory: Any, make_settings: Any, open_api: OpenApi
) -> None:
    server: RedisServer = redis_factory()
    settings = msgspec.structs.replace(make_settings(server), admin_token=ADMIN_TOKEN)
    async with open_api(settings) as api:
        token = await api.person("mia")
        server.stop()
        assert (await api.call("GET", "/healthz")).status_code == 200  # the process still runs
        ready = await api.call("GET", "/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] != "ready"
        for method, path, body in [
            ("GET", "/v1/me", None),
            ("POST", "/v1/posts", {"text": "is anyone there?"}),
            ("POST", "/v1/accounts", {"handle": "late", "kind": "team"}),
        ]:
            kwargs: dict[str, Any] = {} if body is None else {"json": body}
            who = ADMIN_TOKEN if path == "/v1/accounts" else token
            assert_error(await api.call(method, path, token=who, **kwargs), 503, "unavailable")
        server.start()  # back, empty (no persistence): answers again, not yet ready
        assert (await api.call("GET", "/readyz")).status_code == 503
        assert (await api.call("GET", "/v1/accounts/mia")).status_code == 404


# --- /openapi.json ----------------------------------------------------------------------------
@pytest.fixture
async def document(api: Api) -> dict[str, Any]:
    response = await api.call("GET", "/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    assert ref.startswith("#/components/schemas/"), ref
    name = ref.removeprefix("#/components/schemas/")
    assert name in doc["components"]["schemas"], f"dangling {ref}"
    resolved: dict[str, Any] = doc["components"]["schemas"][name]
    return resolved


def every_ref(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from every_ref(value)
    elif isinstance(node, list):
        for item in node:
            yield from every_ref(item)


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, items in doc["paths"].items():
        for method, operation in items.items():
            if method in {"get", "put", "post", "patch", "delete"}:
                yield method, path, operation


async def test_openapi_lists_every_route_of_the_contract(document: dict[str, Any]) -> None:
    present = {(m, p) for m, p, _ in operations(document)}
    assert set(CONTRACT) <= present, set(CONTRACT) - present


async def test_openapi_every_write_with_a_body_has_a_request_schema(
    document: dict[str, Any],
) -> None:
    for method, path, operation in operations(document):
        if method not in {"post", "put", "patch"} or (method, path) in BODILESS_WRITES:
            continue
        body = operation.get("requestBody")
        assert body is not None, f"{method.upper()} {path} has no requestBody"
        forms = {"application/x-www-form-urlencoded", "multipart/form-data"}
        if set(body["content"]) <= forms:
            # a provider's webhook (inbound SMS, email): its form names the fields we read, and
            # the provider sends more, which the signature covers, so extra fields are allowed
            for form in (body["content"][kind]["schema"] for kind in body["content"]):
                assert form["type"] == "object", (method, path)
                assert form["properties"], (method, path)
            continue
        schema = body["content"]["application/json"]["schema"]
        resolved = resolve(document, schema)
        assert resolved.get("type") == "object", (method, path, resolved)
        assert resolved.get("properties"), (method, path)
        # requests refuse unknown fields (docs/api.md: 422 unknown field): say so
        assert resolved.get("additionalProperties") is False, (method, path)


async def test_openapi_request_schemas_carry_the_field_rules(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    create = schemas["CreateAccount"]
    assert create["properties"]["handle"]["pattern"] == "^[a-z0-9_]{1,30}$"
    assert set(create["required"]) == {"handle", "kind"}
    assert set(create["properties"]["kind"]["enum"]) == {"person", "team", "service"}
    post = schemas["CreatePost"]
    assert "as" in post["properties"]
    assert "as_" not in post["properties"]
    assert post["required"] == ["text"]
    assert set(post["properties"]["severity"]["enum"]) == {"info", "warning", "critical"}
    assert set(schemas["CreateDm"]["required"]) == {"to", "text"}


async def test_openapi_every_route_documents_its_responses(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        responses = operation["responses"]
        successes = [code for code in responses if code.startswith("2")]
        assert successes, f"{method.upper()} {path} documents no success"
        for code, response in responses.items():
            where = f"{method.upper()} {path} {code}"
            if code == "204":
                assert not response.get("content"), where
                continue
            content = response.get("content")
            assert content, f"{where} has no response schema"
            for media in content.values():
                assert "schema" in media, where
                resolve(document, media["schema"])
            schema = content.get("application/json", {}).get("schema")
            if (path, code) == ("/readyz", "503"):  # not ready: the Status body, not an error
                assert schema == {"$ref": "#/components/schemas/Status"}, where
            elif code[0] in "45":
                assert schema == {"$ref": "#/components/schemas/ErrorOut"}, where
        if operation.get("security") and {"bearer": []} in operation["security"]:
            assert "401" in responses, f"{method.upper()} {path} needs a token but lists no 401"


async def test_openapi_refs_all_resolve(document: dict[str, Any]) -> None:
    for ref in every_ref(document):
        resolve(document, {"$ref": ref})
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "HTTPValidationError" not in document["components"]["schemas"]


async def test_openapi_success_schemas_match_the_contract(document: dict[str, Any]) -> None:
    def success(method: str, path: str, code: str) -> dict[str, Any]:
        media = document["paths"][path][method]["responses"][code]["content"]
        return resolve(document, media["application/json"]["schema"])

    created = success("post", "/v1/accounts", "201")
    assert {"id", "handle", "kind", "role", "display_name", "token", "webhook_secret"} <= set(
        created["properties"]
    )
    looked_up = success("get", "/v1/accounts/{handle}", "200")
    assert {"id", "handle", "kind", "display_name", "followers_count"} <= set(
        looked_up["properties"]
    )
    published = success("post", "/v1/posts", "202")
    assert {
        "id",
        "author",
        "as_account",
        "text",
        "visibility",
        "severity",
        "in_reply_to",
        "created_at",
    } <= set(published["properties"])
    sent = success("post", "/v1/dms", "202")
    assert {"id", "from", "to", "text", "created_at"} <= set(sent["properties"])
    follow = success("put", "/v1/me/follows/{handle}", "200")
    assert {"account", "channels", "mandatory"} <= set(follow["properties"])
