"""SSRF: a webhook never reaches into the organisation's network unless the operator allows it.

With MUSTER_WEBHOOK_ALLOW_PRIVATE off, the api refuses a private, loopback or link-local
webhook URL with 422, and nothing is ever sent there. What the api cannot see — a name that
resolves to such an address, or a URL stored while the setting was on — the delivery worker
refuses at send time, before connecting, and dead-letters with the reason. A receiver on
127.0.0.1 stands for the inside of the network: it must receive nothing.
"""

from __future__ import annotations

import socket

import msgspec
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from delivery.conftest import OpenStack, Peers, Stack, hash_field
from muster import keys
from muster.settings import Settings

pytestmark = pytest.mark.anyio

INSIDE_NAME = "hooks.inside.test"


class FixedResolver(AbstractResolver):
    """A DNS answer for one name (as an attacker-controlled zone would give), nothing else."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(f"no such name {host}")
        return [
            ResolveResult(
                hostname=host,
                host=self.answers[host],
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


def private_urls(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}/hooks/x",
        f"http://localhost:{port}/hooks/x",
        f"http://[::1]:{port}/hooks/x",
        f"http://[::ffff:127.0.0.1]:{port}/hooks/x",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://172.16.5.4/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0/hook",
        "http://printer.local/hook",
    ]


async def test_private_webhook_urls_are_refused_with_422_and_never_contacted(
    delivery_settings: Settings, open_stack: OpenStack, peers: Peers
) -> None:
    settings = msgspec.structs.replace(delivery_settings, webhook_allow_private=False)
    async with open_stack(settings) as s:
        author = (await s.account("pat"))["token"]
        mia = await s.account("mia")
        await s.follow(mia["token"], "pat", "webhook")
        for url in private_urls(peers.webhooks.port):
            refused = await s.call("PATCH", "/v1/me", token=mia["token"], json={"webhook_url": url})
            assert refused.status_code == 422, (url, refused.text)
            assert refused.json()["error"]["code"] == "private_webhook_target"
            assert refused.json()["error"]["field"] == "webhook_url"
            created = await s.call(
                "POST",
                "/v1/accounts",
                token=delivery_settings.admin_token,
                json={"handle": "tom", "kind": "person", "role": "member", "webhook_url": url},
            )
            assert created.status_code == 422, (url, created.text)
        me = await s.ok("GET", "/v1/me", token=mia["token"])
        assert me["webhook_url"] is None
        await s.post(author, "nothing to send anywhere")
        await s.delivered()
        assert await s.requests("webhook") == []
        assert peers.webhooks.arrived == []


@pytest.mark.parametrize("allow_private", [False, True])
async def test_a_name_resolving_to_loopback_is_refused_at_send_time(
    delivery_settings: Settings, open_stack: OpenStack, peers: Peers, allow_private: bool
) -> None:
    """The same name and answer; only MUSTER_WEBHOOK_ALLOW_PRIVATE differs (True: the control,
    proving the refusal, not the resolver, is what keeps the receiver silent)."""
    api_settings = msgspec.structs.replace(delivery_settings, webhook_allow_private=False)
    worker_settings = msgspec.structs.replace(api_settings, webhook_allow_private=allow_private)
    resolver = FixedResolver({INSIDE_NAME: "127.0.0.1"})
    async with open_stack(api_settings, resolver=resolver, worker_settings=worker_settings) as s:
        author = (await s.account("pat"))["token"]
        url = f"http://{INSIDE_NAME}:{peers.webhooks.port}/hooks/mia"
        mia = await s.account("mia", webhook_url=url)  # a public-looking name: the api accepts it
        await s.follow(mia["token"], "pat", "webhook")
        post = (await s.post(author, "to a name that points inside"))["id"]
        await s.delivered()
        status = await hash_field(s.redis, keys.delivery_status(0, post), "mia:webhook")
        assert resolver.asked == [INSIDE_NAME]
        if allow_private:
            assert status == "sent|1|"
            assert peers.webhooks.ids() == {f"{post}.mia.webhook": 1}
            assert not await s.dead()
        else:
            assert peers.webhooks.arrived == []
            assert status.startswith("failed|1|")
            assert "127.0.0.1" in status
            assert "MUSTER_WEBHOOK_ALLOW_PRIVATE" in status
            (dead,) = await s.dead()
            assert "resolves to 127.0.0.1" in dead["error"]


async def test_a_private_url_stored_earlier_is_refused_before_connecting(
    delivery_settings: Settings, open_stack: OpenStack, peers: Peers
) -> None:
    """Set while the api allowed private targets; the worker, with the setting off, refuses."""
    worker_settings = msgspec.structs.replace(delivery_settings, webhook_allow_private=False)
    resolver = FixedResolver({})
    async with open_stack(
        delivery_settings, resolver=resolver, worker_settings=worker_settings
    ) as s:
        author = (await s.account("pat"))["token"]
        for name, url in (
            ("mia", peers.hook("mia")),  # http://127.0.0.1:port/...
            ("tom", f"http://localhost:{peers.webhooks.port}/hooks/tom"),
        ):
            reader = await s.account(name, webhook_url=url)
            await s.follow(reader["token"], "pat", "webhook")
        await s.post(author, "stays outside")
        await s.delivered()
        assert peers.webhooks.arrived == []
        assert resolver.asked == []  # refused before any lookup or connection
        dead = await s.dead()
        assert len(dead) == 2
        assert all("private, loopback or link-local" in d["error"] for d in dead)


async def test_happy_path_reaches_loopback_when_allowed(stack: Stack, peers: Peers) -> None:
    """The setting on (as in the other delivery tests): loopback targets are delivered to."""
    s = stack
    author = (await s.account("pat"))["token"]
    mia = await s.account("mia", webhook_url=peers.hook("mia"))
    await s.follow(mia["token"], "pat", "webhook")
    post = (await s.post(author, "inside, on purpose"))["id"]
    await s.delivered()
    assert peers.webhooks.ids() == {f"{post}.mia.webhook": 1}
