"""Checks on request values that the msgspec schema cannot express (settings, semantics).

Each raises errors.Invalid with a snake_case code and the offending field.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from muster.addresses import is_private_host
from muster.errors import Invalid
from muster.keys import CHANNELS

_EMAIL = re.compile(
    r"^[^@\s<>,;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$"
)
_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")  # E.164
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # C0 controls but \t \n \r


def text(value: str, *, limit: int, field: str = "text") -> str:
    """1..limit Unicode code points, not only whitespace; no NUL or other C0 controls but \\t\\n\\r."""
    if not value.strip():
        raise Invalid(f"{field} must not be empty", code="text_empty", field=field)
    if len(value) > limit:
        raise Invalid(
            f"{field} is {len(value)} characters; the limit is {limit}",
            code="text_too_long",
            field=field,
        )
    if _CONTROL.search(value):
        raise Invalid(f"{field} contains control characters", code="invalid_text", field=field)
    return value


def email(value: str | None) -> str | None:
    if value is not None and not _EMAIL.match(value):
        raise Invalid("email must be an email address", code="invalid_email", field="email")
    return value


def phone(value: str | None) -> str | None:
    if value is not None and not _PHONE.match(value):
        raise Invalid(
            "phone must be in E.164 form, e.g. +15551234567", code="invalid_phone", field="phone"
        )
    return value


def webhook_url(value: str | None, *, allow_private: bool) -> str | None:
    """http(s) URL with a host; private targets refused unless MUSTER_WEBHOOK_ALLOW_PRIVATE (SSRF).

    Names are checked again on every delivery against the addresses they resolve to, since a
    name that is public today can point inside tomorrow.
    """
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise Invalid(
            "webhook_url is not a valid URL", code="invalid_url", field="webhook_url"
        ) from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise Invalid(
            "webhook_url must be an http:// or https:// URL with a host",
            code="invalid_url",
            field="webhook_url",
        )
    if parts.username or parts.password:
        raise Invalid(
            "webhook_url must not carry credentials", code="invalid_url", field="webhook_url"
        )
    if port == 0:
        raise Invalid("webhook_url has no usable port", code="invalid_url", field="webhook_url")
    if not allow_private and is_private_host(parts.hostname):
        raise Invalid(
            "webhook_url points at a private, loopback or link-local address",
            code="private_webhook_target",
            field="webhook_url",
        )
    return value


def channels(requested: list[str] | None) -> list[str]:
    """Deduplicated, in CHANNELS order, `app` always on."""
    chosen = set(requested or ()) | {"app"}
    return [c for c in CHANNELS if c in chosen]
