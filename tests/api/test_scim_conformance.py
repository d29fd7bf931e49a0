"""An independent SCIM 2.0 conformance check: scim2-tester's checks, run through scim2-client
against /scim/v2 on a real uvicorn on loopback. Every check it runs must pass; the ones left
out are named in LEFT_OUT with the reason."""

from __future__ import annotations

import json

import httpx2
import msgspec
from redis_server import free_port
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import CheckResult, Status, check_server

from api.conftest import ADMIN_TOKEN, serve
from api.test_scim import SCIM_TOKEN
from muster.api import scim
from muster.settings import Settings

FAILED = {Status.ERROR, Status.CRITICAL}
LEFT_OUT = {
    ("User", "check_remove_attribute", "active"): "a person is active or not: PATCH remove "
    "`active` is refused with 400 mutability (tests/api/test_scim.py checks that), which the "
    "tester counts as a failure to remove it",
    ("Group", "object_replacement", None): "a group maps to the team its displayName names: "
    "a PUT naming another team is refused with 400 mutability (tests/api/test_scim.py), and "
    "the tester replaces the displayName with a random one",
    ("Group", "check_replace_attribute", "displayName"): "the same, through PATCH",
}


def left_out(result: CheckResult) -> bool:
    urn = result.data.get("urn") if isinstance(result.data, dict) else None
    return (result.resource_type, result.title, urn) in LEFT_OUT


def test_scim2_tester_checks_pass(api_settings: Settings) -> None:
    port = free_port()  # the resources' meta.location, which the client follows, names it
    settings = msgspec.structs.replace(
        api_settings, scim_token=SCIM_TOKEN, public_url=f"http://127.0.0.1:{port}"
    )
    with serve(settings, port=port) as server, httpx2.Client(base_url=server.url) as admin:

        def team_first(request: httpx2.Request) -> None:
            """A group maps to an existing team: the test stands in for the administrator
            who makes the team before the directory pushes a group (the tester names its
            groups at random)."""
            if request.method != "POST" or not request.url.path.endswith("/Groups"):
                return
            handle = scim.team_for(json.loads(request.content)["displayName"])
            made = admin.post(
                "/v1/accounts",
                json={"handle": handle, "kind": "team"},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            assert made.status_code in {201, 409}, made.text

        # A connection per request: a kept-alive one uvicorn closes as the next request
        # leaves would be a reset no server can answer.
        with httpx2.Client(
            base_url=f"{server.url}/scim/v2",
            headers={"Authorization": f"Bearer {SCIM_TOKEN}"},
            limits=httpx2.Limits(max_keepalive_connections=0),
            event_hooks={"request": [team_first]},
        ) as http:
            results = check_server(SyncSCIMClient(http))
    ran = [r for r in results if r.status != Status.SKIPPED]
    failed = [r for r in ran if r.status in FAILED and not left_out(r)]
    assert not failed, "\n".join(repr(r) for r in failed)
    for kind in ("User", "Group"):
        assert len([r for r in ran if r.resource_type == kind]) >= 10, (kind, results)
