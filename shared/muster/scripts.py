"""The one loader of Muster's Lua scripts: shared/muster/lua/<name>.lua, with snippets.

A line `--! include <snippet>` is replaced by lua/<snippet>.lua, so a rule that several
scripts need (merging channel lists, say) is written once. Every script is read once per
process; redis-py's `register_script` then runs it by SHA (the ingest path's EVAL sends
it whole: it is short). A script touches keys of one slot only (one partition's hash tag):
those it is given, and names it builds from a prefix it is given (homes, follow records).
"""

from __future__ import annotations

import functools
import re
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.asyncio.cluster import ClusterPipeline
from redis.crc import key_slot

from muster.connection import in_multi

_DIR = Path(__file__).with_name("lua")
_INCLUDE = re.compile(r"^--! include (\w+)$", re.MULTILINE)


@functools.cache
def source(name: str) -> str:
    """The text of lua/<name>.lua with its includes expanded (each snippet once)."""
    return _expand(name, set())


def _expand(name: str, seen: set[str]) -> str:
    seen.add(name)
    text = (_DIR / f"{name}.lua").read_text()

    def include(match: re.Match[str]) -> str:
        snippet = match.group(1)
        return "" if snippet in seen else _expand(snippet, seen)

    return _INCLUDE.sub(include, text)


class CrossSlotScript(RuntimeError):
    """A script was called with keys of more than one Redis Cluster slot: a bug in the
    caller (keys.py's hash tags keep a partition's keys in one slot), caught on one Redis too."""


def _tag(key: str | bytes) -> str:
    """What decides a key's slot: its hash tag (the text in the first `{...}`), else itself."""
    name = key.decode() if isinstance(key, bytes) else str(key)
    start = name.find("{")
    if start >= 0:
        end = name.find("}", start + 1)
        if end > start + 1:
            return name[start + 1 : end]
    return name


def check_one_slot(name: str, script_keys: Sequence[Any]) -> None:
    """Raise CrossSlotScript, naming the script, unless `script_keys` share one slot."""
    tags = {_tag(key) for key in script_keys}
    if len(tags) > 1 and len({key_slot(tag.encode()) for tag in tags}) > 1:
        raise CrossSlotScript(
            f"script {name} was called with keys of {len(tags)} slots ({sorted(tags)}): "
            "every key of a script must carry one partition's hash tag"
        )


class Script:
    """lua/<name>.lua registered on a client: called like redis-py's Script
    (`await script(keys=..., args=..., client=pipe)`), checking first that its keys share
    one slot (on one Redis too, so the tests catch a caller that would break a cluster).

    In a cluster, redis-py's pipelines do not load scripts the way a single-node pipeline
    does (SCRIPT EXISTS/LOAD before sending), and Redis 7 neither persists nor replicates
    loaded scripts, so a promoted replica or a restarted master has none. So on a cluster
    pipeline: inside MULTI the script goes as EVAL with its text (a NOSCRIPT there would fail
    that one command of the transaction and commit the rest); otherwise as EVALSHA, after a
    SCRIPT LOAD on the node that will run it the first time this process sends it there
    (`forget` after a NOSCRIPT makes it load again). On one Redis, a transaction's pipeline
    sends EVAL with the text too, which saves redis-py's SCRIPT EXISTS round trip per EXEC."""

    def __init__(self, redis: Any, name: str) -> None:
        self.name = name
        self.text = source(name)
        self._script = redis.register_script(self.text)
        self.sha: str = self._script.sha
        self._loaded_on: set[str] = set()  # cluster nodes (host:port) known to hold it
        _EVERY.add(self)

    async def __call__(
        self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None
    ) -> Any:
        check_one_slot(self.name, keys)
        if isinstance(client, ClusterPipeline):
            return await self._on_cluster_pipeline(client, list(keys), list(args))
        if client is not None and (getattr(client, "is_transaction", False) or in_multi(client)):
            # In a transaction EVALSHA would cost a SCRIPT EXISTS round trip before every EXEC
            # (redis-py checks, since a NOSCRIPT there would fail that one command and commit
            # the rest); the text is a few KB on loopback, the round trip a request's 1/7.
            return client.eval(self.text, len(keys), *keys, *args)
        return await self._script(keys=list(keys), args=list(args), client=client)

    async def _on_cluster_pipeline(
        self, pipe: ClusterPipeline, keys: list[Any], args: list[Any]
    ) -> Any:
        if in_multi(pipe) or getattr(pipe, "_transaction", False):
            return pipe.eval(self.text, len(keys), *keys, *args)
        cluster = pipe.cluster_client
        node = cluster.get_node_from_key(keys[0]) if keys else None
        if node is not None and node.name not in self._loaded_on:
            await cluster.execute_command("SCRIPT LOAD", self.text, target_nodes=node)
            self._loaded_on.add(node.name)
        return pipe.evalsha(self.sha, len(keys), *keys, *args)

    def forget(self) -> None:
        """A node answered NOSCRIPT (restarted, or a replica promoted): load again on next use."""
        self._loaded_on.clear()


_EVERY: weakref.WeakSet[Script] = weakref.WeakSet()


def register(redis: Any, name: str) -> Script:
    return Script(redis, name)


def forget_everywhere() -> None:
    """After a NOSCRIPT: every script of this process loads again where it next runs."""
    for script in list(_EVERY):
        script.forget()
