"""A real `redis-server` the test suite starts itself: loopback only, its own port and directory.

Stream behaviour (blocking reads, reclaiming, crashes, persistence) is tested against the
real thing, never the machine's Redis on 6379. A server here can be stopped and started
again on the SAME port and directory, which is how the suite tests what survives a restart:
with `appendonly=True, appendfsync="always"` every acknowledged write is in the AOF; with
`appendonly=False` (and RDB snapshots off) a restart comes back empty.

This module is imported by conftest.py and by subprocesses the tests spawn; it never
touches a server it did not start.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

import redis

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


class RedisServerError(RuntimeError):
    """The server did not start (or stop) in time; the message carries its log's tail."""


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> None:
    """preexec_fn: on Linux, the child gets SIGKILL when the process that started it dies, so
    a test run that is itself killed leaves no redis-server (or worker) behind. The signal
    follows the starting *thread*: start servers from the main thread, not a worker thread."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RedisServerError(
            "redis-server is not on PATH; the stream tests need a real one (apt install redis-server)"
        )
    return found


class RedisServer:
    """One redis-server process on 127.0.0.1:`port` with its data in `directory`."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        appendonly: bool = False,
        appendfsync: str = "always",
    ) -> None:
        if appendfsync not in {"always", "everysec", "no"}:
            raise ValueError(f"appendfsync must be always, everysec or no, got {appendfsync!r}")
        self.directory = directory
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # --- addresses --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def client(self) -> redis.Redis:
        """A short-timeout sync client; the caller closes it."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5.0)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # --- lifecycle --------------------------------------------------------------------------
    def command(self) -> list[str]:
        return [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "yes",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.log_path),
            "--daemonize",
            "no",
            "--save",
            "",  # no RDB snapshots: without AOF a restart really comes back empty
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--maxmemory-policy",
            "noeviction",
        ]

    def start(self) -> None:
        """Start (or start again, same port and directory) and wait until it answers PING."""
        if self.running:
            raise RedisServerError(f"redis-server on port {self.port} is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.directory,
            preexec_fn=die_with_parent,
        )
        self.starts += 1
        try:
            self._wait_ready()
        except BaseException:
            self._terminate(signal.SIGKILL)
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RedisServerError(
                    f"redis-server on port {self.port} exited with {self.process.returncode}:\n"
                    + self.log_tail()
                )
            try:
                with redis.Redis(
                    host="127.0.0.1", port=self.port, socket_timeout=1.0, socket_connect_timeout=1.0
                ) as probe:
                    # LOADING (replaying the AOF) answers PING with an error: keep waiting.
                    if probe.ping():
                        return
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
                last_error = exc
            time.sleep(0.02)
        raise RedisServerError(
            f"redis-server on port {self.port} did not answer PING within {START_TIMEOUT_S}s "
            f"({last_error}):\n" + self.log_tail()
        )

    def stop(self) -> None:
        """SIGTERM (a clean shutdown: the AOF is flushed, no RDB is written), SIGKILL if it hangs."""
        self._terminate(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: a crash. Only what was already fsynced survives."""
        self._terminate(signal.SIGKILL)

    def restart(self, *, crash: bool = False) -> None:
        """Stop (or kill) and start again on the same port and directory."""
        if crash:
            self.kill()
        else:
            self.stop()
        self.start()

    def _terminate(self, sig: signal.Signals) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)
        self.process = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class RedisFactory(Protocol):
    """The `redis_factory` fixture: starts a server for one test; all are killed after it."""

    def __call__(self, *, appendonly: bool = False, appendfsync: str = "always") -> RedisServer: ...


def start_redis_server(
    directory: Path, *, appendonly: bool = False, appendfsync: str = "always"
) -> RedisServer:
    """Start a server on a free port; retries on a fresh port if another process took the first."""
    for attempt in range(3):
        server = RedisServer(directory, appendonly=appendonly, appendfsync=appendfsync)
        try:
            server.start()
        except RedisServerError:
            if attempt == 2 or "Address already in use" not in server.log_tail():
                raise
            continue
        return server
    raise AssertionError("unreachable")
