"""Full home timelines: what one insert costs Redis, by way of inserting, and what bounds it.

    python tests/benchmarks/homes.py [--homes 5000] [--cap 800] [--posts 128]

Not a test: a command that prints figures, for the design question of issue 12 item 4 (a
fan-out into homes already holding MUSTER_TIMELINE_MAX entries costs several times one into
homes that are not full). It starts its own redis-server (no persistence,
zset-max-listpack-entries 1024 as `muster up` sets it), fills H homes with `cap` entries laid
out as Muster lays them out (keys.home_member: 10^18-1-id, newest first, all scores 0; each
home one listpack), then fans P posts out to all of them with each way of inserting below,
each a Lua script over 1,000 homes a call like the fan-out's, and prints per insert the wall
time and Redis's CPU time (INFO cpu), the figure that decides:

- ours: ZADD, ZCARD, ZREMRANGEBYRANK when over the cap (lua/fanout_page.lua);
- zadd only: the insert alone, never trimmed (the floor of any sorted-set home);
- trim at cap+64: ZADD, ZCARD, and a trim only once 64 over the cap ("trim less often");
- zcard only: what a ZCARD call costs inside the loop (the script's per-call overhead);
- list: the home as a LIST of post ids, newest first: LINDEX 0, then LPUSH + LTRIM when the
  post is newer than the head (it cannot be there yet, so no lookup). Only the common case is
  timed: a post older than the head (out of order, a backfill) would need an LPOS scan and an
  LINSERT, and reads by `before=<id>` a search; what the layout would cost, not one Muster has;
- two-level: a small "recent" set of <= 128 takes the inserts; every 64 inserts its oldest
  64 move into the "older" set with ZRANGESTORE + ZUNIONSTORE (a different capped structure
  that keeps the big set out of the per-insert path).

Per-100k-follower figures are the per-insert figure x 100,000.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import redis  # noqa: E402
from redis_server import start_redis_server  # noqa: E402

from muster import keys  # noqa: E402

PER_CALL = 1000

WAYS = {
    "ours": """
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 0, ARGV[1])
  if redis.call('ZCARD', KEYS[i]) > tonumber(ARGV[2]) then
    redis.call('ZREMRANGEBYRANK', KEYS[i], ARGV[2], -1)
  end
end""",
    "zadd only": """
for i = 1, #KEYS do redis.call('ZADD', KEYS[i], 0, ARGV[1]) end""",
    "trim at cap+64": """
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 0, ARGV[1])
  if redis.call('ZCARD', KEYS[i]) > tonumber(ARGV[2]) + 64 then
    redis.call('ZREMRANGEBYRANK', KEYS[i], ARGV[2], -1)
  end
end""",
    "zcard only": """
for i = 1, #KEYS do redis.call('ZCARD', KEYS[i]) end""",
}

LIST = """
local cap = tonumber(ARGV[2])
for i = 1, #KEYS do
  local head = redis.call('LINDEX', KEYS[i], 0)
  if not head or ARGV[1] > head then  -- newer than every entry: it cannot be there yet
    redis.call('LPUSH', KEYS[i], ARGV[1])
    redis.call('LTRIM', KEYS[i], 0, cap - 1)
  end
end"""

TWO_LEVEL = """
local cap = tonumber(ARGV[2])
for i = 1, #KEYS, 3 do
  local recent, older, moving = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  redis.call('ZADD', recent, 0, ARGV[1])
  if redis.call('ZCARD', recent) >= 128 then
    redis.call('ZRANGESTORE', moving, recent, 64, -1)
    redis.call('ZREMRANGEBYRANK', recent, 64, -1)
    redis.call('ZUNIONSTORE', older, 2, moving, older)
    redis.call('ZREMRANGEBYRANK', older, cap - 64, -1)
    redis.call('DEL', moving)
  end
end"""


def cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def fill(client: redis.Redis, names: list[str], cap: int, first: int, *, lists: bool) -> None:
    members = {keys.home_member(str(first + i)): 0 for i in range(cap)}
    newest_first = [str(first + i) for i in reversed(range(cap))]
    for start in range(0, len(names), 500):
        with client.pipeline(transaction=False) as pipe:
            for name in names[start : start + 500]:
                pipe.delete(name)
                if lists:
                    pipe.rpush(name, *newest_first)
                else:
                    pipe.zadd(name, members)
            pipe.execute()


def run(
    client: redis.Redis, script: str, names: list[str], posts: int, post: int, cap: int, stride: int
) -> tuple[float, float, int]:
    call = client.register_script(script)
    started, cpu_before = time.perf_counter(), cpu(client)
    for n in range(posts):
        member = str(post + n) if script is LIST else keys.home_member(str(post + n))
        for start in range(0, len(names), PER_CALL * stride):
            call(keys=names[start : start + PER_CALL * stride], args=[member, cap])
    inserts = posts * len(names) // stride
    wall = (time.perf_counter() - started) / inserts * 1e6
    return wall, (cpu(client) - cpu_before) / inserts * 1e6, post + posts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--homes", type=int, default=5000)
    parser.add_argument("--cap", type=int, default=800)
    parser.add_argument("--posts", type=int, default=128, help="posts fanned out per way")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="muster-bench-homes-") as tmp:
        server = start_redis_server(Path(tmp) / "redis")
        try:
            client = redis.Redis(host="127.0.0.1", port=server.port)
            client.config_set("zset-max-listpack-entries", 1024)
            homes = [keys.home(0, f"p{i:06d}") for i in range(args.homes)]
            post = 10**15
            print(
                f"{args.homes:,} homes of {args.cap} entries (listpacks), {args.posts} posts fanned"
                " out per way; figures per insert"
            )
            print(f"{'way':<16}{'wall µs':>9}{'redis cpu µs':>14}{'s per 100k':>12}{'entries':>9}")
            for name, script in [*WAYS.items(), ("list", LIST), ("two-level", TWO_LEVEL)]:
                fill(client, homes, args.cap, 10**14, lists=script is LIST)
                names = homes
                stride = 1
                if name == "two-level":
                    stride = 3
                    names = [
                        k
                        for h in homes
                        for k in (h + ":recent", h, h + ":moving")  # one slot: same {tag}
                    ]
                wall, used, post = run(client, script, names, args.posts, post, args.cap, stride)
                size = client.llen if script is LIST else client.zcard
                held = int(size(homes[0])) + (
                    int(client.zcard(homes[0] + ":recent")) if stride == 3 else 0
                )
                print(f"{name:<16}{wall:>9.2f}{used:>14.2f}{used * 100_000 / 1e6:>12.2f}{held:>9}")
        finally:
            server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
