"""Company sign-in, the protocol: an OpenID Connect relying party built on Authlib.

One `RelyingParty` per api process (MUSTER_OIDC_*; None when company sign-in is off). It
finds the provider by discovery (`<issuer>/.well-known/openid-configuration`, whose `issuer`
must be the configured one exactly), sends the browser there with the authorization code
flow, PKCE (S256), a `state` and a `nonce` (`begin`), and on the way back (`finish`) trades
the code for tokens at the token endpoint, proving it with the PKCE verifier and the client
secret, then verifies the ID token: its signature with the provider's published keys (JWKS,
fetched again once when a token names a key id not seen yet), `iss`, `aud` (and `azp`),
`exp`, `iat`, and the `nonce` of this sign-in. The claim that names the person
(MUSTER_OIDC_CLAIM, `email` by default) is read from the ID token, or from the UserInfo
endpoint when the provider keeps it there (only if UserInfo's `sub` is the ID token's);
`email` counts only with `email_verified: true`.

What goes wrong is translated where it enters into the api's errors (muster.errors), each
with a message a person can act on: 401 for a token that fails verification, 403 for an
identity Muster will not accept, 502 when the provider cannot be reached or answers
something unusable. The web routes (web/company.py) decide which account that identity is.

It never creates or changes anything: no Redis, no events.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx2
import structlog
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    InvalidKeyIdError,
    JoseError,
)
from joserfc.jwk import KeySet

from muster.api import validation
from muster.errors import BadGateway, Forbidden, Invalid, Unauthorized
from muster.records import OidcFlow
from muster.settings import Settings

log = structlog.get_logger("muster.api.oidc")

CALLBACK_PATH = "/app/oidc/callback"
SCOPE = "openid email profile"
HTTP_TIMEOUT_S = 10.0
METADATA_TTL_S = 3600.0
"""How long discovery's answer is used before it is fetched again."""
JWKS_REFRESH_MIN_S = 30.0
"""An unknown key id fetches the JWKS again, at most this often (a forged kid costs nothing)."""
LEEWAY_S = 60
"""Clock skew allowed between the provider and Muster when checking exp, iat and nbf."""
_ASYMMETRIC = re.compile(r"^(RS|PS|ES)(256|384|512)$|^EdDSA$|^Ed25519$")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the provider says signed in: `address` is the verified claim's value."""

    issuer: str
    subject: str
    address: str
    name: str | None


class RelyingParty:
    def __init__(self, settings: Settings) -> None:
        assert settings.oidc_issuer is not None
        assert settings.oidc_client_id is not None
        assert settings.oidc_client_secret is not None
        self.issuer = settings.oidc_issuer
        self.client_id = settings.oidc_client_id
        self._client_secret = settings.oidc_client_secret
        self.claim = settings.oidc_claim
        self.redirect_uri = settings.public_url.rstrip("/") + CALLBACK_PATH
        self._metadata: dict[str, Any] | None = None
        self._metadata_until = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0

    # --- leaving for the provider ----------------------------------------------------------
    async def begin(self, next_page: str) -> tuple[str, str, OidcFlow]:
        """A fresh sign-in: (the provider's authorization URL, its state, what to keep)."""
        metadata = await self.metadata()
        state = secrets.token_urlsafe(32)
        flow = OidcFlow(
            nonce=secrets.token_urlsafe(32), verifier=secrets.token_urlsafe(64), next=next_page
        )
        async with self._oauth() as client:
            url, _ = client.create_authorization_url(
                metadata["authorization_endpoint"],
                state=state,
                code_verifier=flow.verifier,
                nonce=flow.nonce,
            )
        return str(url), state, flow

    # --- coming back -----------------------------------------------------------------------
    async def finish(self, code: str, flow: OidcFlow) -> Identity:
        """Trade the code for tokens and verify them; the identity they prove."""
        tokens = await self.exchange(code, flow.verifier)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise BadGateway(
                "The identity provider answered without an ID token.", code="oidc_no_id_token"
            )
        claims = await self.verify(id_token, flow.nonce)
        access_token = tokens.get("access_token")
        if self._needs_userinfo(claims) and isinstance(access_token, str):
            claims = {**await self._userinfo(access_token, str(claims["sub"])), **claims}
        return self._identity(claims)

    async def exchange(self, code: str, verifier: str) -> dict[str, Any]:
        """The token endpoint's answer to the authorization code (proved by the PKCE
        verifier and the client's credentials). Tests wrap this boundary to hand the
        verification below ID tokens the provider would not make (tests/web/test_oidc.py)."""
        metadata = await self.metadata()
        try:
            async with self._oauth() as client:
                token: dict[str, Any] = await client.fetch_token(
                    metadata["token_endpoint"],
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=verifier,
                )
        except OAuthError as exc:
            raise Unauthorized(
                f"The identity provider refused to complete the sign-in ({exc.error}).",
                code="oidc_token_refused",
            ) from None
        except (httpx2.HTTPError, ValueError) as exc:
            raise BadGateway(
                f"The identity provider's token endpoint could not be used ({type(exc).__name__}).",
                code="oidc_unreachable",
            ) from None
        return dict(token)

    async def verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The ID token's claims, once its signature and claims check out (else 401)."""
        metadata = await self.metadata()
        algorithms = [
            alg
            for alg in metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
            if isinstance(alg, str) and _ASYMMETRIC.match(alg)
        ] or ["RS256"]
        try:
            try:
                token = jwt.decode(id_token, await self.keys(), algorithms=algorithms)
            except InvalidKeyIdError:
                token = jwt.decode(id_token, await self.keys(refresh=True), algorithms=algorithms)
            claims = CodeIDToken(
                token.claims,
                token.header,
                {
                    "iss": {"essential": True, "value": self.issuer},
                    "aud": {"essential": True, "value": self.client_id},
                },
                {"nonce": nonce, "client_id": self.client_id},
            )
            claims.validate(now=int(time.time()), leeway=LEEWAY_S)
        except InvalidKeyIdError:
            raise _refused("it is signed with a key the provider does not publish") from None
        except BadSignatureError:
            raise _refused("its signature does not match the provider's keys") from None
        except ExpiredTokenError:
            raise _refused("it has expired") from None
        except ClaimError as exc:
            claim = exc.claim
            reasons = {
                "iss": "it was issued by another provider than the one Muster trusts",
                "aud": "it was issued to another application",
                "azp": "it was issued to another application",
                "nonce": "it does not belong to this sign-in (replayed or mixed up)",
            }
            raise _refused(reasons.get(claim, f"its {claim!r} claim is missing or wrong")) from None
        except (JoseError, ValueError):
            raise _refused("it is not a well-formed signed token") from None
        return dict(claims)

    # --- the provider's documents ----------------------------------------------------------
    async def metadata(self) -> dict[str, Any]:
        """Discovery's answer (cached METADATA_TTL_S); its issuer must be ours exactly."""
        if self._metadata is not None and time.monotonic() < self._metadata_until:
            return self._metadata
        url = f"{self.issuer}/.well-known/openid-configuration"
        document = await self._get_json(url, "discovery document")
        if document.get("issuer") != self.issuer:
            raise BadGateway(
                f"The identity provider at {url} says its issuer is {document.get('issuer')!r}, "
                f"not {self.issuer!r} (MUSTER_OIDC_ISSUER): Muster will not trust it.",
                code="oidc_issuer_mismatch",
            )
        for endpoint in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(document.get(endpoint), str):
                raise BadGateway(
                    f"The identity provider's discovery document has no {endpoint}.",
                    code="oidc_bad_metadata",
                )
        self._metadata = document
        self._metadata_until = time.monotonic() + METADATA_TTL_S
        return document

    async def keys(self, *, refresh: bool = False) -> KeySet:
        """The provider's signing keys (JWKS); `refresh` fetches them again, rate-limited."""
        now = time.monotonic()
        if self._keys is not None and not (refresh and now - self._keys_at > JWKS_REFRESH_MIN_S):
            return self._keys
        metadata = await self.metadata()
        document = await self._get_json(metadata["jwks_uri"], "signing keys (JWKS)")
        try:
            self._keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
        except (JoseError, ValueError, KeyError, TypeError):
            raise BadGateway(
                "The identity provider's signing keys (JWKS) could not be read.",
                code="oidc_bad_jwks",
            ) from None
        self._keys_at = now
        return self._keys

    # --- helpers -----------------------------------------------------------------------------
    def _oauth(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self._client_secret,
            scope=SCOPE,
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            timeout=HTTP_TIMEOUT_S,
        )

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
                response = await client.get(url, headers={"Accept": "application/json"})
                response.raise_for_status()
                document = response.json()
        except (httpx2.HTTPError, ValueError) as exc:
            log.warning("oidc provider unusable", url=url, error=type(exc).__name__)
            raise BadGateway(
                f"The identity provider's {what} could not be fetched from {url} "
                f"({type(exc).__name__}).",
                code="oidc_unreachable",
            ) from None
        if not isinstance(document, dict):
            raise BadGateway(f"The identity provider's {what} is not a JSON object.")
        return document

    def _needs_userinfo(self, claims: dict[str, Any]) -> bool:
        if self.claim not in claims:
            return True
        return self.claim == "email" and "email_verified" not in claims

    async def _userinfo(self, access_token: str, subject: str) -> dict[str, Any]:
        metadata = await self.metadata()
        endpoint = metadata.get("userinfo_endpoint")
        if not isinstance(endpoint, str):
            return {}
        try:
            async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
                response = await client.get(
                    endpoint, headers={"Authorization": f"Bearer {access_token}"}
                )
                response.raise_for_status()
                info = response.json()
        except (httpx2.HTTPError, ValueError) as exc:
            raise BadGateway(
                f"The identity provider's UserInfo endpoint could not be used ({type(exc).__name__}).",
                code="oidc_unreachable",
            ) from None
        if not isinstance(info, dict) or info.get("sub") != subject:
            # OIDC Core 5.3.2: a UserInfo answer about someone else must not be used.
            raise _refused("the provider's UserInfo answer is about someone else")
        return info

    def _identity(self, claims: dict[str, Any]) -> Identity:
        value = claims.get(self.claim)
        if not isinstance(value, str) or not _is_address(value):
            raise Forbidden(
                f"Your identity provider did not send an email address in the {self.claim!r} "
                "claim, so Muster cannot tell which account is yours. Ask your administrator.",
                code="oidc_no_claim",
            )
        if self.claim == "email" and claims.get("email_verified") is not True:
            raise Forbidden(
                f"Your identity provider has not verified the address {value}, so Muster cannot "
                "use it to sign you in. Verify it with your identity provider, then try again.",
                code="oidc_email_unverified",
            )
        name = claims.get("name")
        return Identity(
            issuer=self.issuer,
            subject=str(claims["sub"]),
            address=value,
            name=name if isinstance(name, str) and name.strip() else None,
        )


def _is_address(value: str) -> bool:
    try:
        validation.email(value)
    except Invalid:
        return False
    return len(value) <= 254


def _refused(reason: str) -> Unauthorized:
    return Unauthorized(
        f"The identity provider's answer was refused: {reason}. Nothing was signed in.",
        code="oidc_token_invalid",
    )
