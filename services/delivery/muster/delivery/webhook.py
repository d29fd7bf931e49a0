"""Signed webhooks (Standard Webhooks), over one keep-alive aiohttp pool, with the SSRF guard.

Each delivery is `POST <webhook_url>` with the JSON `{"type": "post.published" |
"dm.received", "data": <post or message as the api returns it>}` and the headers
`webhook-id` (the delivery id: the same on every retry), `webhook-timestamp` and
`webhook-signature` (`v1,<base64 HMAC-SHA256 of id.timestamp.body>`, signed by the
`standardwebhooks` library with the recipient's `whsec_` secret).

Answers (docs/api.md): 2xx delivered; 410 Gone disables that recipient's webhook (until they set
a new URL) and fails permanently; any other answer — 3xx included, since redirects are not
followed (one could lead inside the network) — and timeouts and connection failures are
retried on the schedule, then dead-lettered. Refused targets (SSRF) fail permanently.

SSRF: unless MUSTER_WEBHOOK_ALLOW_PRIVATE, a URL whose host is an IP literal or a local
name in a private, loopback, link-local or reserved range is refused before any connection,
and names are resolved through `GuardedResolver`, which refuses them when any address they
resolve to is such — the check is on the very addresses the connection then uses, so a name
that changes its answer between a check and the connect gains nothing.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiohttp
import msgspec
from aiohttp.abc import AbstractResolver, ResolveResult
from standardwebhooks.webhooks import Webhook

from muster.addresses import is_private_address, is_private_host
from muster.delivery.content import Content, Recipient, Rendered
from muster.errors import PermanentDeliveryError, TransientDeliveryError
from muster.settings import Settings

USER_AGENT = "Muster-Webhooks/1"
RESPONSE_READ_LIMIT = 64 * 1024


class PrivateTargetRefused(OSError):
    """A webhook name resolved into a refused range (raised inside aiohttp's connect)."""


class WebhookGone(PermanentDeliveryError):
    """The receiver answered 410 Gone: its webhook is disabled until the URL changes."""


class GuardedResolver(AbstractResolver):
    """Resolves with `base` and refuses names that reach a private address (SSRF)."""

    def __init__(self, base: AbstractResolver | None = None, *, allow_private: bool) -> None:
        self.base = base if base is not None else aiohttp.ThreadedResolver()
        self.allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.base.resolve(host, port, family)
        if not self.allow_private:
            refused = sorted({r["host"] for r in found if is_private_address(r["host"])})
            if refused:
                raise PrivateTargetRefused(
                    f"{host} resolves to {', '.join(refused)}: a private, loopback or "
                    "link-local address (MUSTER_WEBHOOK_ALLOW_PRIVATE is off)"
                )
        return found

    async def close(self) -> None:
        await self.base.close()


def event_type(content: Content) -> str:
    return "dm.received" if content.kind == "dm" else "post.published"


def body_of(content: Content) -> tuple[bytes, str]:
    """The webhook body, as bytes to send and as the text the signature covers."""
    body = b'{"type":"' + event_type(content).encode() + b'","data":' + content.raw + b"}"
    return body, body.decode()


def subscriber_body(content: Content, unsubscribe_url: str) -> tuple[bytes, str]:
    """A subscriber's webhook body: the post's, plus the `unsubscribe_url` that ends it."""
    tail = b',"unsubscribe_url":' + msgspec.json.encode(unsubscribe_url) + b"}"
    body = b'{"type":"post.published","data":' + content.raw + tail
    return body, body.decode()


def rollcall_body(content: Content, respond_url: str) -> tuple[bytes, str]:
    """A roll-call post's webhook body: the post's, plus the recipient's own `respond_url`,
    where a POST `{"option": key}` signed like this delivery (with the recipient's secret)
    answers for it."""
    tail = b',"respond_url":' + msgspec.json.encode(respond_url) + b"}"
    body = b'{"type":"post.published","data":' + content.raw + tail
    return body, body.decode()


def confirmation_body(subscription: str, account: str, components: tuple[str, ...]) -> bytes:
    """The handshake: answering it 2xx confirms the subscription."""
    return msgspec.json.encode(
        {
            "type": "subscription.confirm",
            "data": {"subscription": subscription, "account": account, "components": components},
        }
    )


def check_target(url: str, allow_private: bool) -> None:
    """Refuse what no resolver sees: IP literals and local names (PermanentDeliveryError)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise PermanentDeliveryError(f"webhook_url {url!r} is not a valid URL") from None
    if parts.scheme not in {"http", "https"} or not host:
        raise PermanentDeliveryError("webhook_url must be an http(s) URL with a host")
    if not allow_private and is_private_host(host):
        raise PermanentDeliveryError(
            f"webhook target {host} is a private, loopback or link-local address "
            "(MUSTER_WEBHOOK_ALLOW_PRIVATE is off)"
        )


def classify(status: int, reason: str) -> None:
    """Raise the delivery error a non-2xx answer means; return for 2xx.

    docs/api.md's contract: 2xx delivered, 410 disables the webhook, any other answer is retried
    with backoff (a receiver answering 404 or 400 during a bad deploy gets its messages once
    it is fixed, within the retry schedule; after it, the dead-letter stream keeps them).
    """
    if 200 <= status < 300:
        return
    what = f"webhook answered {status} {reason}".strip()
    if status == 410:
        raise WebhookGone(f"{what}: webhook disabled until its URL changes")
    if 300 <= status < 400:
        raise TransientDeliveryError(f"{what} (redirects are not followed)")
    raise TransientDeliveryError(what)


_signers: Rendered[str, Webhook] = Rendered(size=4096)


def signature(secret: str, delivery_id: str, now: datetime, text: str) -> str:
    """`v1,<base64 HMAC-SHA256>` of `id.timestamp.body`, by the standardwebhooks library
    (one signer per secret, kept: building one decodes the secret)."""
    return _signers.get(secret, lambda: Webhook(secret)).sign(delivery_id, now, text)


class WebhookSender:
    def __init__(self, settings: Settings, *, resolver: AbstractResolver | None = None) -> None:
        self.settings = settings
        self.allow_private = settings.webhook_allow_private
        self.timeout = aiohttp.ClientTimeout(total=settings.webhook_timeout_s)
        self._base_resolver = resolver
        self._resolver: GuardedResolver | None = None
        self._session: aiohttp.ClientSession | None = None
        self._bodies: Rendered[str, tuple[bytes, str]] = Rendered()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._resolver = GuardedResolver(self._base_resolver, allow_private=self.allow_private)
            connector = aiohttp.TCPConnector(
                resolver=self._resolver,
                limit=self.settings.delivery_concurrency,
                limit_per_host=self.settings.http_host_connections,
                ttl_dns_cache=30,
                keepalive_timeout=30,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                headers={"User-Agent": USER_AGENT},
                skip_auto_headers=("Accept-Encoding",),
            )
        return self._session

    async def send(
        self,
        delivery_id: str,
        content: Content,
        recipient: Recipient,
        body_for: tuple[bytes, str] | None = None,
        secret_for: str | None = None,
    ) -> None:
        """`body_for`, `secret_for`: a subscriber's own body (it carries its links) and,
        for the confirmation handshake, the requested secret (none is in force yet)."""
        url, secret = recipient.webhook_url, secret_for or recipient.webhook_secret
        if not url or not secret:
            raise PermanentDeliveryError("no webhook_url")
        check_target(url, self.allow_private)
        if body_for is not None:
            body, text = body_for
        else:
            body, text = self._bodies.get(content.id, lambda: body_of(content))
        now = datetime.now(UTC)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": delivery_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature(secret, delivery_id, now, text),
        }
        try:
            async with self._client().post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.content.read(RESPONSE_READ_LIMIT)
                status, reason = response.status, response.reason or ""
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, PrivateTargetRefused):
                raise PermanentDeliveryError(str(exc.os_error)) from None
            raise TransientDeliveryError(f"cannot connect to the webhook: {exc}") from None
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
            raise PermanentDeliveryError(f"invalid webhook_url: {exc}") from None
        except TimeoutError:
            raise TransientDeliveryError(
                f"webhook did not answer within {self.settings.webhook_timeout_s}s"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TransientDeliveryError(
                f"webhook request failed: {type(exc).__name__}: {exc}"
            ) from None
        classify(status, reason)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._resolver is not None:
            await self._resolver.close()  # passed in, so the connector does not own it
            self._resolver = None
