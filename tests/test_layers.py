"""The import-linter contracts (pyproject.toml, run by `lint-imports` in the checks) see all
of shared/: a module added there is a shared module, and must be in the contract that keeps
shared/ from importing services, or that contract would not look at it."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"api", "timeline", "delivery", "escalation", "audit", "ops"}


def contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["name"]: c for c in config["contracts"]}


def shared_modules() -> set[str]:
    top = ROOT / "shared" / "muster"
    found = {f"muster.{p.stem}" for p in top.glob("*.py")}
    found |= {f"muster.{p.parent.name}" for p in top.glob("*/__init__.py")}
    return found


def test_the_shared_contract_names_every_module_of_shared() -> None:
    (contract,) = [c for c in contracts().values() if c["type"] == "forbidden"]
    assert set(contract["source_modules"]) == shared_modules()
    assert set(contract["forbidden_modules"]) == {f"muster.{s}" for s in SERVICES} | {"muster.cli"}


def test_every_service_is_independent_of_the_others() -> None:
    (contract,) = [c for c in contracts().values() if c["type"] == "independence"]
    on_disk = {p.name for p in (ROOT / "services").iterdir() if (p / "muster").is_dir()}
    assert on_disk == SERVICES | {"cli"}  # cli: the entry point, the one that wires them
    assert set(contract["modules"]) == {f"muster.{s}" for s in SERVICES}
