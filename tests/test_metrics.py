"""The metrics listener of a real `muster api`: its own internal address, the counts of every
API process added up, nothing on the public port.

Each test runs `python -m muster.cli api` against the suite's redis-server with free ports,
an environment stripped of the caller's MUSTER_ variables, and bounded waits.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket as net
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from redis_server import RedisServer, free_port

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "m3tr1cs-Zq8vXa_Lr2ZpT8mWc4NbYe6HsUd0F"
START_TIMEOUT_S = 30.0


def env_for(redis_server: RedisServer, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
    env.update(
        MUSTER_ENV_FILE=os.devnull,
        MUSTER_REDIS_URL=redis_server.url,
        MUSTER_ADMIN_TOKEN=ADMIN_TOKEN,
        MUSTER_LOG_FORMAT="json",
    )
    env.update(overrides)
    return env


class Api:
    def __init__(self, process: subprocess.Popen[bytes], log: Path, port: int, metrics: str):
        self.process, self.log, self.port, self.metrics = process, log, port, metrics

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[Callable[..., Api]]:
    started: list[Api] = []

    def start(redis_server: RedisServer, **overrides: str) -> Api:
        port = free_port()
        metrics = overrides.pop("metrics", f"127.0.0.1:{free_port()}")
        log = tmp_path / f"api-{len(started)}.log"
        env = env_for(
            redis_server, MUSTER_API_PORT=str(port), MUSTER_METRICS_ADDRESS=metrics, **overrides
        )
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "muster.cli", "api"],
                env=env,
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        api = Api(process, log, port, metrics)
        started.append(api)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert process.poll() is None, f"muster api exited:\n{api.output()}"
            try:
                if httpx.get(f"{api.url}/healthz", timeout=1).status_code == 200:
                    return api
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"muster api did not answer in {START_TIMEOUT_S}s:\n{api.output()}")

    try:
        yield start
    finally:
        for api in started:
            if api.process.poll() is None:
                api.process.send_signal(signal.SIGTERM)
                try:
                    api.process.wait(15)
                except subprocess.TimeoutExpired:
                    api.process.kill()
                    api.process.wait(5)


def sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if found == labels:
            return float(value)
    return None


def multiproc_dir(api: Api) -> Path:
    """The directory `muster api` gave its processes to count in (its log says which)."""
    for line in api.log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"metrics listening"' in line:
            return Path(json.loads(line)["directory"])
    pytest.fail(f"muster api logged no metrics listener:\n{api.output()}")


def counting_pids(directory: Path) -> set[str]:
    return {p.stem.rpartition("_")[2] for p in directory.glob("counter_*.db")}


def test_every_api_worker_counts_on_one_internal_listener(
    redis_server: RedisServer, start_api: Callable[..., Api]
) -> None:
    api = start_api(redis_server, MUSTER_API_WORKERS="2")
    directory = multiproc_dir(api)
    posted = 0
    deadline = time.monotonic() + START_TIMEOUT_S
    # A fresh connection per post: the kernel hands each to whichever worker accepts first.
    # Post until both workers have counted something (each writes its own counter file).
    while len(counting_pids(directory)) < 2 or posted < 20:
        assert time.monotonic() < deadline, f"one worker served everything:\n{api.output()}"
        response = httpx.post(
            f"{api.url}/v1/posts",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Connection": "close"},
            json={"text": f"post {posted}"},
            timeout=5,
        )
        assert response.status_code == 202, response.text
        posted += 1
    assert len(counting_pids(directory)) == 2

    scraped = httpx.get(f"http://{api.metrics}/metrics", timeout=5)
    assert scraped.status_code == 200
    text = scraped.text
    assert sample(text, "muster_ingest_events_total", type="PostPublished") == posted
    assert sample(text, "muster_ingest_events_total", type="AccountCreated") == 1  # admin
    assert sample(text, "muster_dead_letters") == 0  # read from Redis, in the listener

    public = httpx.get(f"{api.url}/metrics", timeout=5)
    assert public.status_code == 404
    assert "muster_ingest" not in public.text


def test_one_api_process_counts_too(
    redis_server: RedisServer, start_api: Callable[..., Api]
) -> None:
    api = start_api(redis_server)
    for i in range(3):
        response = httpx.post(
            f"{api.url}/v1/posts",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            json={"text": f"post {i}"},
            timeout=5,
        )
        assert response.status_code == 202, response.text
    text = httpx.get(f"http://{api.metrics}/metrics", timeout=5).text
    assert sample(text, "muster_ingest_events_total", type="PostPublished") == 3
    assert httpx.get(f"{api.url}/metrics", timeout=5).status_code == 404


def test_metrics_off_opens_no_listener(
    redis_server: RedisServer, start_api: Callable[..., Api]
) -> None:
    api = start_api(redis_server, metrics="off")
    assert "metrics listening" not in api.output()
    assert httpx.get(f"{api.url}/metrics", timeout=5).status_code == 404


def test_a_metrics_port_in_use_stops_the_api_naming_the_setting(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with net.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "muster.cli", "api"],
            env=env_for(
                redis_server,
                MUSTER_API_PORT=str(free_port()),
                MUSTER_METRICS_ADDRESS=f"127.0.0.1:{port}",
            ),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    assert f"MUSTER_METRICS_ADDRESS {port} is already in use on 127.0.0.1" in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_multiprocess_directory_goes_when_the_api_stops(
    workers: str, redis_server: RedisServer, start_api: Callable[..., Api]
) -> None:
    api = start_api(redis_server, MUSTER_API_WORKERS=workers)
    directory = multiproc_dir(api)
    assert directory.is_dir()
    api.process.send_signal(signal.SIGTERM)
    # as before: one uvicorn process re-raises the signal; its multiprocess supervisor exits 0
    assert api.process.wait(15) == (-signal.SIGTERM if workers == "1" else 0)
    assert not directory.exists()
