"""The Statuspage public API (/@{handle}/api/v2/*.json) in the shapes Atlassian documents,
from public data only."""

from __future__ import annotations

import pytest

from api.conftest import ADMIN_TOKEN, TEAM, Api, Cast

pytestmark = pytest.mark.anyio

PAGE_FIELDS = {"id", "name", "url", "time_zone", "updated_at"}
COMPONENT_FIELDS = {
    "id", "name", "status", "created_at", "updated_at", "position", "description", "showcase",
    "start_date", "group_id", "page_id", "group", "only_show_if_degraded",
}  # fmt: skip
INCIDENT_FIELDS = {
    "id", "name", "status", "created_at", "updated_at", "monitoring_at", "resolved_at",
    "impact", "shortlink", "started_at", "page_id", "incident_updates", "components",
}  # fmt: skip
UPDATE_FIELDS = {
    "id", "status", "body", "incident_id", "created_at", "updated_at", "display_at",
    "affected_components", "deliver_notifications",
}  # fmt: skip


async def test_summary_status_components_and_incidents(api: Api, cast: Cast) -> None:
    base = "/@ops/api/v2"
    empty = await api.ok("GET", f"{base}/status.json")
    assert empty["status"] == {"indicator": "none", "description": "All Systems Operational"}
    assert set(empty["page"]) == PAGE_FIELDS
    await api.ok("PUT", f"/v1/accounts/{TEAM}/posters/mia", 204, token=ADMIN_TOKEN)
    for name in ("API", "Checkout"):
        await api.ok(
            "PUT", f"/v1/accounts/{TEAM}/components/{name}", token=cast.member,
            json={"status": "operational"},
        )  # fmt: skip

    async def open_(title: str, impact: str, **more: object) -> str:
        body = {"as": TEAM, "title": title, "status": "investigating", "impact": impact,
                "text": "looking", **more}  # fmt: skip
        found: str = (await api.ok("POST", "/v1/incidents", 201, token=cast.member, json=body))[
            "id"
        ]
        return found

    done = await open_("Old one", "minor")
    await api.ok(
        "POST", f"/v1/incidents/{done}/updates", 202, token=cast.member,
        json={"status": "resolved", "text": "fixed"},
    )  # fmt: skip
    current = await open_("Checkout down", "major", components={"Checkout": "major_outage"})
    await open_("internal thing", "critical", visibility="internal")

    summary = await api.ok("GET", f"{base}/summary.json")
    assert set(summary) == {"page", "status", "components", "incidents", "scheduled_maintenances"}
    # the worst of the open public incident (major) and the components (major_outage → critical)
    assert summary["status"] == {"indicator": "critical", "description": "Major Service Outage"}
    assert [c["name"] for c in summary["components"]] == ["API", "Checkout"]
    for c in summary["components"]:
        assert set(c) == COMPONENT_FIELDS
    assert summary["components"][1]["status"] == "major_outage"
    (incident,) = summary["incidents"]
    assert set(incident) == INCIDENT_FIELDS
    assert (incident["id"], incident["impact"], incident["status"]) == (
        current,
        "major",
        "investigating",
    )
    assert incident["shortlink"].endswith(f"/@ops/incidents/{current}")
    (update,) = incident["incident_updates"]
    assert set(update) == UPDATE_FIELDS
    assert update["body"] == "looking"
    assert update["affected_components"][0]["new_status"] == "major_outage"
    assert [c["name"] for c in incident["components"]] == ["Checkout"]

    every = await api.ok("GET", f"{base}/incidents.json")
    assert [i["name"] for i in every["incidents"]] == ["Checkout down", "Old one"]
    assert every["incidents"][1]["resolved_at"] is not None
    unresolved = await api.ok("GET", f"{base}/incidents/unresolved.json")
    assert [i["id"] for i in unresolved["incidents"]] == [current]
    components = await api.ok("GET", f"{base}/components.json")
    assert components["components"] == summary["components"]
    response = await api.call("GET", f"{base}/summary.json")
    assert response.headers["access-control-allow-origin"] == "*"
    assert "internal thing" not in response.text
