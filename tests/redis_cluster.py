"""A real Redis Cluster the tests start themselves: `redis-server --cluster-enabled yes`
processes on free loopback ports, each in its own directory, joined with
`redis-cli --cluster create ... --cluster-replicas 1`.

    with LocalCluster(tmp_path, masters=3) as cluster:   # 3 masters + 1 replica each
        settings = Settings(redis_url=cluster.url, ...)   # redis+cluster://127.0.0.1:p1,...

Every node keeps an AOF with `appendfsync always` (what the failover test needs: a write a
replica acknowledged, or the master fsynced, survives). `cluster-node-timeout` is short
(NODE_TIMEOUT_MS), so a killed master's replica is promoted within a few seconds. Every wait
is bounded and fails with the nodes' log tails. `kill_master` SIGKILLs a master and waits for
its replica to take over; `start_again` brings a node back (it rejoins as a replica);
`reshard` moves slots between masters with `redis-cli --cluster reshard` while clients run.
Like redis_server.py, nothing here touches a server it did not start.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from redis_server import RedisServer, RedisServerError, free_port

NODE_TIMEOUT_MS = 1500
"""cluster-node-timeout: how long a master may be unreachable before its replica is
promoted (plus an election of about a second)."""
READY_TIMEOUT_S = 30.0
FAILOVER_TIMEOUT_S = 30.0
RESHARD_TIMEOUT_S = 120.0


def redis_cli_binary() -> str:
    found = shutil.which("redis-cli")
    if found is None:
        raise RedisServerError("redis-cli is not on PATH; the cluster tests need it")
    return found


class LocalNode(RedisServer):
    """One cluster node: a RedisServer with cluster mode on and its bus on a port of its own."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, appendonly=True, appendfsync="always")
        self.bus_port = free_port()

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            "--cluster-port",
            str(self.bus_port),
        ]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def info(self, section: str) -> dict[str, str]:
        with self.client() as client:
            raw = client.execute_command("INFO", section)
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        if isinstance(raw, dict):
            return {str(k): str(v) for k, v in raw.items()}
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def cluster_info(self) -> dict[str, str]:
        with self.client() as client:
            raw = client.execute_command("CLUSTER", "INFO")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)


class LocalCluster:
    """`masters` masters with one replica each, on loopback, in `directory`."""

    def __init__(self, directory: Path, *, masters: int = 3, replicas: int = 1) -> None:
        self.directory = directory
        self.replicas = replicas
        self.nodes = [LocalNode(directory / f"node-{n}") for n in range(masters * (1 + replicas))]

    # --- addresses --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """MUSTER_REDIS_URL for this cluster: every node, so any one being down is fine."""
        return "redis+cluster://" + ",".join(node.address for node in self.nodes)

    def node_by_port(self, port: int) -> LocalNode:
        return next(node for node in self.nodes if node.port == port)

    def masters(self) -> list[LocalNode]:
        """The running nodes that are masters now (a failover changes them)."""
        return [n for n in self.nodes if n.running and self._role(n) == "master" and self._slots(n)]

    def master_of(self, key: str) -> LocalNode:
        slot = redis.crc.key_slot(key.encode())
        for node in self.masters():
            if any(lo <= slot <= hi for lo, hi in self._slots(node)):
                return node
        raise AssertionError(f"no master serves slot {slot} of {key}")

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        for node in self.nodes:
            node.start()
        self._cli(
            "--cluster",
            "create",
            *(node.address for node in self.nodes),
            "--cluster-replicas",
            str(self.replicas),
            "--cluster-yes",
            within=READY_TIMEOUT_S,
        )
        self.wait_ready()

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, within: float = READY_TIMEOUT_S) -> None:
        """Until every running node says cluster_state:ok, knows every node, and every master
        has its replicas connected and in sync."""
        deadline = time.monotonic() + within
        problem = ""
        while time.monotonic() < deadline:
            problem = self._not_ready()
            if not problem:
                return
            time.sleep(0.1)
        raise RedisServerError(
            f"the cluster is not ready within {within}s: {problem}\n" + self.tails()
        )

    def _not_ready(self) -> str:
        try:
            running = [n for n in self.nodes if n.running]
            for node in running:
                info = node.cluster_info()
                if info.get("cluster_state") != "ok":
                    return f"{node.address}: cluster_state {info.get('cluster_state')}"
                if int(info.get("cluster_known_nodes", 0)) < len(self.nodes):
                    return f"{node.address} knows {info.get('cluster_known_nodes')} nodes"
            masters = self.masters()
            if len(masters) * (1 + self.replicas) < len(running):
                return f"{len(masters)} masters for {len(running)} running nodes"
            for node in running:
                replication = node.info("replication")
                if replication.get("role") == "slave":
                    if replication.get("master_link_status") != "up":
                        return f"{node.address}: link to its master is down"
                    if replication.get("master_sync_in_progress") != "0":
                        return f"{node.address}: still syncing"
            for master in masters:
                if int(master.info("replication").get("connected_slaves", 0)) < self.replicas:
                    return f"{master.address}: replicas not connected"
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return ""

    # --- faults -----------------------------------------------------------------------------
    def kill_master(self, master: LocalNode) -> LocalNode:
        """SIGKILL `master`; wait (bounded) until its replica is promoted and the cluster is ok
        again; returns the new master."""
        replicas = [n for n in self.nodes if n.running and self._master_port(n) == master.port]
        if not replicas:
            raise AssertionError(f"{master.address} has no replica to take over")
        master.kill()
        deadline = time.monotonic() + FAILOVER_TIMEOUT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(
                redis.ConnectionError, redis.TimeoutError, redis.ResponseError
            ):
                promoted = [r for r in replicas if self._role(r) == "master"]
                if promoted and all(
                    n.cluster_info().get("cluster_state") == "ok" for n in self.nodes if n.running
                ):
                    return promoted[0]
            time.sleep(0.05)
        raise AssertionError(
            f"no replica of {master.address} took over within {FAILOVER_TIMEOUT_S}s\n"
            + self.tails()
        )

    def start_again(self, node: LocalNode) -> None:
        """Start a killed node on its port and directory; it rejoins (as a replica of the
        master that replaced it) and the cluster is ready again."""
        node.start()
        self.wait_ready()

    def reshard(self, source: LocalNode, target: LocalNode, slots: int) -> None:
        """Move `slots` slots (with their keys) from `source` to `target`, live."""
        self._cli(
            "--cluster",
            "reshard",
            source.address,
            "--cluster-from",
            self._node_id(source),
            "--cluster-to",
            self._node_id(target),
            "--cluster-slots",
            str(slots),
            "--cluster-yes",
            "--cluster-pipeline",
            "100",
            within=RESHARD_TIMEOUT_S,
        )
        self.wait_ready()

    def flushall(self) -> None:
        for master in self.masters():
            with master.client() as client:
                client.flushall()

    # --- reading the cluster ----------------------------------------------------------------
    def _role(self, node: LocalNode) -> str:
        return node.info("replication").get("role", "")

    def _master_port(self, node: LocalNode) -> int | None:
        info = node.info("replication")
        return int(info["master_port"]) if info.get("role") == "slave" else None

    def _node_id(self, node: LocalNode) -> str:
        with node.client() as client:
            raw = client.execute_command("CLUSTER", "MYID")
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def slot_ranges(self, node: LocalNode) -> list[tuple[int, int]]:
        """The slot ranges `node` serves now."""
        return self._slots(node)

    def _slots(self, node: LocalNode) -> list[tuple[int, int]]:
        """The slot ranges `node` serves, as it sees them itself."""
        with node.client() as client:
            raw = client.execute_command("CLUSTER", "NODES")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        for line in text.splitlines():
            fields = line.split()
            if len(fields) > 2 and "myself" in fields[2]:
                ranges = []
                for part in fields[8:]:
                    if part.startswith("["):
                        continue  # a slot being migrated or imported
                    lo, _, hi = part.partition("-")
                    ranges.append((int(lo), int(hi or lo)))
                return ranges
        return []

    def _cli(self, *args: str, within: float) -> str:
        done = subprocess.run(
            [redis_cli_binary(), *args],
            capture_output=True,
            text=True,
            timeout=within,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0 or "[ERR]" in done.stdout:
            raise RedisServerError(
                f"redis-cli {' '.join(args[:2])} failed ({done.returncode}):\n"
                f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
        return done.stdout

    def tails(self) -> str:
        return "\n".join(
            f"--- {node.address} ({'up' if node.running else 'down'})\n{node.log_tail(8)}"
            for node in self.nodes
        )


@contextlib.contextmanager
def local_cluster(directory: Path, *, masters: int = 3) -> Iterator[LocalCluster]:
    with LocalCluster(directory, masters=masters) as cluster:
        yield cluster
