"""POST /v1/inbound/sms: texts sent to Muster's number, from the SMS provider (muster.api.inbound)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.responses import Response

from muster.api import inbound
from muster.api.openapi import responds
from muster.api.state import state
from muster.errors import BadRequest

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
