"""Request bodies in, JSON responses out, with msgspec, and errors in docs/api.md's one shape.

A body that is not JSON or not an object is 400; a JSON object the schema refuses is 422
with the field named. Responses are encoded once, straight to bytes.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from fastapi import Request
from starlette.responses import Response

from muster.api.schemas import ErrorBody, ErrorOut
from muster.errors import ApiError, BadRequest, Invalid, TooManyRequests

T = TypeVar("T")

_AT = re.compile(r"at `\$\.?([^`]*)`")
_NAMED = re.compile(r"field `([^`]+)`")
_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def _field_of(message: str) -> str | None:
    """`$.followers[0]` → `followers[0]`; unknown/missing field errors name it directly."""
    named = _NAMED.search(message)
    at = _AT.search(message)
    parts = [p for p in ((at.group(1) if at else ""), (named.group(1) if named else "")) if p]
    return ".".join(parts) or None


def _is_json(raw: bytes) -> bool:
    """msgspec raises UnicodeDecodeError (not DecodeError) on invalid UTF-8 inside a string."""
    try:
        msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False
    return True


def decode(raw: bytes, tp: type[T]) -> T:
    if raw.lstrip()[:1] != b"{":
        if not _is_json(raw):
            raise BadRequest("body is not valid JSON", code="invalid_json")
        raise BadRequest("body must be a JSON object", code="not_an_object")
    decoder = _decoders.get(tp)
    if decoder is None:
        decoder = _decoders[tp] = msgspec.json.Decoder(tp)
    try:
        value: T = decoder.decode(raw)
    except msgspec.ValidationError as exc:
        # msgspec validates while it parses, so a schema error can come before a syntax error
        # further on: a body that is not JSON at all is 400, whatever its first field.
        if not _is_json(raw):
            raise BadRequest("body is not valid JSON", code="invalid_json") from None
        message = str(exc)
        code = "unknown_field" if "unknown field" in message else "invalid_field"
        if "missing required field" in message:
            code = "missing_field"
        raise Invalid(message, code=code, field=_field_of(message)) from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise BadRequest("body is not valid JSON", code="invalid_json") from None
    return value


async def read(request: Request, tp: type[T]) -> T:
    return decode(await request.body(), tp)


def json(body: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status_code=status, media_type="application/json")


def raw_json(payload: bytes, status: int = 200) -> Response:
    return Response(payload, status_code=status, media_type="application/json")


def encode(body: Any) -> bytes:
    return _encoder.encode(body)


def error(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    retry_after: int | None = None,
) -> Response:
    response = json(ErrorOut(error=ErrorBody(code=code, message=message, field=field)), status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def from_exception(exc: ApiError) -> Response:
    retry_after = exc.retry_after if isinstance(exc, TooManyRequests) else None
    return error(exc.status, exc.code, exc.message, field=exc.field, retry_after=retry_after)
