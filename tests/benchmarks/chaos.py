"""The long chaos run: the CI test's engine (tests/chaos/engine.py) for minutes, with figures.

    python tests/benchmarks/chaos.py [--seconds 120] [--seed N] [--faults N] [--members 30]
        [--externals 4] [--rate 20] [--partitions 4] [--copies 2] [--timeline-max 10000]
        [--max-lag 20] [--keep DIR]

Not a test (pytest does not collect it): a command that prints figures. It starts its own
redis-server (AOF, `appendfsync always`) on a free loopback port in a temp dir, `muster api`
and `--copies` processes of each worker kind, a webhook receiver that checks every signature
with `standardwebhooks`, a Twilio-compatible SMS API and an SMTP server; builds a cast of
`--members` members, `--externals` externals, two teams and a service through the API; then
for `--seconds` runs a seeded mixed workload (posts, replies, DMs, follows, channel changes,
unfollows, enrolments) at about `--rate` operations per second while it SIGKILLs workers, the
api and redis-server (each started again) and makes receivers fail for a while
(`--faults` of them, every kind at least once; by default one per 2.5 s). It then waits until
everything settled and runs the checks of tests/chaos/checks.py.

It prints operations attempted / acknowledged and what was sent again and why, faults injected
by kind, how long Redis and the api were away, deliveries received (and received twice under
the same id) per channel, the time to settle, each check with its figures, and the load
average. `--timeline-max` is MUSTER_TIMELINE_MAX for the run: high by default, so no home
is trimmed and the home check stays exact however long the run; `--max-lag` is
MUSTER_MAX_LAG, low by default so that while no timeline worker runs the api pushes back
(429, which the clients retry). `--keep DIR` keeps every process's log, the Redis data and
the archive there. Exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: redis_server and the chaos package

from chaos.engine import Config, run  # noqa: E402
from chaos.processes import RunSettings  # noqa: E402
from chaos.workload import Shape  # noqa: E402


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="workload under faults")
    parser.add_argument("--seed", type=int, default=None, help="random when not given")
    parser.add_argument("--faults", type=int, default=None, help="default: one per 2.5 s")
    parser.add_argument("--members", type=int, default=30)
    parser.add_argument("--externals", type=int, default=4)
    parser.add_argument("--rate", type=float, default=20.0, help="operations/s aimed at")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--copies", type=int, default=2, help="processes of each worker kind")
    parser.add_argument("--timeline-max", type=int, default=10_000)
    parser.add_argument("--max-lag", type=int, default=20, help="MUSTER_MAX_LAG")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run's files here")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    config = Config(
        seed=seed,
        seconds=args.seconds,
        faults=args.faults if args.faults is not None else max(8, int(args.seconds / 2.5)),
        settle_within=120.0,
        shape=Shape(
            members=args.members,
            externals=args.externals,
            lanes=8,
            rate=args.rate,
            budget=int(args.rate * args.seconds * 2),
            all_members_enrolments=max(1, int(args.seconds // 60)),
        ),
        run=RunSettings(
            partitions=args.partitions,
            claim_idle_ms=1500,
            timeline_max=args.timeline_max,
            copies=args.copies,
            max_lag=args.max_lag,
        ),
        directory=args.keep,
    )
    print(
        f"chaos benchmark: seed {seed}, {args.seconds:g} s, {config.faults} faults, "
        f"{os.cpu_count()} cores, load average before: {load_average()}",
        flush=True,
    )
    began = time.monotonic()
    report = asyncio.run(run(config))
    print(report.text())
    print(
        f"wall time {time.monotonic() - began:.1f} s; load average after: {load_average()}; "
        f"again: python tests/benchmarks/chaos.py --seconds {args.seconds:g} --seed {seed}"
    )
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
