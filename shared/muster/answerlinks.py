"""Answers to a roll-call from outside the app: answer links, their page tokens, SMS codes.

The delivery worker hands these out with each email, SMS and webhook that carries a roll-call
post; the api takes them back (GET/POST /r/{link}, POST /v1/inbound/sms, POST
/v1/rollcalls/callback/{link}). Both sides call this module, so a link is made and read by
one implementation.

- **Link id**: the first 96 bits of HMAC-SHA256(key, rollcall|recipient|channel), base64url:
  16 characters (short enough for an SMS), the same on every send of one message, so a resend
  after a crash carries the same link. `key` is random, kept in Redis (keys.ANSWER_LINK_KEY),
  made by whoever needs it first. The id is a bearer token: only its SHA-256 is kept
  (keys.rollcall_link), written before the message goes out. It is not single-use — link
  scanners would burn it — and it never signs anyone in: it can only answer this roll-call as
  this person.
- **Page token**: the answer page's forms carry `<issued ms>.<HMAC of link and issued>`; a
  POST without a valid one for this link, or one older than PAGE_TOKEN_TTL_S, answers
  nothing. A scanner following links or submitting forms it made up never gets past it.
- **Suspect**: an answer that looks automated (SUSPECT_REASONS) is recorded, flagged; it
  neither accounts for the person nor replaces an answer that is not suspect.
- **SMS codes**: each (roll-call, recipient) sent to a phone gets a block of consecutive
  numbers, one per option, after the highest block that phone still holds
  (lua/rollcall_sms_codes.lua): the first roll-call says "1 safe, 2 help", a second one open
  at the same time "3 safe, 4 help". A reply is its digits, matched exactly.

Never logs a link id, a page token or a phone number.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Any, Final

import redis.asyncio as aioredis

from muster import keys, scripts
from muster.records import (
    RollCallLink,
    SmsCodeBlock,
    encode_rollcall_link,
    rollcall_link_of,
    sms_code_block_of,
)

LINK_CHARS: Final = 16
PAGE_TOKEN_TTL_S: Final = 30 * 60
"""An answer page's forms work this long after it was shown (then: reload the link)."""
MIN_AFTER_DELIVERY_S: Final = 10.0
"""An answer through a link sooner than this after its message was sent is suspect: mail
and SMS link scanners fetch on arrival; a person takes longer to open, read and tap."""
MIN_ON_PAGE_S: Final = 1.5
"""…and one posted sooner than this after its page was shown: a script clicking through."""
SCANNER_AGENTS: Final = (
    "barracuda",
    "mimecast",
    "proofpoint",
    "safelinks",
    "microsoft office",
    "ms-office",
    "msoffice",
    "bingpreview",
    "skypeuripreview",
    "slackbot",
    "discordbot",
    "facebookexternalhit",
    "whatsapp",
    "telegrambot",
    "twitterbot",
    "linkedinbot",
    "googleimageproxy",
    "google-safety",
    "trendmicro",
    "sophos",
    "symantec",
    "forcepoint",
    "fireeye",
    "zscaler",
    "headlesschrome",
    "phantomjs",
    "python-requests",
    "python-httpx",
    "aiohttp",
    "curl/",
    "wget/",
    "go-http-client",
    "java/",
    "okhttp",
    "bot",
    "crawler",
    "spider",
    "preview",
    "scan",
)
"""User agents of link checkers, previewers and scripts (case-insensitive substrings)."""
SUSPECT_REASONS: Final = ("scanner_user_agent", "soon_after_delivery", "soon_after_page")


# --- the key ------------------------------------------------------------------------------------
class Links:
    """Mints and reads answer links and page tokens; the key is fetched once per process."""

    def __init__(self, redis: aioredis.Redis, partitions: int) -> None:
        self.redis = redis
        self.partitions = partitions
        self._key: bytes | None = None
        self._codes = scripts.register(redis, "rollcall_sms_codes")

    async def key(self) -> bytes:
        if self._key is None:
            await self.redis.set(keys.ANSWER_LINK_KEY, secrets.token_hex(32), nx=True)
            raw: Any = await self.redis.get(keys.ANSWER_LINK_KEY)
            assert raw is not None
            self._key = raw if isinstance(raw, bytes) else raw.encode()
        return self._key

    # --- links ----------------------------------------------------------------------------------
    async def link_id(self, rollcall: str, recipient: str, channel: str) -> str:
        mac = _mac(await self.key(), f"link|{rollcall}|{recipient}|{channel}")
        return base64.urlsafe_b64encode(mac[:12]).decode()

    def link_key(self, link: str) -> str:
        digest = hashlib.sha256(link.encode()).hexdigest()
        return keys.rollcall_link(keys.partition_of(digest, self.partitions), digest)

    async def mint(
        self, pipe: Any, rollcall: str, recipient: str, channel: str, *, ttl_s: int
    ) -> str:
        """The link for (rollcall, recipient, channel); its record queued on `pipe` (a
        pipeline), to be executed before the message carrying it is sent."""
        link = await self.link_id(rollcall, recipient, channel)
        record = RollCallLink(
            rollcall=rollcall, recipient=recipient, channel=channel, sent_ms=now_ms()
        )
        pipe.set(self.link_key(link), encode_rollcall_link(record), ex=max(ttl_s, 60))
        return link

    async def resolve(self, link: str) -> RollCallLink | None:
        """What a link stands for; None for anything that is not one we sent."""
        if not is_link(link):
            return None
        raw: Any = await self.redis.get(self.link_key(link))
        return None if raw is None else rollcall_link_of(raw)

    # --- page tokens ------------------------------------------------------------------------------
    async def page_token(self, link: str, issued_ms: int | None = None) -> str:
        issued = now_ms() if issued_ms is None else issued_ms
        mac = _mac(await self.key(), f"page|{link}|{issued}")
        return f"{issued}.{base64.urlsafe_b64encode(mac[:16]).decode()}"

    async def page_token_age_s(self, link: str, token: str) -> float | None:
        """How old a valid page token of `link` is; None when it is not one (forged, for
        another link, expired)."""
        issued, dot, _ = token.partition(".")
        if not dot or not issued.isdigit() or len(token) > 64:
            return None
        expected = await self.page_token(link, int(issued))
        if not hmac.compare_digest(expected.encode(), token.encode()):
            return None
        age = (now_ms() - int(issued)) / 1000
        return age if -5 <= age <= PAGE_TOKEN_TTL_S else None

    # --- SMS codes ----------------------------------------------------------------------------
    def codes_key(self, phone: str) -> str:
        digest = hashlib.sha256(phone.encode()).hexdigest()
        return keys.rollcall_sms_codes(keys.partition_of(digest, self.partitions), digest)

    async def allocate_codes(
        self,
        phone: str,
        rollcall: str,
        recipient: str,
        options: int,
        *,
        expires_ms: int,
        pipe: Any = None,
    ) -> int:
        """The first reply code of (rollcall, recipient) on `phone` (one per option after
        it); queued on `pipe` when given (its result is the first code, at execute)."""
        first = await self._codes(
            keys=[self.codes_key(phone)],
            args=[f"{rollcall}|{recipient}", options, expires_ms, now_ms()],
            client=pipe,
        )
        return 0 if pipe is not None else int(first)

    async def code_holder(self, phone: str, code: int) -> tuple[str, str, int] | None:
        """(rollcall, recipient, option index) a reply `code` from `phone` names, if any."""
        raw: Any = await self.redis.hgetall(self.codes_key(phone))
        now = now_ms()
        for field, value in raw.items():
            block = sms_code_block_of(value)
            index = block.option_index(code)
            if index is not None and block.expires_ms > now:
                rollcall, _, recipient = _text(field).partition("|")
                return rollcall, recipient, index
        return None

    async def phone_holders(self, phone: str) -> list[tuple[str, str]]:
        """Every (rollcall, recipient) with codes on `phone` still open."""
        raw: Any = await self.redis.hgetall(self.codes_key(phone))
        now = now_ms()
        found = []
        for field, value in raw.items():
            if sms_code_block_of(value).expires_ms > now:
                rollcall, _, recipient = _text(field).partition("|")
                found.append((rollcall, recipient))
        return sorted(found)


def blocks(raw: dict[Any, Any]) -> dict[str, SmsCodeBlock]:
    """A codes hash as read: field → block (for tests and reports)."""
    return {_text(k): sms_code_block_of(v) for k, v in raw.items()}


def is_link(value: str) -> bool:
    return len(value) == LINK_CHARS and all(
        c.isascii() and (c.isalnum() or c in "-_") for c in value
    )


def suspect_reason(
    user_agent: str, since_delivery_s: float | None, since_page_s: float | None
) -> str:
    """Why an answer through a link looks automated ("" when it does not)."""
    agent = user_agent.lower()
    if not agent or any(name in agent for name in SCANNER_AGENTS):
        return "scanner_user_agent"
    if since_delivery_s is not None and since_delivery_s < MIN_AFTER_DELIVERY_S:
        return "soon_after_delivery"
    if since_page_s is not None and since_page_s < MIN_ON_PAGE_S:
        return "soon_after_page"
    return ""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _mac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
