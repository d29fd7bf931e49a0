"""Who an account is on a page: its display name, its initials and the tone of its avatar.

Pages show people and accounts by display name with the @handle beside it, and an avatar of
initials drawn in HTML and CSS (no image, nothing fetched from elsewhere). The tone is a
function of the handle only, so an account keeps its colour everywhere and for everyone; the
palette (static/muster.css, `.avatar[data-tone]`) holds colours that white initials reach
WCAG AA contrast on, in light and dark schemes.

Display names are public (`GET /v1/accounts/{handle}` answers anyone), so a page reads them
for all the handles it shows in one pipeline (accounts.load_many) rather than one in-process
API call per handle. static/muster.js draws the same initials and tone for what arrives live
(the rule is written twice because the no-JavaScript page needs it on the server and a live
post needs it in the browser; tests/web/test_faces.py checks they agree).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import Request

from muster.api import accounts
from muster.api.state import state

TONES = 12
"""How many avatar colours static/muster.css defines (`data-tone` 0..TONES-1)."""


@dataclass(frozen=True, slots=True)
class Face:
    handle: str
    name: str
    active: bool = True

    @property
    def initials(self) -> str:
        return initials(self.name or self.handle)

    @property
    def tone(self) -> int:
        return tone(self.handle)

    @property
    def shows_handle_only(self) -> bool:
        """A display name that is just the handle says nothing the @handle does not."""
        return self.name in {"", self.handle}


def initials(name: str) -> str:
    """`Mia Wong` → `MW`, `ops` → `O`: the first letters of the first and last words."""
    words = name.split()
    if not words:
        return "?"
    first = words[0][0]
    last = words[-1][0] if len(words) > 1 else ""
    return (first + last).upper()


def tone(handle: str) -> int:
    """A stable colour index for a handle (a 32-bit rolling hash; muster.js: same)."""
    h = 0
    for char in handle:
        h = (h * 31 + ord(char)) & 0xFFFFFFFF
    return h % TONES


async def faces(request: Request, handles: Iterable[str]) -> dict[str, Face]:
    """The face of each handle (an unknown handle gets one made of the handle alone)."""
    wanted = sorted({h for h in handles if h})
    if not wanted:
        return {}
    st = state(request)
    found = await accounts.load_many(st.redis, wanted, st.settings.partitions)
    return {
        h: Face(h, a.display_name, a.active) if a is not None else Face(h, h)
        for h, a in found.items()
    }
