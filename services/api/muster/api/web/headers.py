"""The headers every web response carries: a strict Content-Security-Policy and its friends.

The policy allows scripts and styles from this origin's static files only: no inline script,
no inline style, no eval, nothing from elsewhere; forms post only here; nothing may frame a
page, except the banner (status.py), which exists to be framed by an organisation's website.
"""

from __future__ import annotations

from starlette.responses import Response

_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; manifest-src 'self'"
)
CSP = f"{_POLICY}; frame-ancestors 'none'"
CSP_FRAMEABLE = f"{_POLICY}; frame-ancestors *"
"""For the banner only: any website may frame it (it shows public posts and has no forms)."""

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


CSP_PUBLIC_IMAGES = CSP.replace("img-src 'self' data:", "img-src 'self' data: https:")
"""Status pages show the account's logo from wherever its https URL points."""


def public_images(response: Response) -> Response:
    """Let the page show https images from elsewhere (a status page's logo)."""
    response.headers["Content-Security-Policy"] = CSP_PUBLIC_IMAGES
    return response


def frameable(response: Response) -> Response:
    """Let any site frame this response (nothing else about the policy changes)."""
    response.headers["Content-Security-Policy"] = CSP_FRAMEABLE
    return response


def harden(response: Response, *, cache: str = "no-store") -> Response:
    """The security headers (unless the route set its own) and a cache policy (same rule)."""
    framed = response.headers.get("Content-Security-Policy") == CSP_FRAMEABLE
    for name, value in SECURITY_HEADERS.items():
        if name not in response.headers and not (framed and name == "X-Frame-Options"):
            response.headers[name] = value
    if "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = cache
    return response
