"""Worker processes for a parallel replay: start them, relay their progress, stop them all
when one fails.

A replay is bound by the CPU of the process applying the events (decoding them, planning the
projections' writes, building pipelines: ~100 µs an event), so `replay.py` splits the partitions
among processes started with the *spawn* method: nothing of the parent (its event loop, its
Redis connections, rq's state) is inherited, and each process opens its own Redis client.
Spawning imports the caller's main module again in each process, so a script that starts a
replay must keep its work under `if __name__ == "__main__":` (the `muster` command does).

Each process runs `target(task, applied)` and sends back over one queue:
`("applied", index, count)` after each batch, then `("done", index, result)` or
`("failed", index, "Error: message")`. One that fails, or dies without a word (killed, out of
memory: its exit code tells), fails the whole run: the others are terminated and
`WorkerFailed` names the worker. A worker whose parent is gone (killed without a chance to
stop them) stops at its next report. This module knows nothing of replay; it must never leave a
process running after `run` returns or raises.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import queue as queues
import time
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

POLL_S = 0.2
"""How often the parent looks for dead workers."""
LAST_WORDS_S = 2.0
"""How long the parent reads on for a dead worker's last message before calling it killed."""
STOP_S = 10.0
"""How long a terminated worker has to exit before it is killed."""

Target = Callable[[Any, Callable[[int], None]], Any]
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
"""cgroup v2's CPU quota of this process's group ("max 100000", or "200000 100000": 2 CPUs)."""


def available_cpus(cpu_max: Path = CPU_MAX) -> int:
    """The CPUs this process may use: those it may run on, and no more than its cgroup's quota
    (a Kubernetes CPU limit), which os.cpu_count() ignores — a pod limited to 2 CPUs on a
    64-core node must not start 64 workers."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota here (not in a container, or another layout)
    return max(1, cpus)


class WorkerFailed(Exception):
    """A worker process raised or died; `index` says which."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


class _Orphaned(Exception):
    """The parent is gone (killed: an rq job timeout, kill -9): nobody reads our reports."""


def _child(target: Target, task: Any, index: int, out: Any, parent: int) -> None:
    def applied(count: int) -> None:
        if os.getppid() != parent:
            raise _Orphaned(f"parent process {parent} is gone")
        out.put(("applied", index, count))

    try:
        result = target(task, applied)
    except BaseException as exc:  # every failure is reported, then the process exits
        out.put(("failed", index, f"{type(exc).__name__}: {exc}"))
        out.close()
        out.join_thread()  # the message is in the pipe before the process is gone
        raise SystemExit(1) from None
    out.put(("done", index, result))
    out.close()
    out.join_thread()


async def run(
    target: Target,
    tasks: Sequence[Any],
    applied: Callable[[int], None],
    *,
    name: str = "muster-worker",
) -> list[Any]:
    """Run `target` on each task in its own process; their results, in task order.

    `target` and the tasks must pickle (a module-level function, plain data). `applied` is
    called on this event loop with each count a worker reports."""
    context = multiprocessing.get_context("spawn")
    out: Any = context.Queue()
    processes: list[BaseProcess] = [
        context.Process(target=_child, args=(target, task, i, out, os.getpid()), name=f"{name}-{i}")
        for i, task in enumerate(tasks)
    ]
    results: dict[int, Any] = {}

    def handle(message: tuple[str, int, Any]) -> None:
        kind, index, value = message
        if kind == "applied":
            applied(value)
        elif kind == "done":
            results[index] = value
        else:
            raise WorkerFailed(index, value)

    try:
        for process in processes:
            process.start()
        check_at = time.monotonic() + POLL_S
        while len(results) < len(processes):
            message = await asyncio.to_thread(_get, out, POLL_S)
            if message is not None:
                handle(message)
            # Look for the dead every POLL_S even while the others report without a pause:
            # a worker killed early must not go unnoticed until the rest have finished.
            if message is not None and time.monotonic() < check_at:
                continue
            check_at = time.monotonic() + POLL_S
            dead = _dead(processes, results)
            if dead is None:
                continue
            # Its last words ("done", or why it failed) may still be in the pipe, behind
            # reports the others wrote before it ended: read on for LAST_WORDS_S (reading
            # is far faster than they write), no longer: a killed worker says nothing.
            # One that exited 0 wrote "done" before it exited: read until it comes.
            index, how, code = dead
            give_up = time.monotonic() + LAST_WORDS_S
            while index not in results:
                message = await asyncio.to_thread(_get, out, POLL_S)
                if message is None or (code != 0 and time.monotonic() > give_up):
                    raise WorkerFailed(index, how)
                handle(message)
        return [results[i] for i in range(len(processes))]
    finally:
        _stop(processes)
        out.close()
        out.cancel_join_thread()


def _get(out: Any, timeout: float) -> Any:
    try:
        return out.get(timeout=timeout)
    except queues.Empty:
        return None


def _dead(processes: Sequence[BaseProcess], results: dict[int, Any]) -> tuple[int, str, int] | None:
    """A worker that exited without its "done" read yet: its index, how it ended, its code."""
    for index, process in enumerate(processes):
        code = process.exitcode
        if index in results or code is None:
            continue
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        return index, f"the process ended without finishing ({how})", code
    return None


def _stop(processes: Sequence[BaseProcess]) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        if process.pid is None:
            continue  # never started
        process.join(STOP_S)
        if process.is_alive():
            process.kill()
            process.join()
