"""The processes of a chaos run: redis-server, `muster api`, two of each `muster worker` kind.

With `RunSettings.masters` set, Muster's data lives on a local Redis Cluster of that many
masters with a replica each (tests/redis_cluster.py: AOF `appendfsync always` on every node),
`MUSTER_REDIS_URL=redis+cluster://...`, and the one redis-server is only rq's
(`MUSTER_RQ_REDIS_URL`); the faults then fail over a master and move slots (faults.py).

`Deployment` starts them all in one temp directory with one environment (the MUSTER_
variables it sets, none of the caller's), each logging to its own file there (appended
across restarts, so the logs hold every incarnation: the leak check reads them). It can
SIGKILL any of them and start it again; Redis is killed with SIGKILL and started again on the
same port and data directory (AOF, `appendfsync always`: nothing acknowledged may be lost).

Processes are started from the thread running the event loop (the main thread): their
PDEATHSIG follows the starting thread (tests/redis_server.py, die_with_parent).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
import redis.asyncio as aioredis
from redis_cluster import LocalCluster
from redis_server import RedisServer, die_with_parent, free_port

from chaos.receivers import MAIL_DOMAIN, SMS_FROM, SMS_SID, SMS_TOKEN, Receivers
from muster.connection import async_client
from muster.settings import Settings

WORKER_KINDS = ("timeline", "delivery", "audit")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
ADMIN_TOKEN = "chaos-admin-Zq8Lm3Xv7Rt2Kw9Np4Hs6Jd1Fb5Gc0Y"
PUBLIC_URL = f"http://{MAIL_DOMAIN}"


def muster_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "muster.cli", *args]


@dataclass
class RunSettings:
    """What a run sets: the MUSTER_ values every process shares."""

    partitions: int = 3
    claim_idle_ms: int = 1500
    retry_schedule: str = "1,1,1,1,1,1,1,1"
    timeline_max: int = 800
    copies: int = 2  # processes of each worker kind
    max_lag: int = 10_000  # MUSTER_MAX_LAG: low, and the api pushes back (429) when workers die
    masters: int = 0  # 0: one redis-server; N: a local Redis Cluster of N masters + replicas
    write_replicas: int = 0  # MUSTER_WRITE_REPLICAS


class ManagedProcess:
    """One Muster process slot (`api`, `timeline-0`, ...): started, killed, started again."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.unexpected_exits: list[str] = []  # "exit code: log tail"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def check(self) -> bool:
        """False (and the exit noted) when the process died without being told to."""
        if self.process is None or self.process.poll() is None:
            return True
        self.unexpected_exits.append(f"exit {self.process.returncode}:\n{self.tail()}")
        self.process = None
        return False

    async def stop(self) -> int | None:
        """SIGTERM, waited for (bounded, without blocking the loop); its exit code."""
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while process.poll() is None:
            if time.monotonic() > deadline:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)
                return None
            await asyncio.sleep(0.05)
        return process.returncode

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


class ChaosRedis(RedisServer):
    """A RedisServer whose restart waits for PING without blocking the event loop."""

    def _spawn(self) -> None:
        """RedisServer.start without its (blocking) wait for PING."""
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

    async def crash_and_restart(self, *, down_s: float = 0.0) -> float:
        """SIGKILL, `down_s` later start again on the same port and directory; seconds it was
        unreachable."""
        began = time.monotonic()
        self.kill()
        await asyncio.sleep(down_s)  # dead for a while: the api refuses, workers back off
        self._spawn()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server did not come back:\n{self.log_tail()}")
            try:
                with redis.Redis(
                    host="127.0.0.1", port=self.port, socket_timeout=1.0, socket_connect_timeout=1.0
                ) as probe:
                    if probe.ping():
                        return time.monotonic() - began
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not answer PING:\n{self.log_tail()}")
            await asyncio.sleep(0.02)


@dataclass
class Deployment:
    directory: Path
    receivers: Receivers
    settings: RunSettings = field(default_factory=RunSettings)
    redis: ChaosRedis | None = None
    api: ManagedProcess | None = None
    workers: dict[str, list[ManagedProcess]] = field(default_factory=dict)
    api_port: int = 0
    cluster: LocalCluster | None = None  # Muster's data, when settings.masters; else `redis`

    @property
    def redis_url(self) -> str:
        """MUSTER_REDIS_URL: the cluster when there is one, else the one redis-server."""
        if self.cluster is not None:
            return self.cluster.url
        assert self.redis is not None
        return self.redis.url

    def client(self) -> aioredis.Redis:
        """An asyncio client on Muster's data, as Muster's processes open it (a cluster client
        on a cluster)."""
        return async_client(Settings(redis_url=self.redis_url, partitions=self.settings.partitions))

    @property
    def data_dir(self) -> Path:
        return self.directory / "var"

    @property
    def archive_dir(self) -> Path:
        return self.data_dir / "archive"

    @property
    def logs_dir(self) -> Path:
        return self.directory / "logs"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        assert self.redis is not None
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
        # no .env from the working directory; no metrics listener on the shared default port
        env.update(MUSTER_ENV_FILE=os.devnull, MUSTER_METRICS_ADDRESS="off")
        env.update(
            MUSTER_REDIS_URL=self.redis_url,
            MUSTER_RQ_REDIS_URL=self.redis.url,  # rq never runs on a cluster
            MUSTER_WRITE_REPLICAS=str(s.write_replicas),
            MUSTER_PARTITIONS=str(s.partitions),
            MUSTER_ADMIN_TOKEN=ADMIN_TOKEN,
            MUSTER_API_HOST="127.0.0.1",
            MUSTER_API_PORT=str(self.api_port),
            MUSTER_PUBLIC_URL=PUBLIC_URL,
            MUSTER_CLAIM_IDLE_MS=str(s.claim_idle_ms),
            MUSTER_CONSUMER_BLOCK_MS="100",
            MUSTER_DATA_DIR=str(self.data_dir),
            MUSTER_ARCHIVE_DIR=str(self.archive_dir),
            MUSTER_TIMELINE_MAX=str(s.timeline_max),
            MUSTER_MAX_LAG=str(s.max_lag),
            MUSTER_WEBHOOK_ALLOW_PRIVATE="1",
            MUSTER_WEBHOOK_TIMEOUT="5",
            MUSTER_SMTP_URL=self.receivers.mail.url,
            MUSTER_MAIL_FROM="alerts@muster.chaos.test",
            MUSTER_SMS_PROVIDER="twilio",
            MUSTER_TWILIO_BASE_URL=self.receivers.sms.url,
            MUSTER_TWILIO_ACCOUNT_SID=SMS_SID,
            MUSTER_TWILIO_AUTH_TOKEN=SMS_TOKEN,
            MUSTER_TWILIO_FROM=SMS_FROM,
            MUSTER_DELIVERY_RETRY_SCHEDULE=s.retry_schedule,
            MUSTER_LOG_FORMAT="json",
        )
        return env

    # --- start and stop ---------------------------------------------------------------------
    async def start(self) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.redis = ChaosRedis(self.directory / "redis", appendonly=True, appendfsync="always")
        self.redis.start()
        if self.settings.masters:
            self.cluster = LocalCluster(self.directory / "cluster", masters=self.settings.masters)
            self.cluster.start()
        self.api_port = free_port()
        env = self.env()
        self.api = ManagedProcess("api", muster_command("api"), env, self.logs_dir / "api.log")
        for kind in WORKER_KINDS:
            self.workers[kind] = [
                ManagedProcess(
                    f"{kind}-{n}",
                    muster_command("worker", kind),
                    env,
                    self.logs_dir / f"{kind}-{n}.log",
                )
                for n in range(self.settings.copies)
            ]
        for process in self.processes():
            process.start()
        await self.wait_ready()

    def processes(self) -> list[ManagedProcess]:
        found = [] if self.api is None else [self.api]
        for copies in self.workers.values():
            found.extend(copies)
        return found

    async def wait_ready(self) -> None:
        """The api answers /readyz 200: Redis is there and every worker kind made its groups."""
        deadline = time.monotonic() + START_TIMEOUT_S
        async with httpx.AsyncClient(base_url=self.api_url, timeout=5.0) as client:
            while True:
                self.supervise()
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/readyz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    assert self.api is not None
                    raise AssertionError(f"the api is not ready:\n{self.api.tail()}")
                await asyncio.sleep(0.1)

    async def wait_api(self) -> float:
        """Until the (re)started api answers /healthz; seconds it took."""
        began = time.monotonic()
        deadline = began + START_TIMEOUT_S
        async with httpx.AsyncClient(base_url=self.api_url, timeout=2.0) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/healthz")).status_code == 200:
                        return time.monotonic() - began
                assert self.api is not None
                if not self.api.running:
                    self.supervise()
                if time.monotonic() > deadline:
                    raise AssertionError(f"the api did not come back:\n{self.api.tail()}")
                await asyncio.sleep(0.05)

    def supervise(self) -> list[str]:
        """Start again any process that died without being killed by us; their names."""
        restarted = []
        for process in self.processes():
            if not process.check():
                process.start()
                restarted.append(process.name)
        return restarted

    async def stop_workers(self) -> dict[str, int | None]:
        """SIGTERM every worker; their exit codes (0: stopped cleanly)."""
        codes = {}
        workers = [p for copies in self.workers.values() for p in copies]
        results = await asyncio.gather(*(p.stop() for p in workers))
        for process, code in zip(workers, results, strict=True):
            codes[process.name] = code
        return codes

    async def stop_api(self) -> int | None:
        return None if self.api is None else await self.api.stop()

    def kill_everything(self) -> None:
        for process in self.processes():
            process.kill()
        if self.redis is not None:
            self.redis.kill()
        if self.cluster is not None:
            self.cluster.stop()

    async def command(self, *args: str, within: float = 60.0) -> tuple[int, str]:
        """Run a one-shot `muster ...` command with the deployment's environment."""
        process = await asyncio.create_subprocess_exec(
            *muster_command(*args),
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.directory,
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout=within)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(f"`muster {' '.join(args)}` took over {within}s") from None
        assert process.returncode is not None
        return process.returncode, out.decode(errors="replace")

    def log_files(self) -> list[Path]:
        return sorted(self.logs_dir.glob("*.log"))
