"""The app behind a real uvicorn on loopback: what only real HTTP shows (framing, chunked
bodies, the size limit before the body is read, connection handling)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import httpx
import msgspec
import pytest
import redis

from api.conftest import ADMIN_TOKEN, LiveServer, snapshot_sync
from muster import keys
from muster.settings import Settings

LIMIT = 4096
Serve = Callable[[Settings], AbstractContextManager[LiveServer]]


@pytest.fixture
def server(api_settings: Settings, live_server: Serve) -> Iterator[LiveServer]:
    settings = msgspec.structs.replace(api_settings, max_body_bytes=LIMIT, max_post_chars=10_000)
    with live_server(settings) as running:
        yield running


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        yield client


def token_for(http: httpx.Client, handle: str) -> str:
    response = http.post(
        "/v1/accounts",
        json={"handle": handle, "kind": "person"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def body_of(size: int) -> bytes:
    prefix, suffix = b'{"text": "', b'"}'
    return prefix + b"a" * (size - len(prefix) - len(suffix)) + suffix


def chunked(body: bytes, size: int = 512) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_round_trip(http: httpx.Client, sync_redis: redis.Redis) -> None:
    token = token_for(http, "mia")
    response = http.post(
        "/v1/posts", json={"text": "over the wire"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/json"
    assert sync_redis.xlen(keys.events(0)) == 3  # admin, mia, the post


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_size_limit(http: httpx.Client, sync_redis: redis.Redis, framing: str) -> None:
    token = token_for(http, "mia")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def send(body: bytes) -> httpx.Response:
        content = body if framing == "content-length" else chunked(body)
        return http.post("/v1/posts", content=content, headers=headers)

    accepted = send(body_of(LIMIT))
    assert accepted.status_code == 202, accepted.text
    if framing == "chunked":
        assert accepted.request.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in accepted.request.headers

    before = snapshot_sync(sync_redis)
    for size in (LIMIT + 1, LIMIT * 3):
        refused = send(body_of(size))
        assert refused.status_code == 413
        assert refused.json()["error"]["code"] == "payload_too_large"
        assert snapshot_sync(sync_redis) == before
    # the server is still fine afterwards
    assert http.get("/healthz").status_code == 200


def test_declared_length_over_the_limit_is_refused_before_the_body(
    server: LiveServer, sync_redis: redis.Redis
) -> None:
    """A Content-Length over the limit is answered at once, without waiting for the body."""
    import socket

    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/posts HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {LIMIT * 100}\r\n\r\n".encode()
            + b'{"text": "'
        )
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(4096)
            assert chunk, reply
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413")


def test_a_new_process_sees_accounts_created_by_another(
    api_settings: Settings, live_server: Serve
) -> None:
    """Two api processes on one Redis: state lives in Redis, not in a process."""
    with live_server(api_settings) as first, live_server(api_settings) as second:
        with httpx.Client(base_url=first.url, timeout=10.0) as a:
            token = token_for(a, "mia")
        with httpx.Client(base_url=second.url, timeout=10.0) as b:
            me = b.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200
            assert me.json()["handle"] == "mia"
