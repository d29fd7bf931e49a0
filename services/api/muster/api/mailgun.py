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
from urllib.parse import parse_qsl

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from muster import keys
from muster.api.state import ApiState
from muster.errors import BadRequest, Forbidden

MAILGUN_FRESH_S = 120
"""How old (or how far ahead) a signed timestamp may be (Mailgun's own advice: 2 minutes)."""
SIGNED_FIELDS = ("timestamp", "token", "signature")


async def form(request: Request, max_bytes: int) -> dict[str, str | bytes]:
    """The fields of a urlencoded or multipart/form-data body (the first of each name; file
    parts as bytes). 400 `bad_form` for anything else, 413 for a part over `max_bytes`."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            raise BadRequest("the form could not be read", code="bad_form") from None
        found: dict[str, str | bytes] = {}
        for name, value in pairs:
            found.setdefault(name, value)
        return found
    if kind != "multipart/form-data":
        raise BadRequest("send Mailgun's form", code="bad_form")
    try:  # python-multipart, through Starlette: streaming, with bounds on parts and fields
        parsed = await request.form(max_files=100, max_fields=1000, max_part_size=max_bytes)
    except MultiPartException as exc:
        raise BadRequest(f"the form could not be read: {exc.message}", code="bad_form") from None
    fields: dict[str, str | bytes] = {}
    for field, item in parsed.multi_items():
        if field not in fields:
            fields[field] = await item.read() if isinstance(item, UploadFile) else item
    await parsed.close()
    return fields


def _field(fields: dict[str, str | bytes], name: str) -> str:
    value = fields.get(name)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


def _refused(st: ApiState, message: str, code: str) -> Forbidden:
    """A refusal, counted (muster_ingest_refused_total{reason="mailgun_<code>"}) rather than
    logged: a flood of forged requests must not flood the log."""
    st.metrics.refused.labels(f"mailgun_{code}").inc()
    return Forbidden(message, code=code)


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
        raise _refused(st, "the Mailgun signature is missing or wrong", "bad_signature")
    moment = time.time() if now is None else now
    if not timestamp.isdigit() or abs(moment - int(timestamp)) > MAILGUN_FRESH_S:
        raise _refused(st, "the Mailgun timestamp is not fresh", "stale_request")
    seen = keys.mailgun_token(hashlib.sha256(token.encode()).hexdigest())
    if not await st.redis.set(seen, "1", nx=True, ex=keys.MAILGUN_TOKEN_TTL_S):
        raise _refused(st, "this Mailgun request was taken before", "replayed_request")
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
