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
from pathlib import Path

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
