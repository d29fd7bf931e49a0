"""`muster up`: every Muster process in the foreground, supervised.

Starts the embedded Redis when MUSTER_REDIS_URL is unset (muster.embedded), then one
`muster api` and one worker of each kind — MUSTER_UP_DELIVERY_WORKERS delivery workers —
as child processes with MUSTER_REDIS_URL set for them. A child that dies is restarted after a capped backoff; one that refuses its
configuration (exit 2) stops everything, since restarting cannot help. Ctrl-C or SIGTERM
stops the children first (SIGTERM, then SIGKILL past the grace period) and the embedded
server last, so every worker acks its last batch while Redis still answers.

Children run in their own session, so a terminal's Ctrl-C reaches only this process, which
then stops them in that order. This module runs processes; it never touches Muster's data.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

import structlog

from muster.embedded import DataDirLock, EmbeddedRedis, EmbeddedRedisError, die_with_parent
from muster.errors import ConfigError
from muster.settings import Settings, split_address

log = structlog.get_logger("muster.up")

CHILDREN: tuple[tuple[str, ...], ...] = (
    ("api",),
    ("worker", "timeline"),
    ("worker", "delivery"),
    ("worker", "audit"),
    ("worker", "ops"),  # rq: replay and other operator jobs, timed jobs
)
"""The `muster` subcommands `muster up` runs, one process each (the delivery worker
MUSTER_UP_DELIVERY_WORKERS times: `children_for`)."""


def children_for(settings: Settings) -> list[tuple[str, ...]]:
    """CHILDREN with the delivery worker repeated: it is the one kind bound by its own CPU
    in a post's path (tests/benchmarks/e2e.py), and its processes share each partition's
    consumer group, so another process is another core's worth of sends."""
    delivery = ("worker", "delivery")
    children = [
        args
        for kind in CHILDREN
        for args in [kind] * (settings.up_delivery_workers if kind == delivery else 1)
    ]
    if settings.mail_in_address is not None:
        children.append(MAIL_IN)
    return children


MAIL_IN: tuple[str, ...] = ("mail-in",)
"""`muster mail-in`, run by `muster up` when MUSTER_MAIL_IN_ADDRESS is set."""


EXIT_CONFIG = 2
"""What a muster process exits with when it refuses its configuration (cli.main)."""

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_POLL_S = 0.1
_BACKOFF_FIRST_S = 1.0
_BACKOFF_CAP_S = 30.0
_HEALTHY_AFTER_S = 30.0  # a process that lived this long starts its backoff afresh


@dataclass
class Restarts:
    """Capped exponential backoff between restarts of one crashing process."""

    failures: int = 0
    started_at: float = 0.0
    next_start: float = 0.0

    def started(self, now: float) -> None:
        self.started_at = now

    def failed(self, now: float) -> float:
        """Record an unexpected exit; return the delay before the next start."""
        if now - self.started_at >= _HEALTHY_AFTER_S:
            self.failures = 0
        delay = min(_BACKOFF_CAP_S, _BACKOFF_FIRST_S * 2.0**self.failures)
        self.failures += 1
        self.next_start = now + delay
        return delay


@dataclass
class Child:
    """One `muster <args>` child process."""

    args: tuple[str, ...]
    number: int = 1  # among children of the same args
    process: subprocess.Popen[bytes] | None = None
    restarts: Restarts = field(default_factory=Restarts)

    @property
    def name(self) -> str:
        name = " ".join(self.args)
        return f"{name} #{self.number}" if self.number > 1 else name

    def start(self, env: dict[str, str], now: float) -> None:
        # `python -m muster.cli` works without the `muster` script on PATH.
        self.process = subprocess.Popen(  # noqa: S603 (our argv, no shell)
            [sys.executable, "-m", "muster.cli", *self.args],
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self.restarts.started(now)
        log.info("process started", child=self.name, pid=self.process.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def api_url(settings: Settings) -> str:
    host = f"[{settings.api_host}]" if ":" in settings.api_host else settings.api_host
    return f"http://{host}:{settings.api_port}"


def require_free_ports(settings: Settings) -> None:
    """Refuse to start when MUSTER_API_PORT or MUSTER_METRICS_ADDRESS is taken: restarting
    the api cannot free it, so `muster up` would only restart it, again and again, behind a
    working banner."""
    _require_free("MUSTER_API_HOST", "MUSTER_API_PORT", settings.api_host, settings.api_port)
    if settings.metrics_address is not None:
        host, port = split_address(settings.metrics_address)
        _require_free("MUSTER_METRICS_ADDRESS", "MUSTER_METRICS_ADDRESS", host, port)


def require_free_mail_in(settings: Settings) -> None:
    """The same for MUSTER_MAIL_IN_ADDRESS, when `muster up` runs mail-in."""
    if settings.mail_in_address is not None:
        host, port = split_address(settings.mail_in_address)
        _require_free("MUSTER_MAIL_IN_ADDRESS", "MUSTER_MAIL_IN_ADDRESS", host, port)


def _require_free(host_name: str, port_name: str, host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise ConfigError(f"{host_name} {host}: cannot listen there ({exc})") from None
            raise ConfigError(
                f"{port_name} {port} is already in use on {host} (another program, or "
                f"another muster up): stop it, or set {port_name} to a free port"
            ) from None


class Supervisor:
    """Runs `children` (and the embedded server, if any) until told to stop."""

    def __init__(
        self,
        settings: Settings,
        *,
        children: Sequence[tuple[str, ...]] | None = None,
        stop_timeout: float = 10.0,
    ) -> None:
        self.settings = settings
        self.children: list[Child] = []
        for args in children_for(settings) if children is None else children:
            number = 1 + sum(child.args == args for child in self.children)
            self.children.append(Child(args, number))
        self.stop_timeout = stop_timeout
        self.signals = 0
        self.embedded: EmbeddedRedis | None = None
        self._embedded_restarts = Restarts()

    # --- signals ------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals >= 2:  # impatient second Ctrl-C: no more grace for the children
            for child in self.children:
                if child.alive():
                    assert child.process is not None
                    child.process.kill()

    def _stop_requested(self) -> bool:
        return self.signals > 0

    # --- lifecycle ----------------------------------------------------------------------------
    def run(self) -> int:
        """Start everything, supervise until SIGINT/SIGTERM, stop everything; the exit code."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        lock: DataDirLock | None = None
        try:
            if any(child.args == ("api",) for child in self.children):
                require_free_ports(self.settings)  # before anything starts
                require_free_mail_in(self.settings)
            redis_url = self.settings.redis_url
            if redis_url is None:
                lock = DataDirLock(self.settings.data_dir)
                lock.acquire()
                self.embedded = EmbeddedRedis(self.settings)
                self.embedded.start(should_stop=self._stop_requested)
                redis_url = self.embedded.url
            if self._stop_requested():
                return 0
            self._banner(redis_url)
            return self._supervise({**os.environ, "MUSTER_REDIS_URL": redis_url})
        except EmbeddedRedisError as exc:
            print(f"muster up: {exc}", file=sys.stderr)
            return 1
        except ConfigError as exc:
            print(f"muster up: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        finally:
            self._stop_children()
            if self.embedded is not None:
                code = self.embedded.close()
                log.info("embedded redis stopped", code=code)
            if lock is not None:
                lock.release()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _banner(self, redis_url: str) -> None:
        url = api_url(self.settings)
        lines = [
            f"muster up: web app  {url}/app  (sign in with a token: the admin's is MUSTER_ADMIN_TOKEN)",
            f"muster up: status   {url}/@<account>  (an account's public status page)",
            f"muster up: API      {url}  (reference: {url}/docs)",
        ]
        if self.settings.metrics_address is not None:
            lines.append(
                f"muster up: metrics  http://{self.settings.metrics_address}/metrics  (internal)"
            )
        if self.embedded is not None:
            lines.append(f"muster up: Redis    {redis_url}  (embedded {self.embedded.server})")
            lines.append(f"muster up: data in  {self.embedded.dir}")
        else:
            lines.append(f"muster up: Redis    {redis_url}")
        lines.append("muster up: Ctrl-C stops everything")
        print("\n".join(lines), flush=True)

    def _supervise(self, env: dict[str, str]) -> int:
        for child in self.children:
            child.start(env, time.monotonic())
        while not self._stop_requested():
            now = time.monotonic()
            self._watch_embedded(now)
            for child in self.children:
                code = self._watch(child, env, now)
                if code is not None:
                    return code
            time.sleep(_POLL_S)
        log.info("stopping", signal_count=self.signals)
        return 0

    def _watch(self, child: Child, env: dict[str, str], now: float) -> int | None:
        """Restart `child` if it died and its backoff has passed; an exit code ends `up`."""
        process = child.process
        if process is not None and process.poll() is not None:
            code = process.returncode
            child.process = None
            if code == EXIT_CONFIG:
                log.error("process refused its configuration; stopping", child=child.name)
                return EXIT_CONFIG
            delay = child.restarts.failed(now)
            log.error("process exited unexpectedly", child=child.name, code=code, restart_in=delay)
        if child.process is None and now >= child.restarts.next_start:
            child.start(env, now)
        return None

    def _watch_embedded(self, now: float) -> None:
        embedded = self.embedded
        if embedded is None or embedded.alive():
            return
        restarts = self._embedded_restarts
        if embedded.process is not None:
            delay = restarts.failed(now)
            log.error(
                "embedded redis exited unexpectedly",
                reason=embedded.exit_reason(),
                restart_in=delay,
            )
            embedded.process = None
        if now >= restarts.next_start:
            try:
                embedded.start(should_stop=self._stop_requested)
                restarts.started(now)
                log.info("embedded redis restarted")
            except EmbeddedRedisError as exc:
                embedded.process = None  # reaped already; wait out the next backoff
                log.error(
                    "embedded redis restart failed", error=str(exc), retry_in=restarts.failed(now)
                )

    def _stop_children(self) -> None:
        """SIGTERM every child, wait up to stop_timeout, SIGKILL the rest, reap them all."""
        running = [c for c in self.children if c.alive()]
        for child in running:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("process did not stop in time; killing it", child=child.name)
                child.process.kill()
                child.process.wait()
        for child in self.children:
            if child.process is not None:
                log.info("process stopped", child=child.name, code=child.process.returncode)
                child.process = None


def up(settings: Settings) -> int:
    """`muster up`; returns the process exit code."""
    return Supervisor(settings).run()
