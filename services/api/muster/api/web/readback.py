"""Read your own writes: after a 202, wait (briefly, bounded) until the timeline worker has
stored what the person just wrote, so the page they are sent back to shows it.

If the workers are behind, the wait ends after WAIT_S and the page says the write was
accepted and will show in a moment; nothing is lost either way.
"""

from __future__ import annotations

import asyncio
import time

from muster.api.reads import Reader

WAIT_S = 2.0
_POLL_S = 0.02


async def post_stored(reader: Reader, post_id: str) -> bool:
    deadline = time.monotonic() + WAIT_S
    while await reader.post(post_id) is None:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(_POLL_S)
    return True


async def message_stored(reader: Reader, message_id: str) -> bool:
    deadline = time.monotonic() + WAIT_S
    while not await reader.messages([message_id]):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(_POLL_S)
    return True
