"""Worker targets for the tests of replay's worker processes (test_replay.py): a module of its
own because the processes are spawned and import their target by name, so it cannot be a
test's local function.

- `die_in_worker_1`: replay's own worker, except that worker 1 dies at once, as an
  out-of-memory kill would (no word, no cleanup);
- `report_or_die`: task 1 dies at once; any other reports progress every 10 ms for up to
  REPORT_FOR_S, then returns (so a supervisor that misses the death fails late, not never).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from muster.ops import replay

DYING = 1
REPORT_FOR_S = 60.0


def die_in_worker_1(task: replay._Task, applied: Callable[[int], None]) -> replay._Done:
    if task.owned[0] == DYING:
        os._exit(137)
    return replay._work(task, applied)


def report_or_die(task: int, applied: Callable[[int], None]) -> int:
    if task == DYING:
        os._exit(137)
    until = time.monotonic() + REPORT_FOR_S
    while time.monotonic() < until:
        applied(1)
        time.sleep(0.01)
    return task
