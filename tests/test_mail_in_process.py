"""`muster mail-in` as a process: `muster up` runs it only when it has an address; the real
command listens, refuses what is not a reply address at RCPT, records what it takes, and
stops on SIGTERM. (What replies become: tests/delivery/test_mail_in.py.)"""

from __future__ import annotations

import signal
import smtplib
import socket
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_server import RedisServer, free_port
from test_cli import Spawned, clean_env, wait_for

from muster import events, keys
from muster.ids import lowest_id_at
from muster.replies import ReplyAddresses
from muster.settings import Settings
from muster.supervisor import Supervisor

SECRET = "mail-in-process-Q8v3Lk2xR7pN4tZ9wB6cY1mH5jD0sFgE"


@pytest.fixture
def mail_in_process(tmp_path: Path) -> Iterator[list[Spawned]]:
    started: list[Spawned] = []
    yield started
    for spawned in started:
        spawned.kill()


def test_up_runs_mail_in_only_when_it_has_an_address() -> None:
    plain = [c.name for c in Supervisor(Settings()).children]
    assert "mail-in" not in plain
    with_mail = Settings(mail_in_address="127.0.0.1:2525", mail_in_secret=SECRET)
    assert [c.name for c in Supervisor(with_mail).children] == [*plain, "mail-in"]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_the_mail_in_command_takes_only_reply_addresses_and_stops_on_sigterm(
    redis_server: RedisServer,
    sync_redis: redis.Redis,
    mail_in_process: list[Spawned],
    tmp_path: Path,
) -> None:
    port = free_port()
    env = clean_env(
        MUSTER_REDIS_URL=redis_server.url,
        MUSTER_MAIL_IN_ADDRESS=f"127.0.0.1:{port}",
        MUSTER_MAIL_IN_SECRET=SECRET,
        MUSTER_MAIL_IN_DOMAIN="reply.muster.test",
    )
    mail_in = Spawned(["mail-in"], env=env, cwd=tmp_path, name="mail-in")
    mail_in_process.append(mail_in)

    def up() -> bool:
        if mail_in.process.poll() is not None:
            raise AssertionError(f"mail-in exited:\n{mail_in.output()}")
        return listening(port)

    wait_for("mail-in to listen", up, output=mail_in.output)
    replies = ReplyAddresses(SECRET, "reply.muster.test", 30)
    now_id = str(lowest_id_at(int(time.time() * 1000)))
    good = replies.address("nobody", now_id)
    forged = ReplyAddresses("x" + SECRET, "reply.muster.test", 30).address("nobody", now_id)
    message = EmailMessage()
    message["From"] = "nobody@example.test"
    message["To"] = good
    message["Subject"] = "Re: hello"
    message["Message-ID"] = "<one@client.test>"
    message.set_content("hello")

    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        assert client.mail("nobody@example.test")[0] == 250
        assert client.rcpt(forged)[0] == 550
        assert client.rcpt(f"postmaster@{replies.domain}")[0] == 550
        assert client.rcpt(good)[0] == 250
        assert client.data(message.as_bytes(policy=SMTP))[0] == 250

    # taken, and refused on the record: there is no such person
    entries: Any = sync_redis.xrange(keys.events(0))
    (refused,) = [events.decode(fields[events.STREAM_FIELD]) for _, fields in entries]
    assert isinstance(refused, events.InboundEmailRefused)
    assert (refused.recipient, refused.target, refused.reason) == ("nobody", now_id, "no_account")

    code, took = mail_in.stop(signal.SIGTERM)
    assert code == 0, mail_in.output()
    assert took < 8.0
    assert '"mail-in stopped"' in mail_in.output()
