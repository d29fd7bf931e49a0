"""The status page's subscription form and the pages its messages link to; no JavaScript,
no account, no cookie.

- `POST /@{handle}/subscribe` (`channel`, `address`): the same request as the JSON route
  (subscribing.request); answers a page saying where the confirmation went (with the code
  form for SMS, and the signing secret for a webhook, shown once).
- `POST /@{handle}/subscribe/code` (`phone`, `code`): an SMS code.
- `GET /subscriptions/confirm/{id}.{token}`: a page with a button; a GET changes nothing
  (mail scanners open links). `POST` to the same address confirms.
- `GET /unsubscribe/{id}.{token}`: a page with a button; `POST` to it ends the subscription
  at once: the button (`from=page`), or a mail program's RFC 8058 one-click POST (body
  `List-Unsubscribe=One-Click`), recorded as `unsubscribe_link` or `one_click`.

Bad links and codes are error pages with the JSON API's status (404 for a link that is not
valid, used or expired; 422 for a wrong code; 429 with Retry-After when limited).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from muster import keys
from muster import subscriptions as subs
from muster.api import lookups, subscribing
from muster.api.routes.subscriptions import client_of
from muster.api.schemas import Subscribe
from muster.api.state import ApiState, state
from muster.api.web import forms
from muster.api.web.html import WebRoute, render
from muster.errors import Invalid, NotFound
from muster.events import utcnow
from muster.records import Account, Subscription

router = APIRouter(route_class=WebRoute, include_in_schema=False)

_CHANNELS = ("email", "sms", "webhook")


async def account_for_page(st: ApiState, handle: str) -> Account:
    """The account whose status page the form is on; a 404 page for any other handle."""
    if not forms.is_handle(handle):
        raise NotFound("There is no status page here.", code="no_such_account")
    return await lookups.existing(st, handle)


def _split(link: str) -> tuple[str, str]:
    sid, _, token = link.partition(".")
    if not sid.isalnum() or not token or len(link) > 200:
        raise NotFound(subscribing.INVALID_LINK, code="invalid_token")
    return sid, token


def _components(names: list[str]) -> list[str]:
    """The ticked components, checked as the JSON route's schema checks them."""
    if len(names) > 20 or any(not 0 < len(n) <= 64 or "," in n or "|" in n for n in names):
        raise Invalid("Choose at most 20 of the listed components.", code="invalid_field")
    return names


@router.post("/@{handle}/subscribe")
async def subscribe(handle: str, request: Request) -> Response:
    st = state(request)
    account = await account_for_page(st, handle)
    form = await forms.read(request)
    channel = form.get("channel", "email")
    address = form.get("address").strip()
    if channel not in _CHANNELS:
        raise Invalid("Choose email, SMS or webhook.", code="invalid_field", field="channel")
    if not address:
        raise Invalid("Give an address to send the updates to.", code="missing_field")
    req = Subscribe(
        email=address if channel == "email" else None,
        phone=address if channel == "sms" else None,
        webhook_url=address if channel == "webhook" else None,
        components=_components(form.getall("components")) or None,
    )
    asked = await subscribing.request(st, account.handle, req, client_of(request), via="web")
    return render(
        request,
        "subscribe/sent.html",
        status=202,
        title="Confirm your subscription",
        account=account.handle,
        channel=channel,
        address=address,
        secret=asked.webhook_secret,
    )


@router.post("/@{handle}/subscribe/code")
async def confirm_code(handle: str, request: Request) -> Response:
    st = state(request)
    account = await account_for_page(st, handle)
    form = await forms.read(request)
    network = await subscribing.network_of(st, client_of(request))
    await subscribing.confirm_code(st, form.get("phone").strip(), form.get("code"), network)
    return render(request, "subscribe/confirmed.html", title="Subscribed", account=account.handle)


async def _pending(request: Request, link: str) -> tuple[Subscription, str, str]:
    """The subscription whose confirmation link this is, if it can still be confirmed."""
    st = state(request)
    sid, token = _split(link)
    sub = await subs.load(st.redis, sid, st.settings.partitions)
    pending = sub.pending_request(utcnow()) if sub is not None else None
    if sub is None or pending is None or not subs.secret_matches(sid, token, pending.confirm_hash):
        raise NotFound(subscribing.INVALID_LINK, code="invalid_token")
    return sub, sid, token


@router.get("/subscriptions/confirm/{link}")
async def confirm_page(link: str, request: Request) -> Response:
    sub, _, _ = await _pending(request, link)
    return render(
        request,
        "subscribe/confirm.html",
        title="Confirm your subscription",
        account=sub.account,
        address=sub.address,
        action=f"/subscriptions/confirm/{link}",
    )


@router.post("/subscriptions/confirm/{link}")
async def confirm(link: str, request: Request) -> Response:
    st = state(request)
    sid, token = _split(link)
    network = await subscribing.network_of(st, client_of(request))
    sub = await subscribing.confirm_link(st, sid, token, network)
    return render(request, "subscribe/confirmed.html", title="Subscribed", account=sub.account)


@router.get("/unsubscribe/{link}")
async def unsubscribe_page(link: str, request: Request) -> Response:
    st = state(request)
    sid, token = _split(link)
    q = subs.partition(sid, st.settings.partitions)
    held = await st.redis.get(keys.unsubscribe_token(q, subs.token_hash(token)))
    sub = await subs.load(st.redis, sid, st.settings.partitions)
    if held is None or sub is None or sub.state != "active":
        raise NotFound(subscribing.INVALID_LINK, code="invalid_token")
    return render(
        request,
        "subscribe/unsubscribe.html",
        title="Unsubscribe",
        account=sub.account,
        address=sub.address,
        action=f"/unsubscribe/{link}",
    )


@router.post("/unsubscribe/{link}")
async def unsubscribe(link: str, request: Request) -> Response:
    st = state(request)
    sid, token = _split(link)
    body = (await request.body()).decode(errors="replace")
    how = "unsubscribe_link" if "from=page" in body else "one_click"
    network = await subscribing.network_of(st, client_of(request))
    sub = await subscribing.unsubscribe(st, sid, token, how, network)
    return render(
        request,
        "subscribe/unsubscribed.html",
        title="Unsubscribed",
        account=sub.account,
        address=sub.address,
    )
