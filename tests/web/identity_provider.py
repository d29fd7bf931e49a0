"""A real OpenID provider on loopback for the company sign-in tests: panva's oidc-provider
(npm, OpenID-certified) run by node from tests/web/oidc_provider/provider.mjs.

`install()` runs `npm ci` from the committed package.json + package-lock.json into a cache
directory named by the lock file's hash (~/.cache/muster-tests/, or $MUSTER_TEST_CACHE),
once per lock file, under a file lock so parallel runs do not race. Without node or npm,
or when the install fails, the tests are skipped with the reason, except under CI
(CI=true), where they fail: CI must run them.

`IdentityProvider.start(...)` writes the provider's configuration (its issuer, one client,
the accounts and the RSA signing key, which the test keeps so that it can also sign tokens
the provider would not) and waits (bounded) for `ready`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from joserfc.jwk import RSAKey

SOURCE = Path(__file__).with_name("oidc_provider")
INSTALL_TIMEOUT_S = 300.0
START_TIMEOUT_S = 15.0
NODE_MIN = (20, 0)
"""oidc-provider 9 runs on Node.js 20 (it warns that 22 LTS is what it supports)."""


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """Skip (or, in CI, fail) the calling test or fixture."""
    if _in_ci():
        pytest.fail(f"the OpenID provider for the company sign-in tests cannot run in CI: {reason}")
    pytest.skip(f"company sign-in tests skipped: {reason}")


def _cache_root() -> Path:
    configured = os.environ.get("MUSTER_TEST_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "muster-tests"


def _node_version(node: str) -> tuple[int, ...]:
    out = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return tuple(int(part) for part in out.strip().lstrip("v").split(".")[:2])


def install() -> Path:
    """The directory holding node_modules/oidc-provider and provider.mjs, ready to run."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("node and npm must be on PATH (Node.js >= 20; .ci/run installs them)")
    assert node is not None
    assert npm is not None
    version = _node_version(node)
    if version < NODE_MIN:
        unavailable(f"oidc-provider 9 needs Node.js >= 20, found {'.'.join(map(str, version))}")
    lock = (SOURCE / "package-lock.json").read_bytes()
    target = _cache_root() / f"oidc-provider-{hashlib.sha256(lock).hexdigest()[:16]}"
    target.mkdir(parents=True, exist_ok=True)
    done = target / ".installed"
    with open(target.parent / f"{target.name}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if not done.exists():
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(SOURCE / name, target / name)
            try:
                result = subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                    cwd=target,
                    capture_output=True,
                    text=True,
                    timeout=INSTALL_TIMEOUT_S,
                )
            except subprocess.TimeoutExpired:
                unavailable(f"npm ci did not finish within {INSTALL_TIMEOUT_S:.0f}s in {target}")
            if result.returncode != 0:
                unavailable(f"npm ci failed in {target}: {result.stderr.strip()[-2000:]}")
            done.write_text("ok\n")
    # The script resolves `oidc-provider` from where it lies: beside node_modules.
    shutil.copyfile(SOURCE / "provider.mjs", target / "provider.mjs")
    return target


def signing_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "muster-test", "use": "sig"}, private=True)


@dataclass
class IdentityProvider:
    issuer: str
    client_id: str
    client_secret: str
    key: RSAKey
    process: subprocess.Popen[str]
    log: IO[str]

    @classmethod
    def start(
        cls,
        directory: Path,
        workdir: Path,
        port: int,
        accounts: dict[str, dict[str, Any]],
        *,
        host: str = "127.0.0.1",
    ) -> IdentityProvider:
        issuer = f"http://{host}:{port}"
        key = signing_key()
        config = {
            "issuer": issuer,
            "port": port,
            "cookie_key": os.urandom(16).hex(),
            "jwks": {"keys": [key.as_dict(private=True)]},
            "clients": [
                {
                    "client_id": "muster",
                    "client_secret": "muster-test-client-secret-4f9a",
                    "redirect_uris": ["http://127.0.0.1/app/oidc/callback"],
                }
            ],
            "accounts": accounts,
        }
        config_path = workdir / f"provider-{port}.json"
        config_path.write_text(json.dumps(config))
        log = open(workdir / f"provider-{port}.log", "w")  # noqa: SIM115 - closed in stop()
        process = subprocess.Popen(
            ["node", str(directory / "provider.mjs"), str(config_path)],
            cwd=directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started = cls(issuer, "muster", "muster-test-client-secret-4f9a", key, process, log)
        started._wait_ready()
        return started

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if f"ready {self.issuer}" in self.output():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        unavailable(
            f"oidc-provider did not start within {START_TIMEOUT_S:.0f}s: {self.output()[-2000:]}"
        )

    def output(self) -> str:
        """What the provider printed so far (its warnings, errors and `ready`)."""
        return Path(self.log.name).read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        with contextlib.suppress(Exception):
            self.log.close()
