"""Mailgun's inbound routes: a message Mailgun received for a reply address, POSTed to
POST /v1/inbound/email/mailgun/mime by a route's `forward()` action (raw MIME: the URL ends
in `mime`, so Mailgun sends the message as it came, in `body-mime`).

Mailgun signs each POST in the body itself: `signature` is the hex HMAC-SHA256, under the
domain's HTTP webhook signing key (MUSTER_MAILGUN_SIGNING_KEY), of `timestamp` followed by
`token` (a random 50 characters). A request is taken only if the signature is right
(constant-time compare), the timestamp is within MAILGUN_FRESH_S of now, and the token was
never seen before (keys.mailgun_token, claimed with SET NX only after the first two checks,
so a forged request writes nothing). Mailgun stops retrying on 200 and on 406 (used for a
message to no reply address of ours); any other answer is retried for 8 hours.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from email import policy
from email.message import Message
from email.parser import BytesParser
from urllib.parse import parse_qsl

from muster import keys
from muster.api.state import ApiState
from muster.errors import BadRequest, Forbidden

MAILGUN_FRESH_S = 120
"""How old (or how far ahead) a signed timestamp may be (Mailgun's own advice: 2 minutes)."""
SIGNED_FIELDS = ("timestamp", "token", "signature")


def form(content_type: str, body: bytes) -> dict[str, str | bytes]:
    """The fields of a urlencoded or multipart/form-data body (the first of each name);
    multipart values that are files stay bytes. 400 `bad_form` for anything else."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            raise BadRequest("the form could not be read", code="bad_form") from None
        found: dict[str, str | bytes] = {}
        for name, value in pairs:
            found.setdefault(name, value)
        return found
    if kind == "multipart/form-data":
        # multipart/form-data is MIME (RFC 7578): the email package reads it as a message.
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
        parsed: Message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
        if not parsed.is_multipart():
            raise BadRequest("the form could not be read", code="bad_form")
        fields: dict[str, str | bytes] = {}
        for part in parsed.iter_parts():  # type: ignore[attr-defined]
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str) or name in fields:
                continue
            payload = part.get_payload(decode=True) or b""
            if part.get_filename() is None:
                charset = part.get_content_charset() or "utf-8"
                try:
                    fields[name] = payload.decode(charset)
                except (LookupError, UnicodeDecodeError):
                    raise BadRequest("the form could not be read", code="bad_form") from None
            else:
                fields[name] = payload
        return fields
    raise BadRequest("send Mailgun's form", code="bad_form")


def _field(fields: dict[str, str | bytes], name: str) -> str:
    value = fields.get(name)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


async def verify(st: ApiState, fields: dict[str, str | bytes], *, now: float | None = None) -> str:
    """Refuse (403) a request Mailgun did not sign, or signed too long ago, or one already
    taken; only a taken request leaves a trace (its token's key, returned so that a request
    that could not be handled can let its retry through)."""
    key = st.settings.mailgun_signing_key
    if not key:
        raise Forbidden(
            "inbound email from Mailgun needs MUSTER_MAILGUN_SIGNING_KEY", code="bad_signature"
        )
    timestamp, token, signature = (_field(fields, name) for name in SIGNED_FIELDS)
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not token or not hmac.compare_digest(expected.encode(), signature.lower().encode()):
        raise Forbidden("the Mailgun signature is missing or wrong", code="bad_signature")
    moment = time.time() if now is None else now
    if not timestamp.isdigit() or abs(moment - int(timestamp)) > MAILGUN_FRESH_S:
        raise Forbidden("the Mailgun timestamp is not fresh", code="stale_request")
    seen = keys.mailgun_token(hashlib.sha256(token.encode()).hexdigest())
    if not await st.redis.set(seen, "1", nx=True, ex=keys.MAILGUN_TOKEN_TTL_S):
        raise Forbidden("this Mailgun request was taken before", code="replayed_request")
    return seen


def message(fields: dict[str, str | bytes]) -> tuple[bytes, str, str | None]:
    """The raw message, the reply address it was for and the envelope sender (`sender`:
    Mailgun's MAIL FROM; None when it did not say)."""
    raw = fields.get("body-mime")
    if raw is None:
        raise BadRequest(
            "body-mime is missing: point the route at a URL ending in mime", code="bad_form"
        )
    data = raw if isinstance(raw, bytes) else raw.encode()
    sender = fields.get("sender")
    return data, _field(fields, "recipient"), None if sender is None else _field(fields, "sender")
