"""A status page in its own incident: 1,000 connections on one `muster api`, the cached page
against the same page rendered for every request, in one run.

    python tests/benchmarks/status_page.py [--connections 64,1000] [--seconds 10] [--rounds 2]

Starts redis-server, `muster api` (one process, as `muster api` runs it) and the timeline
worker (which projects the public posts) on loopback, then
makes a team with the status page of a bad day through the API: 4 components (two down), 2
open public incidents with 3 updates each, 12 resolved ones and 20 public posts. Then wrk
(one thread, C connections, each run after a 3 s warm-up at the same load) requests:

- cached: `GET /@{handle}`, rendered once per change of the account's status (pagecache.py);
- rendered: `GET /@{handle}?before=<largest id>`, the same page by the same renderer with every
  post older than that id, i.e. all of them, which the cache skips (older pages are rare), so
  each request reads Redis and renders the template as every request did before the cache.

Rounds alternate the order (cached first, then rendered first, ...). Per run it prints
requests/s, p50 and p99 latency of the answers, how many were 4xx and 5xx, socket errors
(connect, read, write, timeout: wrk's own counts), the CPU share of the api process, and how
long the api then took to finish what it was still rendering for connections wrk had closed
(each run starts on an idle api). wrk is
/usr/bin/wrk (`apt-get install -y wrk`). Exit status 1 if any answer was a 5xx.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: redis_server and benchmarks._servers

from benchmarks._servers import (  # noqa: E402
    ADMIN_TOKEN,
    call,
    clean_env,
    cpu_ticks,
    muster,
    spawn,
    wait_for_port,
)
from redis_server import RedisServer, free_port  # noqa: E402

HANDLE = "acme"
NEWEST_ID = str((1 << 63) - 1)
"""`?before=` this: older than it is every post, so the page shows what the cached one does."""

WRK_SCRIPT = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) s4 = 0; s5 = 0 end
function response(status, headers, body)
  if status >= 500 then s5 = s5 + 1 elseif status >= 400 then s4 = s4 + 1 end
end
function done(summary, latency, requests)
  local n4, n5 = 0, 0
  for _, t in ipairs(threads) do n4 = n4 + t:get("s4"); n5 = n5 + t:get("s5") end
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "s4": %d, "s5": %d, "connect": %d, '
    .. '"read": %d, "write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, n4, n5, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def bad_day(port: int) -> None:
    """The team, its poster, components, incidents and posts, made through the API."""
    admin = ADMIN_TOKEN
    call(port, "POST", "/v1/accounts", admin,
         {"handle": HANDLE, "kind": "team", "display_name": "Acme Cloud"})  # fmt: skip
    oncall = call(port, "POST", "/v1/accounts", admin, {"handle": "oncall", "kind": "person"})
    token = oncall["token"]
    call(port, "PUT", f"/v1/accounts/{HANDLE}/posters/oncall", admin, None)
    states = {"API": "operational", "Dashboard": "operational",
              "Card payments": "partial_outage", "Webhooks": "degraded_performance"}  # fmt: skip
    for name in states:
        call(port, "PUT", f"/v1/accounts/{HANDLE}/components/{name.replace(' ', '%20')}",
             admin, {"status": "operational"})  # fmt: skip

    def incident(title: str, impact: str, component: str, resolve: bool) -> None:
        opened = call(port, "POST", "/v1/incidents", token, {
            "as": HANDLE, "title": title, "status": "investigating", "impact": impact,
            "text": f"{title}: we are looking into it.", "components": {component: states[component]},
        })  # fmt: skip
        for status in ("identified", "monitoring", *(("resolved",) if resolve else ())):
            text = f"{title}: {status}. The details of what we found and did go here."
            call(port, "POST", f"/v1/incidents/{opened['id']}/updates", token,
                 {"status": status, "text": text})  # fmt: skip

    for n in range(12):
        incident(f"Past incident {n + 1}", "minor", "API", resolve=True)
    for n in range(20):
        call(port, "POST", "/v1/posts", token, {"as": HANDLE, "visibility": "public",
             "text": f"Maintenance note {n + 1}: nothing to do on your side."})  # fmt: skip
    incident("Card payments failing", "major", "Card payments", resolve=False)
    incident("Webhooks delayed", "minor", "Webhooks", resolve=False)


def shows(port: int, path: str, texts: tuple[str, ...], timeout_s: float = 20.0) -> None:
    """Wait (bounded) until the page shows each text: posts are there once the timeline
    worker has projected them."""
    deadline = time.monotonic() + timeout_s
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as page:
            html = page.read().decode()
        missing = [t for t in texts if t not in html]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} does not show {missing} after {timeout_s:.0f} s")
        time.sleep(0.2)


def wrk(port: int, path: str, connections: int, seconds: int, script: Path) -> dict[str, Any]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
               "-s", str(script), f"http://127.0.0.1:{port}{path}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, timeout=seconds + 60, check=True)
    line = next(x for x in done.stdout.decode().splitlines() if x.startswith("WRK "))
    found: dict[str, Any] = json.loads(line[4:])
    return found


def drained(pid: int, timeout_s: float = 180.0) -> float:
    """Seconds until the api process is idle (under 10 % of a core for 0.5 s): requests of
    connections wrk has closed are still answered, and must not eat the next run's CPU."""
    hz = os.sysconf("SC_CLK_TCK")
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        ticks = cpu_ticks(pid)
        time.sleep(0.5)
        if (cpu_ticks(pid) - ticks) / hz < 0.05:
            return time.monotonic() - started
    raise SystemExit(f"the api was still busy {timeout_s:.0f} s after a run")


def measure(port: int, pid: int, path: str, connections: int, seconds: int,
            script: Path) -> dict[str, Any]:  # fmt: skip
    wrk(port, path, connections, 3, script)  # warm-up: connections made, page rendered
    drained(pid)
    hz = os.sysconf("SC_CLK_TCK")
    ticks, wall = cpu_ticks(pid), time.perf_counter()
    found = wrk(port, path, connections, seconds, script)
    found["api_cpu"] = (cpu_ticks(pid) - ticks) / hz / (time.perf_counter() - wall)
    found["drain_s"] = drained(pid)
    return found


def report(name: str, r: dict[str, Any]) -> str:
    rate = r["requests"] / (r["duration_us"] / 1e6)
    errors = r["connect"] + r["read"] + r["write"] + r["timeout"]
    return (
        f"{name:<9} {rate:>8,.0f} req/s  p50 {r['p50_us'] / 1e3:>7.1f} ms  "
        f"p99 {r['p99_us'] / 1e3:>7.1f} ms  4xx {r['s4']:>6}  5xx {r['s5']:>4}  "
        f"socket errors {errors:>4}  api CPU {r['api_cpu']:.0%}  {r['requests']:,} answers, "
        f"then {r['drain_s']:.0f} s to drain"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", default="64,1000", help="comma-separated")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        redis = stack.enter_context(RedisServer(work / "redis"))
        port = free_port()
        env = clean_env(redis_url=redis.url, admin_token=ADMIN_TOKEN, api_host="127.0.0.1",
                        api_port=str(port), api_workers="1", partitions="1",
                        data_dir=str(work / "var"), public_url=f"http://127.0.0.1:{port}")  # fmt: skip
        api = spawn(stack, muster("api"), env, work / "api.log")
        wait_for_port(port, api, work / "api.log")
        spawn(stack, muster("worker", "timeline"), env, work / "timeline.log")  # public posts
        bad_day(port)
        script = work / "count.lua"
        script.write_text(WRK_SCRIPT)
        paths = {"cached": f"/@{HANDLE}", "rendered": f"/@{HANDLE}?before={NEWEST_ID}"}
        for path in paths.values():  # the same page both ways: every incident and post on it
            shows(port, path, ("Card payments failing", "Webhooks delayed", "Maintenance note 20:"))
        load = os.getloadavg()[0]
        print(f"{args.seconds} s a run, one `muster api` process, load average {load:.2f} before")
        fives = 0
        for connections in (int(c) for c in args.connections.split(",")):
            print(f"{connections} connections:")
            for n in range(args.rounds):
                order = list(paths) if n % 2 == 0 else list(reversed(paths))
                for name in order:
                    result = measure(port, api.pid, paths[name], connections, args.seconds, script)
                    fives += result["s5"]
                    print(report(name, result), flush=True)
        print(f"load average {os.getloadavg()[0]:.2f} after")
    return 1 if fives else 0


if __name__ == "__main__":
    sys.exit(main())
