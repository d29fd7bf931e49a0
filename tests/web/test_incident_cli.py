"""`muster incident ...` and `muster components ...` against the real API on loopback (the web
stack; no browser): an incident from open to resolved with components, `@account` naming
the one open incident, and refusals that change nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from muster.cli import build_parser
from muster.errors import CommandFailed, CommandUsage
from web.conftest import ADMIN_TOKEN, WebStack


def muster(web: WebStack, *argv: str, token: str = ADMIN_TOKEN) -> None:
    """Run a command as cli.main would, on the stack's API and with `token`."""
    args = build_parser().parse_args([*argv, "--url", web.url, "--token", token])
    assert args.run(args, web.settings) == 0


def incident(web: WebStack, incident_id: str) -> dict[str, Any]:
    found: dict[str, Any] = web.ok("GET", f"/v1/incidents/{incident_id}", token=ADMIN_TOKEN)
    return found


def test_open_update_resolve_with_components(
    web: WebStack, capsys: pytest.CaptureFixture[str]
) -> None:
    mia = web.person("mia")
    web.team("ops", "mia")
    muster(web, "components", "set", "ops", "API", "operational")
    muster(web, "components", "set", "ops", "Card payments", "operational",
           "--description", "Card checkout")  # fmt: skip
    assert "@ops's component Card payments is operational" in capsys.readouterr().out

    muster(web, "incident", "open", "--as", "ops", "--title", "Card payments failing",
           "--impact", "major", "--component", "Card payments=partial_outage",
           "Some card payments fail.", token=mia)  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith("opened incident ")
    assert "is investigating (major impact, public)" in out
    incident_id = out.split()[2]
    assert f"{web.url}/@ops/incidents/{incident_id}" in out
    opened = incident(web, incident_id)
    assert opened["title"] == "Card payments failing"
    assert opened["components"] == {"Card payments": "partial_outage"}

    muster(web, "incident", "update", incident_id, "--status", "identified",
           "An expired certificate.", token=mia)  # fmt: skip
    assert "is identified (major impact" in capsys.readouterr().out
    muster(web, "incident", "resolve", "@ops", "--component", "Card payments=operational",
           "Payments work again.", token=mia)  # fmt: skip
    assert f"updated incident {incident_id} of @ops is resolved" in capsys.readouterr().out
    done = incident(web, incident_id)
    assert [u["status"] for u in done["updates"]] == ["investigating", "identified", "resolved"]
    assert done["resolved_at"] is not None
    assert [u["message"] for u in done["updates"]][-1] == "Payments work again."

    muster(web, "components", "list", "ops")
    listed = capsys.readouterr().out.splitlines()
    assert [line.split() for line in listed] == [
        ["API", "operational"],
        ["Card", "payments", "operational"],
    ]


def test_refusals_change_nothing(web: WebStack) -> None:
    mia = web.person("mia")
    lena = web.person("lena")
    web.team("ops", "mia")

    with pytest.raises(CommandFailed, match="403 not_a_poster"):
        muster(web, "incident", "open", "--as", "ops", "--title", "t", "x", token=lena)
    with pytest.raises(CommandFailed, match="unknown_component"):
        muster(web, "incident", "open", "--as", "ops", "--title", "t", "--component",
               "Nope=major_outage", "x", token=mia)  # fmt: skip
    with pytest.raises(CommandUsage, match="not a component state"):
        muster(web, "incident", "open", "--as", "ops", "--title", "t", "--component",
               "API=broken", "x", token=mia)  # fmt: skip
    with pytest.raises(CommandUsage, match="NAME=STATE"):
        muster(web, "incident", "open", "--as", "ops", "--title", "t", "--component", "API",
               "x", token=mia)  # fmt: skip
    with pytest.raises(CommandFailed, match="@ops has no open incident"):
        muster(web, "incident", "resolve", "@ops", "done", token=mia)
    assert web.ok("GET", "/v1/accounts/ops/incidents", token=ADMIN_TOKEN) == []

    for title in ("One", "Two"):
        muster(web, "incident", "open", "--as", "ops", "--title", title, "x", token=mia)
    with pytest.raises(CommandFailed, match=r"several open incidents; name one: \d+ \(Two\)"):
        muster(web, "incident", "update", "@ops", "--status", "monitoring", "y", token=mia)
    found = web.ok("GET", "/v1/accounts/ops/incidents?state=open", token=ADMIN_TOKEN)
    with pytest.raises(CommandFailed, match="not_a_poster"):
        muster(web, "incident", "resolve", found[0]["id"], "y", token=lena)
    found = web.ok("GET", "/v1/accounts/ops/incidents?state=open", token=ADMIN_TOKEN)
    assert {i["status"] for i in found} == {"investigating"}
    assert all(len(i["updates"]) == 1 for i in found)
