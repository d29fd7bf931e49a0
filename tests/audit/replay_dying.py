"""A replay worker target that dies in worker 1 as an out-of-memory kill would (no word, no
cleanup), for test_replay's supervision test; the other workers do their share as usual.

A module of its own because the worker processes are spawned: they import the target by
name, so it cannot be a test's local function."""

from __future__ import annotations

import os
from collections.abc import Callable

from muster.ops import replay

DYING = 1


def die_in_worker_1(task: replay._Task, applied: Callable[[int], None]) -> replay._Done:
    if task.owned[0] == DYING:
        os._exit(137)
    return replay._work(task, applied)
