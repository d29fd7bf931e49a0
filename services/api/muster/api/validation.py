"""Checks on request values that the msgspec schema cannot express (settings, semantics).

Each raises errors.Invalid with a snake_case code and the offending field.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from muster.errors import Invalid
from muster.keys import CHANNELS

_EMAIL = re.compile(
    r"^[^@\s<>,;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$"
)
_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")  # E.164
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


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
    if any(ord(c) < 32 and c not in "\t\n\r" for c in value):
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


def is_private_host(host: str) -> bool:
    """Loopback, private, link-local, reserved or unspecified addresses, and local names."""
    name = host.strip("[]").lower().rstrip(".")
    if name in _LOCAL_NAMES or name.endswith(".localhost") or name.endswith(".local"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


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
