"""The README's ten-minute walk-through, run as a newcomer would: `muster init`, `muster up`,
then every command of the walk-through exactly as the README prints it, in a fresh directory
with nothing exported; then what each step promises is checked: the admin token from `.env`
signs in to the web app, the post is in a member's home timeline and on the public status
page, and its emails are delivered to the development mailbox; a customer subscribes through
the status page's form (the step the README gives in prose, done here as a browser would,
before the incident opens), confirms through the link in their email, and gets every update
of the incident from open to resolved, which the status page then shows as past.

The only change made to what the README says is the ports (free ones, so the test can run
beside anything): written to `.env` as someone uncommenting them would.
"""

from __future__ import annotations

import email
import email.policy
import re
import shlex
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
from redis_server import free_port
from test_cli import Spawned, run_muster, spawn, wait_for
from test_deploy import code_blocks, readme_section
from test_firsthour import _answers, bare_env

from muster import envfile

__all__ = ["spawn"]  # the fixture, used by name

WALK_THROUGH = "Ten minutes with Muster"
CUSTOMER = "customer@example.net"


def walk_through_commands() -> list[str]:
    return [line for block in code_blocks(readme_section(WALK_THROUGH)) for line in block]


def test_the_walk_through_runs_as_written() -> None:
    """The commands the test runs are the README's, and each is a muster command or `ls`."""
    commands = walk_through_commands()
    assert commands[0].startswith("muster accounts create ops")
    assert any(c.startswith("muster post") for c in commands)
    assert any(c.startswith("muster incident open") for c in commands)
    assert any(c.startswith("muster incident resolve") for c in commands)
    assert all(c.startswith(("muster ", "ls ")) for c in commands), commands


def sign_in(client: httpx.Client, token: str) -> httpx.Response:
    form = client.get("/app/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf, form.text
    return client.post(
        "/app/signin",
        data={"csrf": csrf[1], "next": "/app", "token": token},
        follow_redirects=False,
    )


def test_a_newcomer_follows_the_readme_to_a_delivered_post(
    tmp_path: Path, spawn: Callable[..., Spawned]
) -> None:
    env = bare_env()
    assert run_muster("init", env=env, cwd=tmp_path).returncode == 0
    port, metrics = free_port(), free_port()
    with (tmp_path / ".env").open("a") as extra:
        extra.write(f"MUSTER_API_PORT={port}\nMUSTER_METRICS_ADDRESS=127.0.0.1:{metrics}\n")
    admin = envfile.read(tmp_path / ".env")["MUSTER_ADMIN_TOKEN"]
    url = f"http://127.0.0.1:{port}"
    up = spawn("up", env=env, name="up")
    wait_for("the API", lambda: _answers(f"{url}/readyz", up), timeout=60, output=up.output)

    # 1. Sign in with the admin token from .env.
    with httpx.Client(base_url=url, timeout=10) as browser:
        signed_in = sign_in(browser, admin)
        assert signed_in.status_code == 303, signed_in.text
        assert browser.get("/app").status_code == 200

    # 2-4, 8. Every command of the walk-through, as printed; 7 (in prose) before the incident.
    outputs: dict[str, str] = {}
    for command in walk_through_commands():
        argv = shlex.split(command)
        if argv[0] == "ls":
            continue  # checked below, on the mailbox itself
        if command.startswith("muster incident open"):
            subscribe_through_the_status_page(url, tmp_path / "var" / "mailbox", up)
        done = run_muster(*argv[1:], env=env, cwd=tmp_path)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        outputs[command] = done.stdout
    mia = next(o for c, o in outputs.items() if "create mia" in c).split("shown once", 1)[1].split()
    mia_token = mia[-1]
    posted = next(o for c, o in outputs.items() if c.startswith("muster post"))
    post_id = posted.split()[1]

    # 4. In a member's home timeline; 5. on the public status page.
    def in_home() -> bool:
        home = httpx.get(
            f"{url}/v1/timelines/home", headers={"Authorization": f"Bearer {mia_token}"}, timeout=5
        )
        return post_id in [p["id"] for p in home.json()]

    wait_for("the post in mia's home timeline", in_home, output=up.output)
    status_page = httpx.get(f"{url}/@ops", timeout=5)
    assert status_page.status_code == 200
    assert "Database failover at 14:00 UTC" in status_page.text

    # 6. Mia's and Sam's emails, logged to the development mailbox.
    def logged() -> bool:
        report = httpx.get(
            f"{url}/v1/posts/{post_id}/deliveries",
            headers={"Authorization": f"Bearer {admin}"},
            timeout=5,
        ).json()
        states = {(d["handle"], d["channel"], d["status"]) for d in report["recipients"]}
        return {("mia", "email", "logged"), ("sam", "email", "logged")} <= states

    wait_for("both emails logged", logged, output=up.output)
    mailbox = tmp_path / "var" / "mailbox"
    failover = [m for m in mails(mailbox) if "Database failover" in text_of(m)]
    assert sorted(m["To"] for m in failover) == ["mia@example.org", "sam@example.org"]

    # 8. The incident, from open to resolved: the customer got each update, so did mia and sam.
    updates = ("Some card payments fail", "An expired certificate", "The certificate is renewed")

    def told(address: str) -> bool:
        texts = [text_of(m) for m in mails(mailbox) if m["To"] == address]
        return all(any(u in t for t in texts) for u in updates)

    for address in (CUSTOMER, "mia@example.org", "sam@example.org"):
        wait_for(f"the incident's updates emailed to {address}", partial(told, address),
                 output=up.output)  # fmt: skip
    to_customer = [m for m in mails(mailbox) if m["To"] == CUSTOMER]
    assert len(to_customer) == 4  # the confirmation and three updates, nothing else
    assert all("Database failover" not in text_of(m) for m in to_customer)
    assert all(m["List-Unsubscribe"] for m in to_customer[1:])
    page = httpx.get(f"{url}/@ops", timeout=5).text
    assert "Card payments failing" in page
    assert "All systems operational" in page
    started = time.monotonic()
    code, _ = up.stop(signal.SIGINT)
    assert code == 0, up.output()[-4000:]
    assert time.monotonic() - started < 30


def mails(mailbox: Path) -> list[email.message.EmailMessage]:
    """The development mailbox's emails, oldest first (file names sort by time)."""
    found = []
    for path in sorted(mailbox.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        found.append(message)
    return found


def text_of(message: email.message.EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None, message
    content: str = body.get_content()
    return content


def subscribe_through_the_status_page(url: str, mailbox: Path, up: Spawned) -> None:
    """Step 7 as a customer does it: the form on /@ops, then the link in the email, then the
    button on the page it opens."""
    with httpx.Client(base_url=url, timeout=10) as customer:
        page = customer.get("/@ops")
        assert 'action="/@ops/subscribe"' in page.text
        sent = customer.post("/@ops/subscribe", data={"channel": "email", "address": CUSTOMER})
        assert sent.status_code == 202, sent.text

        def confirmation() -> str | None:
            for message in mails(mailbox):
                if message["To"] == CUSTOMER:
                    link = re.search(r"https?://\S+/subscriptions/confirm/\S+", text_of(message))
                    return link[0] if link else None
            return None

        wait_for("the confirmation email", lambda: confirmation() is not None, output=up.output)
        link = confirmation()
        assert link is not None
        opened = customer.get(link)
        assert opened.status_code == 200, opened.text
        action = re.search(r'<form method="post" action="([^"]+)"', opened.text)
        assert action, opened.text
        confirmed = customer.post(action[1])
        assert confirmed.status_code == 200, confirmed.text
