"""Everyday administration from the command line, over the running API's HTTP interface:

    muster accounts create HANDLE [--kind person|team|service] [--role ...] [--email ...]
                                  [--phone ...] [--display-name ...] [--webhook-url ...]
    muster accounts list [--kind KIND] [--query TEXT] [--json]
    muster accounts reset-token HANDLE
    muster accounts deactivate HANDLE · muster accounts reactivate HANDLE
    muster post [--as TEAM] [--visibility public|internal] [--severity ...] TEXT

(`muster incident ...` and `muster components ...` are in incidents.py, over the same Api.)

Each is one or a few requests to the API at MUSTER_PUBLIC_URL (`--url`), with the admin
token (MUSTER_ADMIN_TOKEN, which `muster init` keeps in .env; `--token` for another), so the
API's validation, authorisation and audit apply exactly as for any client; nothing here
reads or writes Redis. An API that does not answer is one line saying so and how to start
it; a refusal is the API's own error message. Exit codes are cli.py's: 0 done, 1 the API is
down or refused, 2 usage (no token). A token is printed once, when it is made.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from muster.errors import CommandFailed, CommandUsage
from muster.settings import Settings

TIMEOUT_S = 10.0
PAGE = 100  # GET /v1/accounts' largest page


class Api:
    """The API as one command sees it: its URL, a token, and errors turned into messages."""

    def __init__(self, settings: Settings, args: argparse.Namespace, command: str) -> None:
        self.url = (args.url or settings.public_url).rstrip("/")
        token = args.token or settings.admin_token
        if not token:
            raise CommandUsage(
                f"muster {command}: no token: set MUSTER_ADMIN_TOKEN (`muster init` keeps it in "
                ".env) or pass --token"
            )
        self.command = command
        self.client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "muster-cli"},
            timeout=TIMEOUT_S,
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of a 2xx (None when it has no body); CommandFailed otherwise."""
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise CommandFailed(
                f"muster {self.command}: the API at {self.url} is not running (nothing "
                "answers there): start it with `muster up` (or `muster api`) in this "
                "directory, or point --url / MUSTER_PUBLIC_URL at it"
            ) from None
        except httpx.TimeoutException:
            raise CommandFailed(
                f"muster {self.command}: the API at {self.url} did not answer within "
                f"{TIMEOUT_S:.0f} s"
            ) from None
        except httpx.HTTPError as exc:
            raise CommandFailed(f"muster {self.command}: cannot reach {self.url}: {exc}") from None
        if response.is_success:
            return response.json() if response.content else None
        raise CommandFailed(f"muster {self.command}: {refusal(response)}")


def refusal(response: httpx.Response) -> str:
    """`409 handle_taken: <the API's message> (field handle)`, or the status alone."""
    try:
        error = response.json()["error"]
        message = f"{response.status_code} {error['code']}: {error['message']}"
        if error.get("field"):
            message += f" (field {error['field']})"
    except (ValueError, KeyError, TypeError):
        return f"the API answered {response.status_code} {response.reason_phrase}"
    if response.status_code == 401:
        message += "; check MUSTER_ADMIN_TOKEN (or --token)"
    return message


# --- accounts ----------------------------------------------------------------------------------
def run_create(args: argparse.Namespace, settings: Settings) -> int:
    body: dict[str, Any] = {"handle": args.handle, "kind": args.kind}
    for field in ("role", "email", "phone", "display_name", "webhook_url"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    with Api(settings, args, "accounts create") as api:
        made = api.call("POST", "/v1/accounts", json=body)
    role = f", {made['role']}" if made.get("role") else ""
    print(f"created @{made['handle']} ({made['kind']}{role}): {made['display_name']}")
    if made.get("token"):
        print(f"token (shown once; it signs in as @{made['handle']}):\n\n    {made['token']}\n")
    if made.get("webhook_secret"):
        print(f"webhook secret (shown once; verifies its webhooks): {made['webhook_secret']}")
    return 0


def _accounts(api: Api, kind: str | None, query: str | None) -> Iterator[dict[str, Any]]:
    """Every account the API's own filters (`kind`, `q`: in handle or display name) keep."""
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": PAGE}
        if kind is not None:
            params["kind"] = kind
        if query:
            params["q"] = query
        if after is not None:
            params["after"] = after
        page: list[dict[str, Any]] = api.call("GET", "/v1/accounts", params=params)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1]["handle"]


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    with Api(settings, args, "accounts list") as api:
        found = list(_accounts(api, args.kind, args.query))
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print("no accounts match" if args.kind or args.query else "no accounts")
        return 0
    rows = [
        (
            f"@{a['handle']}",
            a["kind"],
            a.get("role") or "",
            "" if a.get("active", True) else "deactivated",
            a["display_name"],
        )
        for a in found
    ]
    header = ("HANDLE", "KIND", "ROLE", "STATE", "DISPLAY NAME")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def run_reset_token(args: argparse.Namespace, settings: Settings) -> int:
    with Api(settings, args, "accounts reset-token") as api:
        answer = api.call("POST", f"/v1/accounts/{args.handle}/token")
    print(
        f"new token for @{args.handle} (shown once; the old one no longer works):\n\n"
        f"    {answer['token']}\n"
    )
    return 0


def _set_active(active: bool) -> Callable[[argparse.Namespace, Settings], int]:
    verb = "reactivate" if active else "deactivate"

    def run(args: argparse.Namespace, settings: Settings) -> int:
        with Api(settings, args, f"accounts {verb}") as api:
            api.call("PATCH", f"/v1/accounts/{args.handle}", json={"active": active})
        print(f"@{args.handle} {verb}d")
        return 0

    return run


def run_posters(args: argparse.Namespace, settings: Settings) -> int:
    with Api(settings, args, "accounts posters") as api:
        for handle in args.add or ():
            api.call("PUT", f"/v1/accounts/{args.team}/posters/{handle}")
        for handle in args.remove or ():
            api.call("DELETE", f"/v1/accounts/{args.team}/posters/{handle}")
        found = api.call("GET", f"/v1/accounts/{args.team}/posters")
    posters = ", ".join(f"@{h}" for h in found["posters"]) or "nobody"
    print(f"@{args.team} is posted as by {posters}")
    return 0


def run_enrol(args: argparse.Namespace, settings: Settings) -> int:
    followers: Any = (
        "all_members"
        if args.all_members
        else [h.strip().lstrip("@") for h in args.followers.split(",") if h.strip()]
    )
    channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    body = {"followers": followers, "channels": channels, "mandatory": args.mandatory}
    with Api(settings, args, "accounts enrol") as api:
        done = api.call("PUT", f"/v1/accounts/{args.account}/enrolments", json=body)
    who = "every member, now and future" if args.all_members else f"{done['followers']} people"
    rule = "mandatory" if done["mandatory"] else "optional"
    print(f"enrolled {who} in @{args.account} ({rule}; {', '.join(done['channels'])})")
    return 0


# --- posts -------------------------------------------------------------------------------------
def run_post(args: argparse.Namespace, settings: Settings) -> int:
    body: dict[str, Any] = {"text": args.text, "severity": args.severity}
    if args.as_ is not None:
        body["as"] = args.as_
    if args.visibility is not None:
        body["visibility"] = args.visibility
    if args.reply_to is not None:
        body["in_reply_to"] = args.reply_to
    with Api(settings, args, "post") as api:
        post = api.call("POST", "/v1/posts", json=body)
    print(
        f"posted {post['id']} as @{post['as_account']} ({post['visibility']}, "
        f"{post['severity']}): {api.url}/app/posts/{post['id']}"
    )
    return 0


# --- parser ------------------------------------------------------------------------------------
def connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", help="the API's address (default MUSTER_PUBLIC_URL, which follows the port)"
    )
    parser.add_argument("--token", help="the token to act with (default MUSTER_ADMIN_TOKEN)")


def add_commands(commands: Any) -> None:
    """Register `muster accounts ...` and `muster post` on cli.py's subparsers."""
    accounts = commands.add_parser(
        "accounts",
        help="create, list, reset and deactivate accounts (through the running API)",
        description="Account administration through the running API, as admin "
        "(MUSTER_ADMIN_TOKEN, or --token).",
    )
    sub = accounts.add_subparsers(dest="accounts_command", required=True, metavar="COMMAND")

    create = sub.add_parser("create", help="create an account; prints its token once")
    create.add_argument("handle")
    create.add_argument("--kind", choices=("person", "team", "service"), default="person")
    create.add_argument("--role", choices=("admin", "member", "external", "auditor"))
    create.add_argument("--display-name", dest="display_name")
    create.add_argument("--email")
    create.add_argument("--phone", help="E.164, e.g. +15551230001")
    create.add_argument("--webhook-url", dest="webhook_url")
    connection_options(create)
    create.set_defaults(run=run_create, process="accounts")

    listing = sub.add_parser("list", help="every account, in handle order")
    listing.add_argument("--kind", choices=("person", "team", "service"))
    listing.add_argument("--query", help="only handles or display names containing this")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    connection_options(listing)
    listing.set_defaults(run=run_list, process="accounts")

    reset = sub.add_parser(
        "reset-token", help="a new token for a person or service; the old one stops working"
    )
    reset.add_argument("handle")
    connection_options(reset)
    reset.set_defaults(run=run_reset_token, process="accounts")

    for active, verb, what in (
        (False, "deactivate", "stop an account signing in, posting and receiving"),
        (True, "reactivate", "let a deactivated account back in"),
    ):
        command = sub.add_parser(verb, help=what)
        command.add_argument("handle")
        connection_options(command)
        command.set_defaults(run=_set_active(active), process="accounts")

    posters = sub.add_parser(
        "posters", help="who may post as a team or service: list, --add, --remove"
    )
    posters.add_argument("team")
    posters.add_argument("--add", action="append", metavar="PERSON", help="repeatable")
    posters.add_argument("--remove", action="append", metavar="PERSON", help="repeatable")
    connection_options(posters)
    posters.set_defaults(run=run_posters, process="accounts")

    enrol = sub.add_parser(
        "enrol", help="make people follow an account: --all-members or --followers a,b"
    )
    enrol.add_argument("account")
    who = enrol.add_mutually_exclusive_group(required=True)
    who.add_argument("--all-members", action="store_true", help="every member, now and future")
    who.add_argument("--followers", metavar="HANDLES", help="comma-separated handles")
    enrol.add_argument(
        "--channels", default="app", help="comma-separated: app,email,sms,webhook (default app)"
    )
    enrol.add_argument("--mandatory", action="store_true", help="no opt-out")
    connection_options(enrol)
    enrol.set_defaults(run=run_enrol, process="accounts")

    post = commands.add_parser(
        "post",
        help="publish a post through the running API",
        description="Publish a post, as yourself or as a team or service you may post as.",
    )
    post.add_argument("text")
    post.add_argument("--as", dest="as_", metavar="ACCOUNT", help="a team or service handle")
    post.add_argument("--visibility", choices=("public", "internal"))
    post.add_argument("--severity", choices=("info", "warning", "critical"), default="info")
    post.add_argument("--reply-to", dest="reply_to", metavar="POST_ID")
    connection_options(post)
    post.set_defaults(run=run_post, process="post")
