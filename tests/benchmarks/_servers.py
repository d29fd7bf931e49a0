"""Processes a benchmark runs: `muster api` and workers as subprocesses, and what it reads of them.

Each benchmark starts its own redis-server with the suite's tests/redis_server.py and the
Muster processes with the commands an operator runs (`python -m muster.cli api`, `... worker
timeline`), in an environment holding only the MUSTER_ variables the benchmark sets. Every
process is stopped (SIGTERM, then SIGKILL) when the benchmark's ExitStack closes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
ADMIN_TOKEN = "bench-admin-" + "x7Qp2LmZ9rT4vK8sN3wY6bH1jC5dF0gA"  # ≥ 32 chars, no placeholder


def clean_env(**muster: str) -> dict[str, str]:
    """This environment without any MUSTER_ variable of the caller's, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
    # no .env from the working directory; no metrics listener on the shared default port
    env.update(MUSTER_ENV_FILE=os.devnull, MUSTER_METRICS_ADDRESS="off")
    env.update({f"MUSTER_{k.upper()}": v for k, v in muster.items()})
    return env


def tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)


def spawn(
    stack: contextlib.ExitStack, command: list[str], env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """Start `command` with stdout and stderr in `log`; stopped when `stack` closes."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    stack.callback(stop, process)
    return process


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """uvicorn binds only after lifespan start-up finished, so a connect means ready."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}:\n{tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise SystemExit(f"server did not listen on {port} within {START_TIMEOUT_S}s:\n{tail(log)}")


def muster(kind: str, *args: str) -> list[str]:
    """The command line of a Muster process: `muster api`, `muster worker timeline`, ..."""
    return [sys.executable, "-m", "muster.cli", kind, *args]


def call(port: int, method: str, path: str, token: str, body: dict[str, Any] | None) -> Any:
    """One JSON request to the api on loopback; the decoded reply (None when empty)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def machine_busy_ticks() -> int:
    """CPU ticks all CPUs of the machine spent busy (not idle or waiting for I/O), /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return user + nice + system + irq + softirq + steal


def percentile(ordered: list[int], pct: float) -> float:
    """Nearest-rank percentile of a sorted list (0.0 when empty)."""
    if not ordered:
        return 0.0
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))])
