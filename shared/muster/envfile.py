"""The private `.env` file: `muster init` writes it, every `muster` command reads it first.

Reading (`load`) sets each variable the file names that the environment does not already
set — a value exported in the shell, or given by `muster up` to its children, always wins —
so a command run in the directory finds the admin token and the data dir (and, through the
data dir, the embedded Redis a running `muster up` serves: muster.embedded.running_url).
Parsing is python-dotenv's, the format docker compose and most tools read too.

Writing (`write`) makes a new file readable by its owner only (0600), atomically. An existing
file is replaced only when asked (`force`), and even then every variable it sets is kept —
above all MUSTER_ADMIN_TOKEN: a new admin token would lock out every browser and script
signed in with the old one. This module never logs a value: the file holds secrets.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

from dotenv import dotenv_values

from muster.errors import CommandFailed, ConfigError

ADMIN_TOKEN = "MUSTER_ADMIN_TOKEN"  # noqa: S105 (the variable's name, not a token)
DATA_DIR = "MUSTER_DATA_DIR"

_BARE = re.compile(r"[A-Za-z0-9_./:@+,=-]*")

_HEADER = """\
# Muster's settings for this directory, written by `muster init`. Every `muster` command
# run here reads this file (or the one MUSTER_ENV_FILE names); a variable already set in
# the environment wins over it. Keep it private: it holds the admin token.
# Every setting is described in docs/operations.md, Configuration.
"""

_COMMON = """\
# --- common settings: uncomment to change ---
# Where the API listens, and the address people use to reach it (links in email and SMS):
# MUSTER_API_HOST=127.0.0.1
# MUSTER_API_PORT=8000
# MUSTER_PUBLIC_URL=https://muster.example.org
# Outgoing email. Unset: email is written to <data dir>/mailbox as .eml files, not sent.
# MUSTER_SMTP_URL=smtp://user:password@mail.example.org:587?starttls=1
# MUSTER_MAIL_FROM=muster@example.org
# SMS. `log` (the default) writes each SMS to the log, not sent.
# MUSTER_SMS_PROVIDER=twilio
# MUSTER_TWILIO_ACCOUNT_SID=AC...
# MUSTER_TWILIO_AUTH_TOKEN=...
# MUSTER_TWILIO_FROM=+15550100
# Your own Redis instead of the embedded one `muster up` starts:
# MUSTER_REDIS_URL=redis://127.0.0.1:6379/0
# Prometheus metrics, on an internal address only (`off` turns them off):
# MUSTER_METRICS_ADDRESS=127.0.0.1:9464
"""


def read(path: Path) -> dict[str, str]:
    """The variables `path` sets (a name with no value is left out)."""
    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    return {name: value for name, value in values.items() if value is not None}


def load(path: Path, environ: MutableMapping[str, str], *, required: bool) -> list[str]:
    """Set what `path` sets and `environ` lacks; the names set. A missing file is nothing to
    load, unless `required` (MUSTER_ENV_FILE named it)."""
    if not path.exists():
        if required:
            raise ConfigError(f"MUSTER_ENV_FILE names {path}, which does not exist")
        return []
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a .env file (MUSTER_ENV_FILE)")
    loaded = []
    for name, value in read(path).items():
        if name not in environ:
            environ[name] = value
            loaded.append(name)
    return loaded


def new_admin_token() -> str:
    """43 URL-safe characters of 256 random bits: passes MUSTER_ADMIN_TOKEN's checks."""
    return secrets.token_urlsafe(32)


def _line(name: str, value: str) -> str:
    if _BARE.fullmatch(value):
        return f"{name}={value}"
    if "'" in value or "\n" in value:
        raise CommandFailed(f"cannot write {name}: its value holds a quote or a line break")
    return f"{name}='{value}'"


def write(path: Path, *, data_dir: Path, force: bool) -> tuple[str, bool]:
    """Write a new `.env` at `path`; (the admin token, whether it was kept from the old file).

    Refuses (CommandFailed) to replace an existing file unless `force`; with `force`, every
    variable the old file set is carried over, MUSTER_ADMIN_TOKEN and MUSTER_DATA_DIR included.
    """
    kept: dict[str, str] = {}
    if path.exists():
        if not force:
            raise CommandFailed(
                f"muster init: {path} exists already; it is kept as it is. `muster init --force` "
                "writes a fresh one, keeping every variable it sets (the admin token too)"
            )
        try:
            kept = read(path)
        except ConfigError as exc:
            raise CommandFailed(f"muster init: {exc}") from None
    token = kept.pop(ADMIN_TOKEN, None)
    reused = token is not None
    if token is None:
        token = new_admin_token()
    data = kept.pop(DATA_DIR, None) or str(data_dir.resolve())
    lines = [
        _HEADER,
        "# The admin account's token: sign in to the web app (/app) with it. `muster init`",
        "# never replaces it. If it leaks, put a new random value here: the API makes it the",
        "# admin's token when it next starts, and the old one stops working.",
        _line(ADMIN_TOKEN, token),
        "# Local data: the embedded Redis, the audit archive, the development mailbox.",
        _line(DATA_DIR, data),
    ]
    if kept:
        lines.append("# Kept from the previous file:")
        lines.extend(_line(name, value) for name, value in kept.items())
    lines.append("")
    lines.append(_COMMON)
    _write_private(path, "\n".join(lines))
    return token, reused


def _write_private(path: Path, text: str) -> None:
    """Owner-only from the first byte (never a moment world-readable), then renamed in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".env.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
