"""Looking up accounts named in a request, with the 404/422 answers docs/api.md asks for."""

from __future__ import annotations

from muster.api import accounts
from muster.api.state import ApiState
from muster.errors import Invalid, NotFound
from muster.records import Account


async def existing(state: ApiState, handle: str, *, field: str | None = None) -> Account:
    account = await accounts.load(state.redis, handle, state.settings.partitions)
    if account is None:
        raise NotFound(f"no account {handle!r}", code="no_such_account", field=field)
    return account


async def kind_of(
    state: ApiState, handle: str, *, field: str | None = None, active: bool = False
) -> str:
    """An account's kind (cached: tokens.TokenCache.standing); `active`: refuse a
    deactivated account, which neither posts nor receives."""
    standing = await state.tokens.standing(handle)
    if standing is None:
        raise NotFound(f"no account {handle!r}", code="no_such_account", field=field)
    kind, is_active = standing
    if active and not is_active:
        raise Invalid(f"{handle} is deactivated", code="account_deactivated", field=field)
    return kind


def require_kind(account: Account, kinds: set[str], *, field: str, what: str) -> None:
    if account.kind not in kinds:
        raise Invalid(
            f"{account.handle} is a {account.kind}, not {what}", code="wrong_kind", field=field
        )
