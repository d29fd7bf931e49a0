"""SMS through a provider interface: `twilio` (Twilio's REST API or a compatible one) and `log`.

The text is one SMS long (SMS_CHARS code points): severity, the account and the start of
the post (or "DM from ..."), cut with an ellipsis so the link back to Muster always fits.

- `twilio` posts `To`, `From`, `Body` as a form to
  {MUSTER_TWILIO_BASE_URL}/2010-04-01/Accounts/{MUSTER_TWILIO_ACCOUNT_SID}/Messages.json
  with basic auth, over one keep-alive pool. 2xx sent; 408, 429 and 5xx transient; other
  4xx permanent (a bad number stays bad). The delivery id goes along as `Idempotency-Key`
  for providers that honour one (Twilio ignores it), so a resend after a crash is
  recognisable.
- `log` writes the recipient, length, delivery id and text to the log, for development, and
  its delivery is recorded as `logged` (not sent), so a delivery report shows what would
  have gone out; the text of a DM or an internal post is never written (the line says which
  it was; docs/architecture.md, guarantee 7).
"""

from __future__ import annotations

import base64
from typing import Protocol

import aiohttp
import structlog

from muster.delivery.content import Answering, Content, link, status_link
from muster.errors import PermanentDeliveryError, TransientDeliveryError
from muster.settings import Settings

log = structlog.get_logger("muster.delivery.sms")

SMS_CHARS = 160
ELLIPSIS = "…"


def sms_text(content: Content, public_url: str) -> str:
    """One SMS: who and what, cut to fit, then the link."""
    url = link(public_url, content)
    if content.message is not None:
        lead = f"DM from @{content.message.from_}: {content.message.text}"
    else:
        assert content.post is not None
        post = content.post
        severity = "" if post.severity == "info" else f"[{post.severity.upper()}] "
        lead = f"{severity}@{post.as_account}: {post.text}"
    lead = " ".join(lead.split())
    room = max(SMS_CHARS - len(url) - 1, 20)
    if len(lead) > room:
        lead = lead[: room - len(ELLIPSIS)].rstrip() + ELLIPSIS
    return f"{lead} {url}"


ROLLCALL_SMS_CHARS = 306
"""A roll-call's SMS may take two segments: the reply codes and the link must both fit."""
LABEL_CHARS = 24


def rollcall_sms_text(content: Content, answering: Answering) -> str:
    """A roll-call post for one recipient: the question, cut to fit, then its reply codes
    (its own, distinct from those of the phone's other open roll-calls) and its answer link:
    "[HIGH] @ops: Fire alarm, are you safe? Reply 1 I'm safe, 2 I need help, or answer at
    https://…/r/…"."""
    post = content.post
    assert post is not None
    assert post.rollcall is not None
    codes = ", ".join(
        f"{answering.first_code + i} {_label(option.label)}"
        for i, option in enumerate(post.rollcall.options)
    )
    tail = f" Reply {codes}, or answer at {answering.url}"
    severity = "" if post.severity == "info" else f"[{post.severity.upper()}] "
    lead = " ".join(f"{severity}@{post.as_account}: {post.text}".split())
    room = max(ROLLCALL_SMS_CHARS - len(tail), 20)
    if len(lead) > room:
        lead = lead[: room - len(ELLIPSIS)].rstrip() + ELLIPSIS
    return lead + tail


def _label(label: str) -> str:
    label = " ".join(label.split())
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + ELLIPSIS


STOP_HINT = " Reply STOP to stop."


def subscriber_sms_text(content: Content, public_url: str) -> str:
    """A public post for a subscriber: as sms_text, linked to the status page, saying how
    to stop (a STOP reply reaches POST /v1/inbound/sms)."""
    assert content.post is not None
    post = content.post
    url = status_link(public_url, content)
    severity = "" if post.severity == "info" else f"[{post.severity.upper()}] "
    lead = " ".join(f"{severity}@{post.as_account}: {post.text}".split())
    room = max(SMS_CHARS - len(url) - 1 - len(STOP_HINT), 20)
    if len(lead) > room:
        lead = lead[: room - len(ELLIPSIS)].rstrip() + ELLIPSIS
    return f"{lead} {url}{STOP_HINT}"


def confirmation_sms_text(account: str, code: str) -> str:
    """The double opt-in by SMS: a code for POST /v1/subscriptions/confirm."""
    return (
        f"Your code to confirm @{account}'s status updates: {code}. It works for 24 hours."
        f"{STOP_HINT}"
    )


class SmsProvider(Protocol):
    async def send(self, delivery_id: str, to: str, body: str, *, private: bool) -> str | None:
        """None when sent; a note when not (its delivery is `logged`); or a DeliveryError."""
        ...

    async def aclose(self) -> None: ...


class LogProvider:
    """Development only: SMS go to the log, never with the text of something private."""

    async def send(self, delivery_id: str, to: str, body: str, *, private: bool) -> str:
        if private:  # a DM or an internal post: that it happened, never what it says
            log.info(
                "sms not sent (log provider): private, text withheld",
                delivery=delivery_id,
                to=to,
                chars=len(body),
            )
        else:
            log.info(
                "sms not sent (log provider)",
                delivery=delivery_id,
                to=to,
                chars=len(body),
                text=body,
            )
        return "not sent (MUSTER_SMS_PROVIDER=log): written to the delivery worker's log"

    async def aclose(self) -> None:
        return None


class TwilioProvider:
    def __init__(self, settings: Settings) -> None:
        if not (
            settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from
        ):
            raise ValueError(
                "the twilio provider needs MUSTER_TWILIO_ACCOUNT_SID, _AUTH_TOKEN, _FROM"
            )
        base = settings.twilio_base_url.rstrip("/")
        self.url = f"{base}/2010-04-01/Accounts/{settings.twilio_account_sid}/Messages.json"
        self.sender = settings.twilio_from
        login = f"{settings.twilio_account_sid}:{settings.twilio_auth_token}"
        self.authorization = "Basic " + base64.b64encode(login.encode()).decode()
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.settings.delivery_concurrency,
                limit_per_host=self.settings.http_host_connections,
                keepalive_timeout=30,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.settings.webhook_timeout_s),
                headers={"User-Agent": "Muster-SMS/1", "Authorization": self.authorization},
                skip_auto_headers=("Accept-Encoding",),
            )
        return self._session

    async def send(self, delivery_id: str, to: str, body: str, *, private: bool) -> None:
        form = {"To": to, "From": self.sender, "Body": body}
        try:
            async with self._client().post(
                self.url, data=form, headers={"Idempotency-Key": delivery_id}
            ) as response:
                answer = await response.content.read(64 * 1024)
                status = response.status
        except TimeoutError:
            raise TransientDeliveryError("SMS provider did not answer in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TransientDeliveryError(
                f"SMS provider unreachable: {type(exc).__name__}: {exc}"
            ) from None
        if 200 <= status < 300:
            return
        detail = answer[:300].decode(errors="replace")
        what = f"SMS provider answered {status}: {detail}"
        if status in {408, 429} or status >= 500:
            raise TransientDeliveryError(what)
        raise PermanentDeliveryError(what)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def provider_for(settings: Settings) -> SmsProvider:
    if settings.sms_provider == "twilio":
        return TwilioProvider(settings)
    return LogProvider()
