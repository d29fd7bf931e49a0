"""The web layer, served by the api process: public status pages and the follower's web app.

Public status pages (`/@{handle}`, status.py) are server-rendered from the same reads the JSON
API serves (muster.api.reads), always as an anonymous reader, so an internal post cannot reach
them; a small script adds live updates from GET /v1/accounts/{handle}/stream. Everything works
with JavaScript off, except the live updates.

The web app (`/app`, signin.py, timeline.py, rollcalls.py, messages.py, profile.py, people.py, admin.py) is a client of
the JSON API *inside the process*: each page and form calls the API's own routes through
`inprocess.JsonApi`, an ASGI call on this same app carrying the session's token as a bearer
token and the form as a JSON body. So validation, authorisation, visibility, idempotency and
the events a write appends are the JSON API's, by construction; there is no second rule set
to drift. We chose this over calling the API from JavaScript because the token then lives in
an HttpOnly cookie no script can read (an injected script could not steal it), and because
every page works without JavaScript. Two admin views have no JSON route (enrolment rules,
dead letters): they use the functions the CLI uses (muster.dlq) on the same Redis. Live
updates come from /app/stream (live.py): GET /v1/stream's loop and filter, authenticated by
the cookie, since EventSource cannot send a bearer token.

Sign-in is by pasting a token (people get one from their admin; a self-hosted product may
have no mail server for magic links), or through the company's identity provider when
MUSTER_OIDC_ISSUER is set (company.py: OpenID Connect, the session then holds a named token). The token is kept in an HttpOnly, SameSite=Strict
cookie (Secure over https) scoped to /app; every state-changing form carries a per-session
CSRF token checked server-side (session.py). Pages are Jinja2 templates with autoescape on;
scripts and styles are static files (assets.py), so the Content-Security-Policy allows no
inline script or style at all (headers.py).
"""

from __future__ import annotations

from fastapi import APIRouter

from muster.api.web import (
    admin,
    answer,
    assets,
    company,
    fallback,
    feeds,
    incidents,
    live,
    messages,
    people,
    policies,
    profile,
    rollcallposts,
    rollcalls,
    signin,
    status,
    statusapi,
    subscribe,
    timeline,
)

router = APIRouter(include_in_schema=False)
_PAGES = (
    assets,
    status,
    statusapi,
    feeds,
    subscribe,
    answer,
    signin,
    company,
    live,
    timeline,
    rollcallposts,
    rollcalls,
    incidents,
    messages,
    profile,
    people,
    admin,
    policies,
    fallback,
)
for _module in _PAGES:
    router.include_router(_module.router)
