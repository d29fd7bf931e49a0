"""How pages write times: relative ("3 min ago", "yesterday") with the absolute one at hand.

A time is a `<time datetime="…" title="2025-03-01 14:03 UTC">3 min ago</time>`: the server
writes the relative text as of the moment it renders, so a page reads well without
JavaScript; static/muster.js rewrites the same text every so often, so a page left open
during an incident does not claim "just now" for an hour. The rule is written twice (here
and in muster.js's `relative`) because both sides need it; tests/web/test_faces.py checks
they agree on the same cases. Relative times use elapsed time only, never the calendar of
a time zone: server and browser then agree whatever the reader's zone; absolute times are
UTC, the zone incident communication is written in.
"""

from __future__ import annotations

from datetime import UTC, datetime

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def parse(moment: str) -> datetime | None:
    """An API time (`2025-03-01T14:03:05.123Z`) as an aware datetime, or None."""
    try:
        parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def absolute(moment: str) -> str:
    """`2025-03-01T14:03:05.123Z` → `2025-03-01 14:03 UTC`."""
    if len(moment) < 16:
        return moment
    return f"{moment[:10]} {moment[11:16]} UTC"


def relative(moment: str, now: datetime) -> str:
    """How long ago, in words: just now, 5 min ago, 3 h ago, yesterday, 4 days ago, 1 Mar."""
    then = parse(moment)
    if then is None:
        return moment
    seconds = (now - then).total_seconds()
    if seconds < 60:  # also a moment ahead of this clock (clocks drift a little)
        return "just now"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min ago"
    hours = minutes // 60
    if hours < 24:
        return f"{hours} h ago"
    days = hours // 24
    if days == 1:
        return "yesterday"
    if days < 7:
        return f"{days} days ago"
    date = then.astimezone(UTC)
    day = f"{date.day} {MONTHS[date.month - 1]}"
    return day if date.year == now.astimezone(UTC).year else f"{day} {date.year}"


def now() -> datetime:
    return datetime.now(UTC)
