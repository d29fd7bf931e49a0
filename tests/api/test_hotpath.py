"""The ingest hot path (muster.api.hotpath) answers exactly as FastAPI's own routes would.

POST /v1/posts and POST /v1/dms skip FastAPI's router for speed. These tests pin what that
must not change: the endpoints keep the calling convention the hot path relies on, the hot
path really serves them, and for the same requests it gives the same answers (status, body,
headers) and appends the same events as the FastAPI routes it stands in for.
"""

from __future__ import annotations

import inspect
from typing import Any

import msgspec
import pytest
from fastapi.routing import APIRoute
from redis.exceptions import ConnectionError as RedisConnectionError

from api.conftest import TEAM, Api, Cast, OpenApi
from muster.api import hotpath, publishing, replication
from muster.api.app import MusterApi
from muster.api.routes import posts
from muster.api.tokens import authenticate

pytestmark = pytest.mark.anyio


def test_the_endpoints_keep_the_calling_convention_the_hot_path_uses() -> None:
    """The hot path calls `endpoint(request, idempotency_key)`: nothing FastAPI would add."""
    routes = {
        (route.path, method): route
        for route in posts.router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }
    assert not posts.router.dependencies
    for path, endpoint in hotpath.ROUTES.items():
        assert list(inspect.signature(endpoint).parameters) == ["request", "idempotency_key"]
        route = routes[(path, "POST")]
        assert route.endpoint is endpoint
        assert not route.dependencies


def without_hot_path(api: Api) -> None:
    """From now on every request goes through FastAPI's router, as before the hot path."""
    assert isinstance(api.app, MusterApi)
    assert api.app.hot_path is not None
    api.app.hot_path = None


async def test_the_hot_path_serves_posts_and_dms(
    api: Api, cast: Cast, monkeypatch: pytest.MonkeyPatch
) -> None:
    routed: list[bool] = []  # per request: did FastAPI's router match it (it sets "endpoint")?

    async def spy(request: Any) -> Any:
        routed.append("endpoint" in request.scope)
        return await authenticate(request)

    monkeypatch.setattr(posts, "authenticate", spy)
    dm = {"to": "eve", "text": "hi"}
    assert (
        await api.call("POST", "/v1/posts", token=cast.member, json={"text": "hi"})
    ).status_code == 202
    assert (await api.call("POST", "/v1/dms", token=cast.member, json=dm)).status_code == 202
    assert routed == [False, False]
    without_hot_path(api)
    assert (
        await api.call("POST", "/v1/posts", token=cast.member, json={"text": "hi"})
    ).status_code == 202
    assert routed == [False, False, True]


def scenario(cast: Cast, run: str) -> list[tuple[str, str, str | None, Any, dict[str, str]]]:
    """(method, path, token, body, headers); Idempotency-Keys are per run so runs don't meet."""
    key = {"Idempotency-Key": f"key-{run}"}
    return [
        ("POST", "/v1/posts", cast.member, {"text": "hello"}, {}),
        ("POST", "/v1/posts?ignored=1", cast.member, {"text": "query strings are ignored"}, {}),
        ("POST", "/v1/posts", cast.member, {"text": "careful", "severity": "critical"}, {}),
        ("POST", "/v1/posts", cast.external, {"text": "hi", "visibility": "public"}, {}),
        ("POST", "/v1/posts", cast.external, {"text": "hi", "visibility": "internal"}, {}),
        ("POST", "/v1/posts", cast.service, {"text": "deploy done"}, {}),
        ("POST", "/v1/posts", cast.member, {"text": "as a team", "as": TEAM}, {}),
        ("POST", "/v1/posts", cast.member, b'{"text": "hello"', {}),
        ("POST", "/v1/posts", cast.member, b"[1, 2]", {}),
        ("POST", "/v1/posts", cast.member, {"text": "hi", "colour": "red"}, {}),
        ("POST", "/v1/posts", cast.member, {"text": "   "}, {}),
        ("POST", "/v1/posts", cast.member, {"text": "x" * 501}, {}),
        ("POST", "/v1/posts", cast.member, {"text": "bell\x07"}, {}),
        ("POST", "/v1/posts", cast.member, {"text": "hi", "in_reply_to": "123"}, {}),
        ("POST", "/v1/posts", None, {"text": "hi"}, {}),
        ("POST", "/v1/posts", "mst_nobody", {"text": "hi"}, {}),
        ("POST", "/v1/posts", None, {"text": "hi"}, {"Authorization": "Basic YTpi"}),
        ("POST", "/v1/posts", cast.member, {"text": "once"}, key),
        ("POST", "/v1/posts", cast.member, {"text": "once"}, key),
        ("POST", "/v1/posts", cast.member, {"text": "twice"}, key),
        ("POST", "/v1/posts", cast.member, {"text": "hi"}, {"Idempotency-Key": ""}),
        ("POST", "/v1/posts", cast.member, {"text": "hi"}, {"Idempotency-Key": "k" * 256}),
        ("POST", "/v1/posts", cast.member, {"text": "hi"}, {"Idempotency-Key": f"{run:k<255}"}),
        ("POST", "/v1/dms", cast.member, {"to": "eve", "text": "hi"}, {}),
        ("POST", "/v1/dms", cast.member, {"to": "mia", "text": "me"}, {}),
        ("POST", "/v1/dms", cast.member, {"to": TEAM, "text": "hi"}, {}),
        ("POST", "/v1/dms", cast.member, {"to": "nobody", "text": "hi"}, {}),
        ("POST", "/v1/dms", cast.member, {"to": "eve", "text": "again"}, key),
        ("POST", "/v1/dms", None, {"to": "eve", "text": "hi"}, {}),
        ("GET", "/v1/posts", cast.member, None, {}),
        ("POST", "/v1/posts/", cast.member, {"text": "trailing slash"}, {}),
    ]


async def answers(api: Api, cast: Cast, run: str) -> list[tuple[int, dict[str, str], Any]]:
    out = []
    for method, path, token, body, headers in scenario(cast, run):
        if isinstance(body, bytes):
            response = await api.call(method, path, token=token, content=body, headers=headers)
        elif body is None:
            response = await api.call(method, path, token=token, headers=headers)
        else:
            response = await api.call(method, path, token=token, json=body, headers=headers)
        kept = {
            k: v
            for k, v in response.headers.items()
            if k in {"content-type", "retry-after", "location", "allow"}
        }
        payload: Any = response.json() if response.content else None
        if isinstance(payload, dict) and "id" in payload:
            payload = {**payload, "id": "<id>", "created_at": "<at>"}
        out.append((response.status_code, kept, payload))
    return out


async def test_the_hot_path_answers_as_fastapi_does(api: Api, cast: Cast) -> None:
    before = await api.log_length()
    hot = await answers(api, cast, "hot")
    appended_hot = await api.log_length() - before
    without_hot_path(api)
    before = await api.log_length()
    plain = await answers(api, cast, "plain")
    assert hot == plain
    assert appended_hot == await api.log_length() - before > 0
    assert {status for status, _, _ in hot} >= {202, 400, 401, 403, 404, 409, 422}


@pytest.mark.parametrize("hot", [True, False], ids=["hot-path", "fastapi"])
async def test_redis_errors_answer_503_either_way(
    api: Api, cast: Cast, monkeypatch: pytest.MonkeyPatch, hot: bool
) -> None:
    async def down(*args: Any, **kwargs: Any) -> bytes:
        raise RedisConnectionError("connection refused")

    monkeypatch.setattr(publishing, "publish_post", down)
    if not hot:
        without_hot_path(api)
    response = await api.call("POST", "/v1/posts", token=cast.member, json={"text": "hi"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert response.headers["Retry-After"] == "2"


@pytest.mark.parametrize("hot", [True, False], ids=["hot-path", "fastapi"])
async def test_an_unexpected_error_answers_500_either_way(
    api: Api, cast: Cast, monkeypatch: pytest.MonkeyPatch, hot: bool
) -> None:
    """In front of FastAPI, the hot path calls the app's catch-all handler itself."""

    async def broken(*args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("a bug")

    monkeypatch.setattr(publishing, "publish_post", broken)
    if not hot:
        without_hot_path(api)
    try:
        response = await api.call("POST", "/v1/posts", token=cast.member, json={"text": "hi"})
    except RuntimeError:  # Starlette's error middleware re-raises after answering
        assert not hot
        return
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"


@pytest.mark.parametrize("hot", [True, False], ids=["hot-path", "fastapi"])
async def test_the_replica_wait_failing_answers_503_either_way(
    api: Api, cast: Cast, open_api: OpenApi, monkeypatch: pytest.MonkeyPatch, hot: bool
) -> None:
    """An error in the layers around the endpoint (here the replica wait) is answered too."""

    async def down(*args: Any, **kwargs: Any) -> int:
        raise RedisConnectionError("connection refused")

    monkeypatch.setattr(replication, "replicas_holding", down)
    settings = msgspec.structs.replace(api.settings, write_replicas=1, write_wait_ms=100)
    async with open_api(settings) as replicated:
        if not hot:
            without_hot_path(replicated)
        response = await replicated.call(
            "POST", "/v1/posts", token=cast.member, json={"text": "hi"}
        )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
