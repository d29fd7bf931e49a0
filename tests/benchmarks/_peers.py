"""The delivery benchmarks' peers: the sinks of sinks.py in a process of their own, and a real
`muster worker delivery` process pointed at them (benchmarks/delivery.py, subscribers.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis
from redis_server import free_port

HERE = Path(__file__).resolve().parent
SID, TOKEN, FROM = "ACbench0000000000000000000000000000", "bench-token", "+15550009999"
PUBLIC_URL = "http://muster.bench"


class Sinks:
    def __init__(self) -> None:
        self.http_port, self.smtp_port = free_port(), free_port()
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "sinks.py"), str(self.http_port), str(self.smtp_port)],
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == b"ready", "sinks did not start"
        self.client = httpx.Client(base_url=self.http_url, timeout=10)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.client.get("/count").json()
        return counts

    def reset(self) -> None:
        self.client.post("/reset")

    def received(self, channel: str) -> tuple[int, int]:
        c = self.counts()
        return (
            (c["mails"], c["distinct_mails"])
            if channel == "email"
            else (c["requests"], c["distinct"])
        )

    def close(self) -> None:
        self.client.close()
        self.process.kill()
        self.process.wait(timeout=10)


def worker_env(redis_url: str, sinks: Sinks) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
    # no .env from the working directory; no metrics listener on the shared default port
    env.update(MUSTER_ENV_FILE=os.devnull, MUSTER_METRICS_ADDRESS="off")
    env.update(
        MUSTER_REDIS_URL=redis_url,
        MUSTER_PUBLIC_URL=PUBLIC_URL,
        MUSTER_SMTP_URL=f"smtp://127.0.0.1:{sinks.smtp_port}",
        MUSTER_MAIL_FROM="alerts@muster.bench",
        MUSTER_SMS_PROVIDER="twilio",
        MUSTER_TWILIO_BASE_URL=sinks.http_url,
        MUSTER_TWILIO_ACCOUNT_SID=SID,
        MUSTER_TWILIO_AUTH_TOKEN=TOKEN,
        MUSTER_TWILIO_FROM=FROM,
        MUSTER_WEBHOOK_ALLOW_PRIVATE="1",
        MUSTER_LOG_LEVEL="warning",
        MUSTER_LOG_FORMAT="json",
    )
    return env


def group_acked(client: redis.Redis, stream: str) -> tuple[str, int] | None:
    for group in client.xinfo_groups(stream):
        if group["name"] == b"delivery":
            return group["last-delivered-id"].decode(), int(group["pending"])
    return None


def wait_group(client: redis.Redis, stream: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not client.exists(stream) or group_acked(client, stream) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"the delivery worker did not create its group on {stream}")
        time.sleep(0.05)


def start_worker(redis_url: str, sinks: Sinks, log_path: Path) -> subprocess.Popen[bytes]:
    """`muster worker delivery` (the CLI's own entry point), logging to a file."""
    with log_path.open("wb") as worker_log:
        return subprocess.Popen(
            [sys.executable, "-m", "muster.cli", "worker", "delivery"],
            env=worker_env(redis_url, sinks),
            stdout=worker_log,
            stderr=subprocess.STDOUT,
        )
