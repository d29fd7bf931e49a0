"""Muster's one exception tree. Other libraries' errors are translated where they enter.

MusterError
├── ConfigError                 a MUSTER_ variable is missing or unsafe; raised at start-up only
├── CommandFailed               a command could not do its job (exit 1)
├── CommandUsage                a command's arguments mean nothing here (exit 2)
├── ApiError                    a request is refused; carries status, code, message, field
│   ├── BadRequest              400 body is not JSON / not an object
│   ├── Unauthorized            401 missing or unknown token
│   ├── Forbidden               403 authenticated but not allowed
│   ├── NotFound                404 no such thing, or not visible to the caller
│   ├── Conflict                409 handle taken, idempotency key reused
│   ├── Gone                    410 no longer accepted (a roll-call past its deadline's grace)
│   ├── Invalid                 422 well-formed but invalid
│   ├── TooManyRequests         429 backpressure or rate limit; carries retry_after
│   └── BadGateway              502 a service Muster relies on answered wrongly (identity provider)
├── PermanentError              retrying cannot help: the consumer loop dead-letters at once
│   └── EventDecodeError        a stream entry that no event type decodes
└── DeliveryError               an outbound send failed
    ├── TransientDeliveryError  retry with backoff (timeouts, 5xx, 429, SMTP 4xx)
    └── PermanentDeliveryError  dead-letter now (4xx, SMTP 5xx, refused target); also Permanent
"""

from __future__ import annotations


class MusterError(Exception):
    """Base of every error Muster raises on purpose."""


class ConfigError(MusterError):
    """A setting is invalid; the message names the variable and why."""


class CommandFailed(MusterError):
    """The command could not do its job; the message is for the operator (exit 1)."""


class CommandUsage(MusterError):
    """The arguments cannot mean anything with this configuration (exit 2)."""


class ApiError(MusterError):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class Gone(ApiError):
    status = 410
    code = "gone"


class Invalid(ApiError):
    status = 422
    code = "invalid"


class TooManyRequests(ApiError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class BadGateway(ApiError):
    """A service this request relies on (the company identity provider) failed or answered
    something Muster cannot use; the message says which and what."""

    status = 502
    code = "bad_gateway"


class PermanentError(MusterError):
    """Raised by a handler when the entry can never succeed: dead-lettered without retries."""


class EventDecodeError(PermanentError):
    """A stream entry holds no event this version can decode."""


class DeliveryError(MusterError):
    """An outbound send failed."""


class TransientDeliveryError(DeliveryError):
    """Worth retrying later."""


class PermanentDeliveryError(DeliveryError, PermanentError):
    """Retrying cannot help."""
