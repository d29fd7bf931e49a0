"""Property-based checks of the whole API against its own /openapi.json, with schemathesis.

The app runs on a real uvicorn (loopback, free port); schemathesis reads the document over
HTTP, generates requests for every operation (valid and invalid ones), sends them with an
admin (or a member's) token and checks each answer: never a 5xx, and always the documented status, content
type and body schema. Bounded and derandomized, so a run is short and reproducible.
Endless responses (the SSE streams) are left out: a generated request would never end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
import redis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.conftest import ADMIN_TOKEN, LiveServer
from muster.api.routes.ops import expected_groups
from muster.settings import Settings

Serve = Callable[[Settings], AbstractContextManager[LiveServer]]

ENDLESS = r"/stream$"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def live_api(
    api_settings: Settings, live_server: Serve, sync_redis: redis.Redis
) -> Iterator[LiveServer]:
    """A ready system: every consumer group exists (as if the workers had started)."""
    for stream, groups in expected_groups(api_settings.partitions).items():
        for group in groups:
            sync_redis.xgroup_create(stream, group, id="0", mkstream=True)
    with live_server(api_settings) as server:
        yield server


@pytest.fixture
def http_session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def muster_schema(live_api: LiveServer) -> Any:
    loaded = schemathesis.openapi.from_url(f"{live_api.url}/openapi.json", timeout=10)
    return loaded.exclude(path_regex=ENDLESS)


# schemathesis.pytest.from_fixture / @schema.parametrize() fail under pytest 9 (they set
# `request.node._nodeid`, which pytest no longer has), so each operation's Hypothesis test is
# built here from `operation.as_strategy()`: the same generation and checks, driven by hand.
HYPOTHESIS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],  # no shrinking: report the first failure fast
)


@pytest.fixture
def member_token(live_api: LiveServer, http_session: requests.Session) -> str:
    response = http_session.post(
        f"{live_api.url}/v1/accounts",
        json={"handle": "mia", "kind": "person", "role": "member"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


@pytest.mark.parametrize(
    ("mode", "who"),
    [
        (GenerationMode.POSITIVE, "admin"),
        (GenerationMode.NEGATIVE, "admin"),
        (GenerationMode.POSITIVE, "member"),
    ],
    ids=lambda v: str(v),
)
def test_api_conforms_to_its_openapi_document(
    muster_schema: Any,
    http_session: requests.Session,
    member_token: str,
    mode: GenerationMode,
    who: str,
) -> None:
    token = ADMIN_TOKEN if who == "admin" else member_token
    failures: list[str] = []
    operations = 0
    for result in muster_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @HYPOTHESIS
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(
                session=http_session,
                headers={"Authorization": f"Bearer {token}"},
                checks=CHECKS,
                timeout=10,
            )

        try:
            check()
        except Unsatisfiable:
            # nothing to make invalid (no parameters, unconstrained strings): fine when negative
            if mode is GenerationMode.POSITIVE:
                raise
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 20
    assert not failures, "\n\n".join(failures)
