"""What incidents and components mean: their states, how bad each is, the post an update
makes, and the 90-day history of a component. Pure functions; no I/O.

The words are Atlassian Statuspage's (its public API is served from them by
muster.api.web.statusapi), so tools that read Statuspage pages read Muster's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

STATUSES = ("investigating", "identified", "monitoring", "resolved")
"""An incident's status, in the order an incident usually goes through them."""
IMPACTS = ("none", "minor", "major", "critical")
"""An incident's impact, from least to worst; also Statuspage's page indicator."""
COMPONENT_STATUSES = (
    "operational",
    "under_maintenance",
    "degraded_performance",
    "partial_outage",
    "major_outage",
)
"""A component's state, from best to worst."""

_SEVERITY = {"critical": "critical", "major": "warning"}
_COMPONENT_INDICATOR = {
    "degraded_performance": "minor",
    "partial_outage": "major",
    "major_outage": "critical",
}
INDICATOR_DESCRIPTIONS = {
    "none": "All Systems Operational",
    "minor": "Minor Service Outage",
    "major": "Partial System Outage",
    "critical": "Major Service Outage",
}
"""Statuspage's words for a page's indicator."""
STATUS_LABELS = {
    "investigating": "Investigating",
    "identified": "Identified",
    "monitoring": "Monitoring",
    "resolved": "Resolved",
}
COMPONENT_LABELS = {
    "operational": "Operational",
    "under_maintenance": "Under maintenance",
    "degraded_performance": "Degraded performance",
    "partial_outage": "Partial outage",
    "major_outage": "Major outage",
}
HISTORY_DAYS = 90


def severity_of(impact: str) -> str:
    """The severity of an update's post: critical → critical, major → warning, else info."""
    return _SEVERITY.get(impact, "info")


def post_text(title: str, status: str, text: str) -> str:
    """What an update's post says: the incident, where it stands, then the update, so an
    email or SMS read alone makes sense."""
    return f"{title} — {STATUS_LABELS[status]}: {text}"


def worst_impact(impacts: Iterable[str]) -> str:
    return max(impacts, key=IMPACTS.index, default="none")


def worst_component_status(statuses: Iterable[str]) -> str:
    return max(statuses, key=COMPONENT_STATUSES.index, default="operational")


def indicator(open_impacts: Iterable[str], component_statuses: Iterable[str]) -> str:
    """A page's indicator (none, minor, major, critical): the worst of its open incidents'
    impacts and of what its components' states say."""
    from_components = (_COMPONENT_INDICATOR.get(s, "none") for s in component_statuses)
    return worst_impact([*open_impacts, *from_components])


def reopens(current: str, update: str) -> bool:
    """An update of a resolved incident reopens it only when its status says so."""
    return current == "resolved" and update != "resolved"


@dataclass(frozen=True, slots=True)
class Change:
    """A component's state from `at` on."""

    at: datetime
    name: str
    status: str


@dataclass(frozen=True, slots=True)
class Day:
    day: date
    status: str
    """The worst state the component was in that day (operational when nothing is known)."""


def history(
    changes: Iterable[Change], name: str, today: date, days: int = HISTORY_DAYS
) -> list[Day]:
    """The component's worst state on each of the last `days` days (UTC), oldest first:
    the state it entered the day in, and every state it was put in during the day."""
    first = today - timedelta(days=days - 1)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    ordered = sorted((c for c in changes if c.name == name), key=lambda c: c.at)
    before = [c for c in ordered if c.at < start]
    carried = before[-1].status if before else None
    worst: dict[date, list[str]] = {}
    for change in ordered:
        if change.at >= start:
            worst.setdefault(change.at.date(), []).append(change.status)
    out = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        seen = worst.get(day, [])
        states = [carried, *seen] if carried is not None else seen
        out.append(Day(day, worst_component_status(states)))
        if seen:
            carried = seen[-1]
    return out
