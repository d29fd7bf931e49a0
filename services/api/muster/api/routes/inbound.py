"""Inbound webhooks: POST /v1/inbound/sms, texts sent to Muster's number, from the SMS
provider (muster.api.inbound); POST /v1/inbound/email/mailgun/mime, replies to Muster's
email from a Mailgun route (muster.api.mailgun, muster.api.inboundmail)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.responses import Response

from muster.api import bodies, inbound, inboundmail, mailgun
from muster.api.openapi import responds
from muster.api.schemas import InboundEmailOut
from muster.api.state import ApiState, state
from muster.errors import BadRequest, NotFound
from muster.replies import ReplyAddresses

router = APIRouter(tags=["inbound"])


@router.post(
    "/v1/inbound/sms",
    summary="A text received (Twilio's webhook format, X-Twilio-Signature checked); answers TwiML",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "From": {"type": "string"},
                            "To": {"type": "string"},
                            "Body": {"type": "string"},
                        },
                        "additionalProperties": {"type": "string"},
                    }
                }
            },
        }
    },
    responses=responds(
        200,
        {
            "type": "string",
            "description": "TwiML: <Response>, with a <Message> when there is a reply",
        },
        errors=(400, 403, 413),
        description="TwiML",
        media_type="application/xml",
    ),
)
async def inbound_sms(request: Request) -> Response:
    st = state(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise BadRequest("send the provider's form", code="bad_form")
    try:  # the values exactly as sent: the signature covers them
        pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the form could not be read", code="bad_form") from None
    params = dict(pairs)
    url = st.settings.public_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    inbound.verify(st, url, params, request.headers.get("x-twilio-signature"))
    text = inbound.Inbound(
        sender=params.get("From", ""),
        to=params.get("To", ""),
        body=params.get("Body", ""),
        message_sid=params.get("MessageSid", ""),
    )
    return Response(await inbound.handle(st, text), media_type="application/xml")


MAILGUN_PATH = "/v1/inbound/email/mailgun/mime"
"""Where a Mailgun route's forward() posts (raw MIME: Mailgun wants the URL to end in mime)."""


@router.post(
    MAILGUN_PATH,
    summary="An email for a reply address, from a Mailgun route (signature, freshness and "
    "token checked); it becomes its sender's reply, DM or roll-call answer",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                kind: {
                    "schema": {
                        "type": "object",
                        "properties": {
                            name: {"type": "string"}
                            for name in (
                                "recipient",
                                "sender",
                                "body-mime",
                                "timestamp",
                                "token",
                                "signature",
                            )
                        },
                        "additionalProperties": {"type": "string"},
                    }
                }
                for kind in ("application/x-www-form-urlencoded", "multipart/form-data")
            },
        }
    },
    responses=responds(
        200, InboundEmailOut, errors=(400, 403, 404, 406, 413), description="What it became"
    ),
)
async def inbound_mailgun(request: Request) -> Response:
    st = state(request)
    replies = inboundmail.reply_addresses(st)
    if replies is None:
        raise NotFound("inbound email is off (MUSTER_MAIL_IN_SECRET)", code="not_configured")
    fields = await mailgun.form(request, st.settings.mail_in_max_bytes)
    seen = await mailgun.verify(st, fields)
    try:
        response = await _take_mail(st, replies, fields)
    except BaseException:
        await st.redis.delete(seen)  # not taken: Mailgun's retry must get through
        raise
    if response.status_code >= 500:
        await st.redis.delete(seen)
    return response


async def _take_mail(
    st: ApiState, replies: ReplyAddresses, fields: dict[str, str | bytes]
) -> Response:
    raw, recipients, sender = mailgun.message(fields)
    if len(raw) > st.settings.mail_in_max_bytes:
        message = "the message is over MUSTER_MAIL_IN_MAX_BYTES"
        return bodies.error(413, "payload_too_large", message)
    outcomes: list[inboundmail.Outcome] = []
    for recipient in (r.strip() for r in recipients.split(",") if r.strip()):
        envelope = inboundmail.Envelope(recipient=recipient, sender=sender, via="mailgun")
        try:
            outcomes.append(await inboundmail.receive(st, replies, raw, envelope))
        except inboundmail.Busy:
            return bodies.error(503, "busy", "this message is being handled", retry_after=60)
    taken = [o for o in outcomes if o.kind != "not_ours"]
    if not taken:  # 406: Mailgun does not retry
        return bodies.error(406, "not_a_reply_address", "no reply address of this Muster")
    first = taken[0]
    return bodies.json(InboundEmailOut(outcome=first.kind, reason=first.reason, id=first.id))
