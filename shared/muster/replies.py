"""Reply addresses: `reply+<token>@<domain>`, the Reply-To of every email Muster sends a
person, so that replying finds its way back as that person's reply to that post or DM.

The delivery worker makes them (`ReplyAddresses.address`); `muster mail-in` checks them at
RCPT and the api's inbound-mail code again before acting (`ReplyAddresses.check`). Neither
ever stores one.

A token is `<handle>-<message id>-<mac>`: the message id as 13 base32 digits (its 8 bytes),
the mac the first 8 bytes of HMAC-SHA256 under MUSTER_MAIL_IN_SECRET of the handle and the
message id, also base32. Everything is lower case, since mail systems may fold the case of
a local part, and the longest (a 30-character handle) is exactly the 64 characters RFC 5321
allows a local part. It expires MUSTER_MAIL_IN_REPLY_DAYS after the message was made (a
snowflake carries its time), so nothing else needs to be in it.

Why a MAC and not a random key stored hashed (the design input's choice): a roll-call to
100,000 people would otherwise write 100,000 keys as it is sent, none of them an event, so
a database rebuilt from the archive would silently break every address still in people's
inboxes; a MAC needs no write, survives any rebuild, and lets the SMTP listener refuse a
forged address at RCPT from the secret alone. What it gives up — revoking one address — is
covered by the checks every reply goes through anyway (the sender must be the person's
current address, the account active, the post still visible to them). Changing the secret
retires every address given out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Final

from muster.ids import id_time_ms

LOCAL_PREFIX: Final = "reply+"
_MAC_BYTES: Final = 8
_ID_BYTES: Final = 8


@dataclass(frozen=True, slots=True)
class ReplyTo:
    """What a reply address names: the person it was sent to and the post or DM it carried."""

    handle: str
    message_id: str


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=").lower()


def _unb32(text: str, size: int) -> bytes | None:
    padded = text.upper() + "=" * (-len(text) % 8)
    try:
        raw = base64.b32decode(padded)
    except ValueError:
        return None
    return raw if len(raw) == size else None


class ReplyAddresses:
    """Makes and checks reply addresses under one secret, for one domain."""

    def __init__(self, secret: str, domain: str, valid_days: int) -> None:
        self._key = hashlib.sha256(b"muster reply address\0" + secret.encode()).digest()
        self.domain = domain.lower()
        self.valid_ms = valid_days * 86_400_000

    def _mac(self, handle: str, message_id: int) -> bytes:
        signed = f"{handle}\0{message_id}".encode()
        return hmac.new(self._key, signed, hashlib.sha256).digest()[:_MAC_BYTES]

    def token(self, handle: str, message_id: str) -> str:
        number = int(message_id)
        raw_id = number.to_bytes(_ID_BYTES, "big")
        return f"{handle}-{_b32(raw_id)}-{_b32(self._mac(handle, number))}"

    def address(self, handle: str, message_id: str) -> str:
        """The Reply-To for `handle`'s copy of the post or DM `message_id`."""
        return f"{LOCAL_PREFIX}{self.token(handle, message_id)}@{self.domain}"

    def check(self, address: str, *, now_ms: int | None = None) -> ReplyTo | None:
        """What a reply address names, or None when it is not one of ours, is forged, or
        has expired. Any domain is taken: the route that brought it (MX, a provider) was
        set up for ours, and a domain alias must not break replies."""
        local = address.strip().strip("<>").rpartition("@")[0].lower()
        if not local.startswith(LOCAL_PREFIX):
            return None
        handle, _, rest = local[len(LOCAL_PREFIX) :].rpartition("-")
        handle, _, encoded_id = handle.rpartition("-")
        raw_id, mac = _unb32(encoded_id, _ID_BYTES), _unb32(rest, _MAC_BYTES)
        if not handle or raw_id is None or mac is None:
            return None
        number = int.from_bytes(raw_id, "big")
        if not hmac.compare_digest(mac, self._mac(handle, number)):
            return None
        now = time.time() * 1000 if now_ms is None else now_ms
        if now - id_time_ms(number) > self.valid_ms:
            return None
        return ReplyTo(handle=handle, message_id=str(number))
