"""A newcomer's first hour, as real processes: `muster init`, `muster up` with nothing
exported, then every other command in the same directory finding the API, the admin token
and the embedded Redis through the `.env` alone; and the `.env` rules themselves.

Subprocesses get the caller's environment without any MUSTER_ variable (test_cli.clean_env
minus its MUSTER_ENV_FILE, so the `.env` of their working directory is what they read).
"""

from __future__ import annotations

import json
import os
import signal
import stat
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from redis_server import free_port
from test_cli import Spawned, run_muster, spawn, wait_for

from muster import envfile
from muster.cli import main
from muster.embedded import URL_RECORD, running_url
from muster.errors import CommandFailed, ConfigError
from muster.settings import load_settings

__all__ = ["spawn"]  # the fixture, used by name


def bare_env(**overrides: str) -> dict[str, str]:
    """No MUSTER_ variable at all: what a fresh shell has."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
    env.update(overrides)
    return env


def env_lines(path: Path) -> dict[str, str]:
    return envfile.read(path)


# --- muster init --------------------------------------------------------------------------------
def test_init_writes_a_private_env_and_never_replaces_its_token(tmp_path: Path) -> None:
    first = run_muster("init", env=bare_env(), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    path = tmp_path / ".env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = env_lines(path)
    token = values["MUSTER_ADMIN_TOKEN"]
    assert load_settings(values).admin_token == token  # passes the admin token's checks
    assert values["MUSTER_DATA_DIR"] == str((tmp_path / "var").resolve())
    assert "# MUSTER_SMTP_URL=" in path.read_text()  # the common settings, commented
    for step in ("muster up", "http://127.0.0.1:8000/app", token):
        assert step in first.stdout

    again = run_muster("init", env=bare_env(), cwd=tmp_path)
    assert again.returncode == 1
    assert "exists already" in again.stderr
    assert env_lines(path)["MUSTER_ADMIN_TOKEN"] == token

    with path.open("a") as extra:
        extra.write("MUSTER_API_PORT=8123\n")
    path.chmod(0o644)
    forced = run_muster("init", "--force", env=bare_env(), cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "keeping its admin token" in forced.stdout
    kept = env_lines(path)
    assert kept["MUSTER_ADMIN_TOKEN"] == token
    assert kept["MUSTER_API_PORT"] == "8123"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "http://127.0.0.1:8123/app" in forced.stdout  # the next steps follow the file


def test_init_path_takes_a_file_or_a_directory(tmp_path: Path) -> None:
    assert run_muster("init", "--path", f"{tmp_path}/site/", env=bare_env()).returncode == 0
    assert (tmp_path / "site" / ".env").is_file()
    named = tmp_path / "prod.env"
    assert run_muster("init", "--path", str(named), env=bare_env()).returncode == 0
    assert env_lines(named)["MUSTER_DATA_DIR"] == str((tmp_path / "var").resolve())


def test_write_refuses_values_it_cannot_quote(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text('MUSTER_MAIL_FROM="it\'s@example.org"\n')
    with pytest.raises(CommandFailed, match="quote"):
        envfile.write(path, data_dir=tmp_path / "var", force=True)


# --- reading .env --------------------------------------------------------------------------------
def test_the_environment_wins_over_the_env_file(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("MUSTER_API_PORT=8123\nMUSTER_PARTITIONS=4\n# MUSTER_MAX_LAG=1\n")
    environ = {"MUSTER_API_PORT": "9000"}
    assert envfile.load(path, environ, required=False) == ["MUSTER_PARTITIONS"]
    assert environ == {"MUSTER_API_PORT": "9000", "MUSTER_PARTITIONS": "4"}


def test_a_missing_env_file_is_nothing_unless_named(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    assert envfile.load(tmp_path / ".env", environ, required=False) == []
    with pytest.raises(ConfigError, match="MUSTER_ENV_FILE names"):
        envfile.load(tmp_path / "nowhere.env", environ, required=True)


def test_every_command_reads_the_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    named = tmp_path / "bad.env"
    named.write_text("MUSTER_PARTITIONS=many\n")
    monkeypatch.setenv("MUSTER_ENV_FILE", str(named))
    # main() sets what the file holds in os.environ itself: set then delete through
    # monkeypatch first, so teardown removes it again rather than leak it to later tests.
    monkeypatch.setenv("MUSTER_PARTITIONS", "1")
    monkeypatch.delenv("MUSTER_PARTITIONS")
    assert main(["dlq", "list"]) == 2
    assert "MUSTER_PARTITIONS must be an integer" in capsys.readouterr().err
    monkeypatch.setenv("MUSTER_PARTITIONS", "1")  # the environment wins
    monkeypatch.setenv("MUSTER_ENV_FILE", str(tmp_path / "missing.env"))
    assert main(["dlq", "list"]) == 2
    assert "MUSTER_ENV_FILE names" in capsys.readouterr().err


def test_a_url_record_counts_only_while_muster_up_holds_the_data_dir(tmp_path: Path) -> None:
    (tmp_path / URL_RECORD).write_text("unix:///nowhere/redis.sock\n")
    assert running_url(tmp_path) is None  # left behind by a `muster up` killed outright


# --- the whole path ------------------------------------------------------------------------------
@pytest.mark.slow
def test_init_then_up_then_every_command_with_nothing_exported(
    tmp_path: Path, spawn: Callable[..., Spawned]
) -> None:
    env = bare_env()
    assert run_muster("init", env=env, cwd=tmp_path).returncode == 0
    port, metrics = free_port(), free_port()
    with (tmp_path / ".env").open("a") as extra:  # as someone uncommenting the port would
        extra.write(f"MUSTER_API_PORT={port}\nMUSTER_METRICS_ADDRESS=127.0.0.1:{metrics}\n")
    token = env_lines(tmp_path / ".env")["MUSTER_ADMIN_TOKEN"]
    url = f"http://127.0.0.1:{port}"

    stopped = run_muster("dlq", "list", env=env, cwd=tmp_path)
    assert stopped.returncode == 2
    assert "no `muster up` is running on data dir" in stopped.stderr

    down = run_muster("accounts", "list", env=env, cwd=tmp_path)
    assert down.returncode == 1
    assert down.stderr.strip().count("\n") == 0  # one line
    assert f"the API at {url} is not running" in down.stderr
    assert "muster up" in down.stderr

    up = spawn("up", env=env, name="up")  # cwd tmp_path: it reads the .env there
    ready = wait_for(
        "the API",
        lambda: _answers(f"{url}/readyz", up),
        timeout=60,
        output=up.output,
    )
    assert ready.status_code == 200
    me = httpx.get(f"{url}/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert me.status_code == 200  # the admin signs in with the token from .env
    assert me.json()["handle"] == "admin"

    made = run_muster(
        "accounts", "create", "ops", "--kind", "team", "--display-name", "Operations",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "created @ops (team)" in made.stdout
    person = run_muster(
        "accounts", "create", "mia", "--role", "member", "--email", "mia@example.test",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert person.returncode == 0, person.stderr
    mia_token = person.stdout.split("shown once", 1)[1].split()[-1]
    assert (
        httpx.get(
            f"{url}/v1/me", headers={"Authorization": f"Bearer {mia_token}"}, timeout=5
        ).json()["handle"]
        == "mia"
    )

    taken = run_muster("accounts", "create", "mia", env=env, cwd=tmp_path)
    assert taken.returncode == 1
    assert "409 handle_taken" in taken.stderr
    assert "(field handle)" in taken.stderr
    wrong = run_muster("accounts", "list", "--token", "x" * 43, env=env, cwd=tmp_path)
    assert wrong.returncode == 1
    assert "401" in wrong.stderr

    teams = run_muster("accounts", "list", "--kind", "team", "--json", env=env, cwd=tmp_path)
    assert [a["handle"] for a in json.loads(teams.stdout)] == ["ops"]
    found = run_muster("accounts", "list", "--query", "operat", env=env, cwd=tmp_path)
    assert found.stdout.splitlines()[0].split() == [
        "HANDLE",
        "KIND",
        "ROLE",
        "STATE",
        "DISPLAY",
        "NAME",
    ]
    assert [line.split()[0] for line in found.stdout.splitlines()[1:]] == ["@ops"]

    granted = httpx.put(
        f"{url}/v1/accounts/ops/posters/admin",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert granted.status_code == 204
    posted = run_muster(
        "post", "--as", "ops", "--visibility", "public", "--severity", "warning",
        "Database failover at 14:00", env=env, cwd=tmp_path,
    )  # fmt: skip
    assert posted.returncode == 0, posted.stderr
    post_id = posted.stdout.split()[1]
    post = httpx.get(f"{url}/v1/posts/{post_id}", timeout=5).json()
    assert (post["as_account"], post["visibility"], post["severity"]) == (
        "ops",
        "public",
        "warning",
    )

    # A lost token is reset; a leaver is deactivated, then let back in.
    reset = run_muster("accounts", "reset-token", "mia", env=env, cwd=tmp_path)
    assert reset.returncode == 0, reset.stderr
    new_token = reset.stdout.split()[-1]
    assert new_token != mia_token
    assert _me(url, mia_token) == 401  # the old one stops working at once
    assert _me(url, new_token) == 200
    off = run_muster("accounts", "deactivate", "mia", env=env, cwd=tmp_path)
    assert off.returncode == 0, off.stderr
    assert off.stdout.strip() == "@mia deactivated"
    assert _me(url, new_token) == 401
    listed = run_muster("accounts", "list", "--query", "mia", env=env, cwd=tmp_path)
    assert listed.stdout.splitlines()[1].split()[:4] == ["@mia", "person", "member", "deactivated"]
    on = run_muster("accounts", "reactivate", "mia", env=env, cwd=tmp_path)
    assert on.returncode == 0, on.stderr
    assert _me(url, new_token) == 200
    nobody = run_muster("accounts", "deactivate", "nobody", env=env, cwd=tmp_path)
    assert nobody.returncode == 1
    assert "404" in nobody.stderr

    # Commands that talk to Redis find the embedded one through the data dir.
    letters = run_muster("dlq", "list", env=env, cwd=tmp_path)
    assert letters.returncode == 0, letters.stderr
    assert letters.stdout.strip() == "no dead letters"
    checksum = run_muster("projections", "checksum", "--json", env=env, cwd=tmp_path)
    assert checksum.returncode == 0, checksum.stderr

    scraped = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5)
    assert "muster_ingest_events_total" in scraped.text
    assert f"http://127.0.0.1:{metrics}/metrics" in up.out.read_text()  # the banner says where

    code, _ = up.stop(signal.SIGINT)
    assert code == 0, up.output()[-4000:]
    assert not (tmp_path / "var" / URL_RECORD).exists()
    after = run_muster("dlq", "list", env=env, cwd=tmp_path)
    assert after.returncode == 2


def _me(url: str, token: str) -> int:
    return httpx.get(
        f"{url}/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=5
    ).status_code


def _answers(url: str, up: Spawned) -> httpx.Response | None:
    if up.process.poll() is not None:
        pytest.fail(f"muster up exited with {up.process.returncode}:\n{up.output()[-4000:]}")
    try:
        response = httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None
    return response if response.status_code == 200 else None
