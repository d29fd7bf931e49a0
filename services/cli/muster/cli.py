"""The `muster` command: parse arguments, load settings once, configure logging once, hand off.

Before the settings, every command reads the private `.env` of the working directory (or
the file MUSTER_ENV_FILE names; muster.envfile), never overriding what the environment
sets. A command that needs Redis, run with MUSTER_REDIS_URL unset, uses the embedded one a
running `muster up` serves from the same MUSTER_DATA_DIR (muster.embedded.running_url), and
passes it on to the processes it starts.

Every subcommand is a process entrypoint; this module is the only place that reads the
environment (through load_settings) and turns errors into exit codes:
0 done · 1 failed (Redis unreachable, data dir busy, a named dead letter not re-driven) ·
2 usage or configuration error (the message names the variable). The work itself lives
elsewhere: muster.worker, muster.dlq, muster.supervisor and, for the API, muster.api.app.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import os
import re
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import msgspec
import redis
import structlog

from muster import envfile, events
from muster.connection import require_redis, sync_client
from muster.dlq import DeadLetter, list_dead_letters, redrive
from muster.embedded import running_url
from muster.errors import CommandFailed, CommandUsage, ConfigError, EventDecodeError
from muster.logs import configure_logging
from muster.records import decode_request
from muster.settings import Settings, env_file_of, env_name, load_settings, local_url

WORKER_KINDS = ("timeline", "delivery", "audit")
OPS_WORKER = "ops"
"""`muster worker ops`: the rq worker for operator and timed jobs (muster.ops.jobs)."""
API_APP = "muster.api.app:app_from_env"
"""uvicorn factory import string: builds the app from the environment in each API process."""
API_GRACE_S = 5
"""How long `muster api` lets open requests and live streams finish after SIGTERM."""

EXIT_FAILED = 1
EXIT_USAGE = 2

if TYPE_CHECKING:
    from muster.api.metrics import MetricsListener

log = structlog.get_logger("muster.cli")

_DEAD_REF = re.compile(r"(?:\d+:)?\d+-\d+")

Command = Callable[[argparse.Namespace, Settings], int]


# --- subcommands ----------------------------------------------------------------------------
def run_api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    require_redis(settings, "api")
    from muster.supervisor import require_free_ports

    require_free_ports(settings)
    listener = None
    if settings.metrics_address is not None:
        # Multiprocess mode is chosen when prometheus_client is imported: point it at our
        # own directory first, so this process and every uvicorn worker count there.
        directory = Path(tempfile.mkdtemp(prefix="muster-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
        from muster.api.metrics import MetricsListener

        listener = MetricsListener.start(settings, directory)
        # uvicorn ends by re-raising the SIGTERM or SIGINT that stopped it to the handler in
        # place before it ran: this one, which closes the listener and its directory, then
        # lets the signal end the process as it would have.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, functools.partial(_close_then_die, listener))
    log.info(
        "api starting",
        url=f"http://{settings.api_host}:{settings.api_port}",
        workers=settings.api_workers,
    )
    try:
        uvicorn.run(
            API_APP,
            factory=True,
            host=settings.api_host,
            port=settings.api_port,
            workers=settings.api_workers,
            log_config=None,  # keep configure_logging's set-up; uvicorn logs through the root logger
            # Quiet: the app logs what matters through structlog; uvicorn speaks up only on
            # trouble (a port in use, a failed start-up) unless MUSTER_LOG_LEVEL=debug.
            log_level="debug" if settings.log_level == "debug" else "warning",
            access_log=False,
            timeout_graceful_shutdown=API_GRACE_S,
        )
    finally:
        if listener is not None:
            listener.close()
    return 0


def _close_then_die(listener: MetricsListener, signum: int, frame: FrameType | None) -> None:
    listener.close()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    from muster.worker import run, serve

    require_redis(settings, f"worker {args.kind}")
    if args.kind == OPS_WORKER:
        from muster.ops import jobs

        return jobs.run_worker(settings)
    module = importlib.import_module(f"muster.{args.kind}.worker")
    run(
        serve(
            settings,
            group=module.GROUP,
            make_handler=module.make_handler,
            streams_for=getattr(module, "streams_for", None),
            decode=getattr(module, "decode", None),
        )
    )
    return 0


def run_dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    with _redis(settings, "dlq list") as client:
        letters = list_dead_letters(client, settings.partitions, limit=args.limit)
    if args.json:
        print(json.dumps([_letter_json(letter) for letter in letters], indent=2))
        return 0
    if not letters:
        print("no dead letters")
        return 0
    rows = [
        (
            letter.ref,
            letter.group,
            f"{letter.stream} {letter.entry}",
            str(letter.attempts),
            _one_line(letter.error, 80),
        )
        for letter in letters
    ]
    print(_table(("DEAD ID", "GROUP", "ORIGIN", "ATTEMPTS", "ERROR"), rows))
    return 0


def run_dlq_redrive(args: argparse.Namespace, settings: Settings) -> int:
    named = None if args.all else {_qualified(ref, settings.partitions) for ref in args.dead_ids}
    with _redis(settings, "dlq redrive") as client:
        moved = redrive(client, settings.partitions, named)
    print(f"re-drove {moved} dead letter{'' if moved == 1 else 's'}")
    if named is not None and moved < len(named):
        print(
            f"muster dlq redrive: {len(named) - moved} of the {len(named)} named dead letters "
            "were not re-driven: no such id, or the entry carries no event (see `muster dlq list`)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return 0


def run_mail_in(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from muster.api import mailin

    require_redis(settings, "mail-in")
    if settings.mail_in_address is None:
        raise ConfigError("MUSTER_MAIL_IN_ADDRESS is off: set host:port for mail-in to listen on")
    asyncio.run(mailin.serve(settings))
    return 0


def run_up(args: argparse.Namespace, settings: Settings) -> int:
    from muster.supervisor import up

    return up(settings)


def run_init(args: argparse.Namespace) -> int:
    """`muster init`: a private `.env` with a fresh admin token (an existing one is kept)."""
    path = Path(args.path)
    if args.path.endswith(os.sep) or path.is_dir():
        path = path / ".env"
    token, kept = envfile.write(path, data_dir=path.parent / "var", force=args.force)
    merged = {**envfile.read(path), **os.environ}
    try:
        url = load_settings(merged).public_url
    except ConfigError:
        url = local_url(Settings().api_host, Settings().api_port)
    where = "" if path.resolve().parent == Path.cwd() else f"cd {path.resolve().parent} && "
    print(
        "\n".join(
            [
                f"muster init: wrote {path} (readable by you only)"
                + (", keeping its admin token" if kept else ", with a new admin token"),
                "",
                "Next:",
                f"  {where}muster up          start everything here (Ctrl-C stops it)",
                f"  open {url}/app   and sign in as admin with the admin token,",
                f"  MUSTER_ADMIN_TOKEN in {path}:",
                "",
                f"      {token}",
                "",
                "Other `muster` commands run in this directory read the same file: they find",
                "the API and the embedded Redis without exporting anything. See `muster --help`.",
            ]
        )
    )
    return 0


# --- helpers ----------------------------------------------------------------------------------
def _embedded_redis(settings: Settings) -> Settings:
    """With MUSTER_REDIS_URL unset: the embedded Redis of a `muster up` running on this data
    dir, if any, for this command and the processes it starts (the API's workers)."""
    url = running_url(settings.data_dir)
    if url is None:
        return settings
    os.environ[env_name("redis_url")] = url
    return msgspec.structs.replace(settings, redis_url=url)


@contextlib.contextmanager
def _redis(settings: Settings, command: str) -> Iterator[redis.Redis]:
    """A sync client for a one-shot command; an unreachable server becomes `CommandFailed`."""
    require_redis(settings, command)
    client = sync_client(settings)
    try:
        yield client
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise CommandFailed(f"muster {command}: cannot reach Redis: {exc}") from exc
    finally:
        client.close()


def _letter_json(letter: DeadLetter) -> dict[str, object]:
    event_type = event_id = None
    if letter.payload is not None:
        try:
            event = events.decode(letter.payload)
        except EventDecodeError:
            try:  # a delivery stream's dead letter
                event_id = decode_request(letter.payload).id
                event_type = "DeliveryRequested"
            except EventDecodeError:
                pass
        else:
            event_type, event_id = events.event_type(event), event.id
    # The payload itself stays out: it may be a direct message's text.
    return {
        "ref": letter.ref,
        "dead_id": letter.dead_id,
        "partition": letter.partition,
        "group": letter.group,
        "stream": letter.stream,
        "entry": letter.entry,
        "attempts": letter.attempts,
        "error": letter.error,
        "has_payload": letter.payload is not None,
        "event_type": event_type,
        "event_id": event_id,
    }


def _qualified(ref: str, partitions: int) -> str:
    """`PARTITION:ID`; a bare ID names partition 0's only when there is no other partition."""
    if ":" in ref:
        return ref
    if partitions == 1:
        return f"0:{ref}"
    raise CommandUsage(
        f"muster dlq redrive: with MUSTER_PARTITIONS={partitions} an id can repeat across "
        f"partitions; name dead letters as PARTITION:ID (e.g. 0:{ref}), as `muster dlq list` "
        "shows them"
    )


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _dead_ref(raw: str) -> str:
    if not _DEAD_REF.fullmatch(raw):
        raise argparse.ArgumentTypeError(
            f"not a dead-letter id (PARTITION:ID like 0:1700000000000-0): {raw!r}"
        )
    return raw


def _version() -> str:
    try:
        return version("muster")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


# --- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="muster",
        description="Muster: crisis and incident communication. Configured by MUSTER_* "
        "environment variables (see docs/operations.md).",
    )
    parser.add_argument("--version", action="version", version=f"muster {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="everything in the foreground (embedded Redis when MUSTER_REDIS_URL is unset)",
        description="Run the API and one worker of each kind in the foreground; with "
        "MUSTER_REDIS_URL unset, also an embedded Redis with its data under MUSTER_DATA_DIR.",
    )
    up.set_defaults(run=run_up, process="up")

    init = commands.add_parser(
        "init",
        help="write a private .env with a fresh admin token, and say what to do next",
        description="Write a .env (mode 0600) with a new random MUSTER_ADMIN_TOKEN, the data "
        "dir and the common settings commented out. Every muster command run in its directory "
        "reads it. An existing file is kept unless --force, which keeps the variables it sets "
        "(its admin token above all).",
    )
    init.add_argument(
        "--path",
        default=".env",
        help="the file to write, or a directory to write .env in (default ./.env)",
    )
    init.add_argument(
        "--force", action="store_true", help="replace an existing file, keeping its variables"
    )
    init.set_defaults(run=run_init, process="init")

    api = commands.add_parser("api", help="the HTTP API alone")
    api.set_defaults(run=run_api, process="api")

    mail_in = commands.add_parser(
        "mail-in",
        help="the SMTP listener that takes replies to Muster's email (MUSTER_MAIL_IN_ADDRESS)",
    )
    mail_in.set_defaults(run=run_mail_in, process="mail-in")

    worker = commands.add_parser("worker", help="one worker process of a kind")
    worker.add_argument("kind", choices=(*WORKER_KINDS, OPS_WORKER))
    worker.set_defaults(run=run_worker, process="worker")

    dlq = commands.add_parser("dlq", help="dead letters: list and re-drive")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")
    listing = dlq_commands.add_parser(
        "list", help="list dead letters, each partition's oldest first"
    )
    listing.add_argument("--limit", type=_positive, default=100, help="at most N (default 100)")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    listing.set_defaults(run=run_dlq_list, process="dlq")
    again = dlq_commands.add_parser(
        "redrive",
        help="send dead letters back to the group that gave up on them",
        description="Append each dead letter's event to its group's retry stream (only that "
        "group reads it) and remove it from the dead-letter stream.",
    )
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every dead letter")
    which.add_argument(
        "dead_ids",
        nargs="*",
        default=[],
        metavar="DEAD_ID",
        type=_dead_ref,
        help="PARTITION:ID as `muster dlq list` shows it (a bare ID with one partition)",
    )
    again.set_defaults(run=run_dlq_redrive, process="dlq")

    from muster.ops import admin, incidents
    from muster.ops.commands import add_commands  # it imports this module's helpers

    add_commands(commands)
    admin.add_commands(commands)
    incidents.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.process == "init":  # before reading any .env: it may be the one being replaced
        try:
            return run_init(args)
        except CommandFailed as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_FAILED
    try:
        required = bool(os.environ.get(env_name("env_file")))
        envfile.load(env_file_of(os.environ), os.environ, required=required)
        settings = load_settings()
    except ConfigError as exc:
        print(f"muster: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if settings.redis_url is None and args.process != "up":
        settings = _embedded_redis(settings)
    process = f"worker-{args.kind}" if args.process == "worker" else args.process
    configure_logging(settings, process=process)
    command: Command = args.run
    try:
        return command(args, settings)
    except ConfigError as exc:
        print(f"muster: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CommandFailed as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    except CommandUsage as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy's: commands defined elsewhere
    # (muster.ops.commands) raise muster.errors' CommandFailed and CommandUsage, which main must catch.
    from muster import cli

    sys.exit(cli.main())
