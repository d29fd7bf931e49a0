"""Stopping background asyncio tasks reliably."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait for it to end, cancelling again if a cancel is lost.

    On Python 3.11, asyncio.wait_for (which redis-py sends commands through) swallows a
    cancel that lands as its inner call completes, so a loop cancelled once may run on.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.02)
    with contextlib.suppress(asyncio.CancelledError):
        await task
