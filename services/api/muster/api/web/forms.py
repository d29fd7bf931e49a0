"""Reading HTML forms (application/x-www-form-urlencoded) without a multipart dependency.

The app's forms are all url-encoded (the default enctype); the body is already bounded by
MUSTER_MAX_BODY_BYTES (limits.BodyLimit). Values are text; what they mean is the JSON API's
business, which checks them as it checks any client's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from fastapi import Request

from muster.errors import BadRequest

_MAX_FIELDS = 200
_HANDLE = re.compile(r"^[a-z0-9_]{1,30}$")
_SPLIT = re.compile(r"[\s,;]+")


@dataclass
class Form:
    values: dict[str, list[str]] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        found = self.values.get(name)
        return found[0] if found else default

    def getall(self, name: str) -> list[str]:
        return list(self.values.get(name, ()))

    def has(self, name: str) -> bool:
        return name in self.values

    def optional(self, name: str) -> str | None:
        """The value with surrounding space removed; None when empty or absent."""
        value = self.get(name).strip()
        return value or None


def parse(body: bytes) -> Form:
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=_MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("The form could not be read.", code="bad_form") from None
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        values.setdefault(name, []).append(value.replace("\r\n", "\n"))
    return Form(values)


async def read(request: Request) -> Form:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise BadRequest("Send this form from its page.", code="bad_form")
    return parse(await request.body())


def handle(value: str) -> str:
    """A handle someone typed: `@Ops ` → `ops` (the API refuses anything else)."""
    return value.strip().lstrip("@").lower()


def is_handle(value: str) -> bool:
    return bool(_HANDLE.fullmatch(value))


def handles(value: str) -> list[str]:
    """A list typed into a text area: handles separated by spaces, commas or new lines."""
    return [handle(part) for part in _SPLIT.split(value) if part.strip()]
