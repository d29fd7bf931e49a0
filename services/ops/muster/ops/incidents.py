"""Incidents and components from the command line, over the running API's HTTP interface:

    muster incident open --as ACCOUNT --title TITLE [--impact ...] [--status ...]
                         [--visibility public|internal] [--component NAME=STATE ...] TEXT
    muster incident update ID|@ACCOUNT --status STATUS [--impact ...] [--component ...] TEXT
    muster incident resolve ID|@ACCOUNT [--component NAME=STATE ...] TEXT
    muster components set ACCOUNT NAME STATE [--description TEXT]
    muster components list ACCOUNT

Like `muster post` (admin.py): requests to the API with the admin token (or `--token`), so
the API decides who may; the token's person must be a poster of the account to open or
update its incidents (an admin may set components of any account). `@ACCOUNT` in place of
an id names the account's one open incident (refused, with their ids, when it has several),
so a runbook can say what to type before the id exists.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from muster import incidents as vocabulary
from muster.errors import CommandFailed, CommandUsage
from muster.ops.admin import Api, connection_options
from muster.settings import Settings


def component_states(pairs: list[str] | None, command: str) -> dict[str, str]:
    """`--component "Card payments=partial_outage"` (repeatable) → {name: state}."""
    states: dict[str, str] = {}
    for pair in pairs or ():
        name, equals, state = pair.rpartition("=")
        if not equals or not name.strip():
            raise CommandUsage(f"muster {command}: --component takes NAME=STATE, not {pair!r}")
        if state not in vocabulary.COMPONENT_STATUSES:
            raise CommandUsage(
                f"muster {command}: {state!r} is not a component state: "
                + ", ".join(vocabulary.COMPONENT_STATUSES)
            )
        states[name.strip()] = state
    return states


def _summary(api: Api, incident: dict[str, Any]) -> str:
    return (
        f"incident {incident['id']} of @{incident['account']} is {incident['status']} "
        f"({incident['impact']} impact, {incident['visibility']}): "
        f"{api.url}/@{incident['account']}/incidents/{incident['id']}"
    )


def run_open(args: argparse.Namespace, settings: Settings) -> int:
    body: dict[str, Any] = {
        "as": args.as_,
        "title": args.title,
        "status": args.status,
        "impact": args.impact,
        "text": args.text,
        "visibility": args.visibility,
    }
    states = component_states(args.component, "incident open")
    if states:
        body["components"] = states
    with Api(settings, args, "incident open") as api:
        incident = api.call("POST", "/v1/incidents", json=body)
        print(f"opened {_summary(api, incident)}")
    return 0


def incident_id(api: Api, named: str, command: str) -> str:
    """An id as given, or the one open incident of `@account`."""
    if not named.startswith("@"):
        return quote(named, safe="")
    account = named[1:]
    found: list[dict[str, Any]] = api.call(
        "GET", f"/v1/accounts/{quote(account, safe='')}/incidents", params={"state": "open"}
    )
    if len(found) == 1:
        return quote(found[0]["id"], safe="")
    if not found:
        raise CommandFailed(f"muster {command}: @{account} has no open incident")
    ids = ", ".join(f"{i['id']} ({i['title']})" for i in found)
    raise CommandFailed(f"muster {command}: @{account} has several open incidents; name one: {ids}")


def _update(args: argparse.Namespace, settings: Settings, status: str, command: str) -> int:
    body: dict[str, Any] = {"status": status, "text": args.text}
    if getattr(args, "impact", None) is not None:
        body["impact"] = args.impact
    states = component_states(args.component, command)
    if states:
        body["components"] = states
    with Api(settings, args, command) as api:
        target = incident_id(api, args.incident, command)
        api.call("POST", f"/v1/incidents/{target}/updates", json=body)
        incident = api.call("GET", f"/v1/incidents/{target}")
        print(f"updated {_summary(api, incident)}")
    return 0


def run_update(args: argparse.Namespace, settings: Settings) -> int:
    return _update(args, settings, args.status, "incident update")


def run_resolve(args: argparse.Namespace, settings: Settings) -> int:
    return _update(args, settings, "resolved", "incident resolve")


def run_set_component(args: argparse.Namespace, settings: Settings) -> int:
    body: dict[str, Any] = {"status": args.state}
    if args.description is not None:
        body["description"] = args.description
    target = f"/v1/accounts/{quote(args.account, safe='')}/components/{quote(args.name, safe='')}"
    with Api(settings, args, "components set") as api:
        component = api.call("PUT", target, json=body)
    print(f"@{args.account}'s component {component['name']} is {component['status']}")
    return 0


def run_list_components(args: argparse.Namespace, settings: Settings) -> int:
    with Api(settings, args, "components list") as api:
        found = api.call("GET", f"/v1/accounts/{quote(args.account, safe='')}/components")
    if not found:
        print(f"@{args.account} has no components")
    width = max((len(c["name"]) for c in found), default=0)
    for c in found:
        print(f"{c['name'].ljust(width)}  {c['status']}")
    return 0


def _component_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--component",
        action="append",
        metavar="NAME=STATE",
        help="set a component's state with it (repeatable): "
        + "|".join(vocabulary.COMPONENT_STATUSES),
    )


def add_commands(commands: Any) -> None:
    """Register `muster incident ...` and `muster components ...` on cli.py's subparsers."""
    incident = commands.add_parser(
        "incident",
        help="open, update and resolve incidents (through the running API)",
        description="Incidents of a team or service, as a poster of it (the token's person).",
    )
    sub = incident.add_subparsers(dest="incident_command", required=True, metavar="COMMAND")

    opening = sub.add_parser("open", help="open an incident; followers and subscribers get it")
    opening.add_argument("text", help="what is happening, as the first update says it")
    opening.add_argument("--as", dest="as_", metavar="ACCOUNT", required=True)
    opening.add_argument("--title", required=True)
    opening.add_argument("--status", choices=vocabulary.STATUSES, default="investigating")
    opening.add_argument("--impact", choices=vocabulary.IMPACTS, default="minor")
    opening.add_argument("--visibility", choices=("public", "internal"), default="public")
    _component_option(opening)
    connection_options(opening)
    opening.set_defaults(run=run_open, process="incident")

    update = sub.add_parser("update", help="post an update of an incident")
    update.add_argument("incident", metavar="ID", help="an id, or @ACCOUNT: its one open incident")
    update.add_argument("text")
    update.add_argument("--status", choices=vocabulary.STATUSES, required=True)
    update.add_argument("--impact", choices=vocabulary.IMPACTS, help="default: as it is")
    _component_option(update)
    connection_options(update)
    update.set_defaults(run=run_update, process="incident")

    resolve = sub.add_parser("resolve", help="resolve an incident with a last update")
    resolve.add_argument("incident", metavar="ID", help="an id, or @ACCOUNT: its one open incident")
    resolve.add_argument("text")
    _component_option(resolve)
    connection_options(resolve)
    resolve.set_defaults(run=run_resolve, process="incident")

    components = commands.add_parser(
        "components",
        help="the components a status page lists, and their states",
        description="Components of a team or service (its posters, or an admin).",
    )
    csub = components.add_subparsers(dest="components_command", required=True, metavar="COMMAND")
    setting = csub.add_parser("set", help="create a component or set its state")
    setting.add_argument("account")
    setting.add_argument("name")
    setting.add_argument("state", choices=vocabulary.COMPONENT_STATUSES)
    setting.add_argument("--description")
    connection_options(setting)
    setting.set_defaults(run=run_set_component, process="components")

    listing = csub.add_parser("list", help="an account's components and their states")
    listing.add_argument("account")
    connection_options(listing)
    listing.set_defaults(run=run_list_components, process="components")
