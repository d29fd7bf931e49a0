"""SCIM 2.0 (RFC 7643, RFC 7644) as Muster speaks it to a company directory at /scim/v2:
the resources, the discovery documents, the mapping between a SCIM User or Group and a
Muster person or team, request parsing and the SCIM error bodies.

The protocol itself (resources, filters, PATCH operations with the Okta and Entra ID
quirks, list responses, errors) is scim2-models' (pydantic); what is Muster's here is the
mapping. It does no I/O and never writes: directorysync.py reads and writes through
writes.py, routes/scim.py is the HTTP edge. Pydantic stays in this layer.

What a directory sees (docs/api.md, Directory sync):
- a User is a person the directory created; its `id` is the handle, which comes from its
  `userName` (the part before `@` of an address), normalised to the handle rules;
- a Group is mapped to the team whose handle is its `displayName`; its `id` is that handle;
- the attributes Muster keeps are the ones /Schemas lists; other attributes of the core
  schemas (and the enterprise extension Entra ID sends) are accepted and not kept.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import ValidationError
from scim2_models import (
    Context,
    Email,
    EnterpriseUser,
    Error,
    Group,
    InvalidSyntaxException,
    InvalidValueException,
    ListResponse,
    Meta,
    Name,
    PatchOp,
    ResourceType,
    Schema,
    SCIMException,
    ScimPolicy,
    SearchRequest,
    ServiceProviderConfig,
    User,
)
from starlette.responses import Response

from muster import events
from muster.api import validation
from muster.errors import ApiError, Invalid
from muster.records import Account, DirectoryGroup, DirectoryUser

BASE = "/scim/v2"
MEDIA_TYPE = "application/scim+json"
ACTOR = "scim-directory"
"""The actor of every event the directory causes: not a handle (handles have no `-`)."""
MAX_RESULTS = 200
"""The most resources one list response holds (ServiceProviderConfig filter.maxResults)."""

UserIn = User[EnterpriseUser]
"""What a request may carry: the core User, with the enterprise extension Entra ID sends."""
POLICY = ScimPolicy(
    unknown=ScimPolicy.Unknown.forbid,
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)
"""Unknown attributes are refused; a `remove` with a value list (Entra ID) removes those
values; a `replace` of `emails[type eq "work"].value` on a user with no work email
(Entra ID) creates it."""

_KEPT_USER = {"userName", "name", "displayName", "emails", "active"}
_KEPT_NAME = {"formatted", "givenName", "familyName"}
_KEPT_EMAIL = {"value", "type", "primary"}
_KEPT_GROUP = {"displayName", "members"}
_KEPT_MEMBER = {"value", "$ref", "type"}
_HANDLE_MAX = 30
T = TypeVar("T")


def is_scim(path: str) -> bool:
    return path == BASE or path.startswith(BASE + "/")


# --- errors ------------------------------------------------------------------------------------
def error(status: int, detail: str, scim_type: str | None = None) -> Response:
    """RFC 7644 §3.12: `schemas`, `status` as a string, `scimType` when one applies."""
    body = Error(status=status, scim_type=scim_type, detail=detail)
    return _json(body.model_dump(scim_ctx=Context.DEFAULT), status)


def from_exception(exc: SCIMException) -> Response:
    found = exc.to_error()
    return error(found.status or 400, found.detail or str(exc), found.scim_type)


_API_SCIM_TYPES = {409: "uniqueness", 422: "invalidValue", 400: "invalidSyntax"}


def from_api_error(exc: ApiError) -> Response:
    """Muster's own refusals, said in SCIM: 422 is SCIM's 400 invalidValue."""
    status = 400 if exc.status == 422 else exc.status
    response = error(status, exc.message, _API_SCIM_TYPES.get(exc.status))
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def refused(exc: ValidationError) -> SCIMException:
    """The first of pydantic's errors as the SCIM error it stands for."""
    return SCIMException.from_error(Error.from_validation_errors(exc)[0])


# --- requests ----------------------------------------------------------------------------------
def read_json(raw: bytes) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidSyntaxException(detail="the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise InvalidSyntaxException(detail="the body must be a JSON object")
    return document


def parse(raw: bytes, model: type[T], ctx: Context) -> T:
    """A request body as `model` in `ctx`; any refusal is a SCIMException."""
    document = read_json(raw)
    try:
        parsed: T = model.model_validate(  # type: ignore[attr-defined]
            document, scim_ctx=ctx, scim_policy=POLICY
        )
    except ValidationError as exc:
        raise refused(exc) from None
    return parsed


def patch_op(raw: bytes, model: type[Any]) -> PatchOp[Any]:
    found: PatchOp[Any] = parse(raw, PatchOp[model], Context.RESOURCE_PATCH_REQUEST)  # type: ignore[valid-type]
    return found


def apply_patch(operations: PatchOp[Any], resource: Any) -> None:
    """Apply the operations in order, all or nothing (scim2-models restores on failure)."""
    try:
        operations.patch(resource, scim_policy=POLICY)
    except ValidationError as exc:
        raise refused(exc) from None


def search(params: Mapping[str, str], model: type[Any]) -> SearchRequest[Any]:
    """The query of a list request: filter, startIndex, count, attributes, excludedAttributes."""
    document: dict[str, Any] = {}
    for name in ("filter", "startIndex", "count", "sortBy", "sortOrder"):
        if name in params:
            document[name] = params[name]
    for name in ("attributes", "excludedAttributes"):
        if name in params:
            document[name] = [a.strip() for a in params[name].split(",") if a.strip()]
    try:
        found: SearchRequest[Any] = SearchRequest[model].model_validate(  # type: ignore[valid-type]
            document, scim_ctx=Context.SEARCH_REQUEST, scim_policy=POLICY
        )
    except ValidationError as exc:
        raise refused(exc) from None
    return found


def search_body(raw: bytes, model: type[Any]) -> SearchRequest[Any]:
    """The body of a POST .../.search (RFC 7644 §3.4.3)."""
    found: SearchRequest[Any] = parse(raw, SearchRequest[model], Context.SEARCH_REQUEST)  # type: ignore[valid-type]
    return found


def page(request: SearchRequest[Any], total: int) -> tuple[int, int]:
    """The slice [start, stop) of the sorted matches a list response holds."""
    start = max((request.start_index or 1) - 1, 0)
    count = MAX_RESULTS if request.count is None else min(request.count, MAX_RESULTS)
    return start, min(start + count, total)


# --- responses ---------------------------------------------------------------------------------
def _json(body: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
        status_code=status,
        media_type=MEDIA_TYPE,
    )


def resource(
    found: Any,
    status: int = 200,
    *,
    ctx: Context = Context.RESOURCE_QUERY_RESPONSE,
    params: SearchRequest[Any] | None = None,
) -> Response:
    response = _json(found.model_dump(scim_ctx=ctx, response_parameters=params), status)
    location = found.meta.location if getattr(found, "meta", None) else None
    if location:
        response.headers["Location"] = location
    return response


def listing(
    model: type[Any],
    resources: list[Any],
    total: int,
    start: int,
    params: SearchRequest[Any] | None,
) -> Response:
    body = ListResponse[model](  # type: ignore[valid-type]
        total_results=total,
        start_index=start + 1,
        items_per_page=len(resources),
        resources=resources,
    )
    return _json(body.model_dump(scim_ctx=Context.SEARCH_RESPONSE, response_parameters=params))


# --- users -------------------------------------------------------------------------------------
def handle_for(user_name: str) -> str:
    """The handle a userName gives: the part before the last `@` of an address, then
    `handle_of`."""
    local = user_name.rpartition("@")[0] if "@" in user_name else user_name
    return _handle_of(local, f"userName {user_name!r}")


def _handle_of(value: str, what: str) -> str:
    """Accents dropped, lowercased, every run of other characters than a-z, 0-9 and `_` one
    `_` (none at either end), at most 30 characters: the handle rules."""
    plain = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    handle = re.sub(r"[^a-z0-9_]+", "_", plain.lower()).strip("_")[:_HANDLE_MAX]
    if not handle:
        raise InvalidValueException(detail=f"{what} gives no handle: it needs a letter or a digit")
    return handle


def _display(value: str) -> str:
    """A display name Muster can show: no control characters, at most 100 characters."""
    return re.sub(r"[\x00-\x1f\x7f]", " ", value).strip()[:100]


def display_name(user: User[Any], handle: str) -> str:
    """displayName, else name.formatted, else given and family names, else the handle."""
    name = user.name or Name()
    joined = " ".join(p for p in (name.given_name, name.family_name) if p)
    for candidate in (user.display_name, name.formatted, joined):
        if candidate and _display(candidate):
            return _display(candidate)
    return handle


def primary_email(user: User[Any]) -> str | None:
    """The primary address (or the first), checked as Muster checks an email contact point."""
    emails = [e for e in user.emails or () if e.value]
    chosen = next((e for e in emails if e.primary), emails[0] if emails else None)
    if chosen is None or chosen.value is None:
        return None
    try:
        return validation.email(chosen.value)
    except Invalid:
        raise InvalidValueException(
            detail=f"emails: {chosen.value!r} is not an email address Muster can send to"
        ) from None


def user_changed(handle: str, user: User[Any], event_id: str) -> events.DirectoryUserChanged:
    """The event stating what Muster keeps of a User."""
    name = user.name or Name()
    assert user.user_name is not None  # required in every request context
    return events.DirectoryUserChanged(
        id=event_id,
        actor=ACTOR,
        at=events.utcnow(),
        handle=handle,
        user_name=user.user_name,
        external_id=user.external_id,
        display_name=user.display_name,
        formatted=name.formatted,
        given_name=name.given_name,
        family_name=name.family_name,
        emails=tuple(
            events.DirectoryEmail(value=e.value, type=_email_type(e), primary=e.primary)
            for e in user.emails or ()
            if e.value
        ),
    )


def _email_type(email: Email) -> str | None:
    return str(email.type.value) if isinstance(email.type, Email.Type) else email.type


def same_record(record: DirectoryUser, event: events.DirectoryUserChanged) -> bool:
    """Whether the event would keep the record as it is (its time aside)."""
    return all(
        getattr(record, name) == getattr(event, name)
        for name in (
            "user_name",
            "external_id",
            "display_name",
            "formatted",
            "given_name",
            "family_name",
            "emails",
        )
    )


def user_of(account: Account, record: DirectoryUser, base_url: str, *, active: bool) -> UserIn:
    """The User a directory reads: the attributes as it last set them, Muster's id and meta."""
    name = {
        "formatted": record.formatted,
        "givenName": record.given_name,
        "familyName": record.family_name,
    }
    document = {
        "id": account.handle,
        "externalId": record.external_id,
        "userName": record.user_name,
        "name": {k: v for k, v in name.items() if v is not None} or None,
        "displayName": record.display_name,
        "emails": [{"value": e.value, "type": e.type, "primary": e.primary} for e in record.emails]
        or None,
        "active": active,
        "meta": _meta("User", account.created_at, record.modified, base_url, account.handle),
    }
    return UserIn.model_validate(document)


def _meta(kind: str, created: str, modified: str, base_url: str, handle: str) -> dict[str, Any]:
    return {
        "resourceType": kind,
        "created": created or modified,
        "lastModified": modified,
        "location": f"{base_url}{BASE}/{kind}s/{handle}",
    }


# --- groups ------------------------------------------------------------------------------------
def team_for(display: str | None) -> str:
    """The handle of the team a Group maps to: its displayName under the handle rules
    (`ops`, `Ops` and `OPS` name the team `ops`; `On-call Europe` the team `on_call_europe`)."""
    return _handle_of(display or "", f"displayName {display!r}")


def member_handles(group: Group) -> set[str]:
    """The member ids of a Group (ids are handles); only Users can be members."""
    found: set[str] = set()
    for member in group.members or ():
        if member.type not in (None, "User") or not member.value:
            raise InvalidValueException(
                detail=f"members: only Users can be members of a group, not {member.type or member.value!r}"
            )
        found.add(member.value)
    return found


def group_of(
    team: Account, record: DirectoryGroup, members: Iterable[Account], base_url: str
) -> Group:
    modified = record.modified
    document = {
        "id": team.handle,
        "externalId": record.external_id,
        "displayName": record.display_name or team.handle,
        "members": [
            {
                "value": m.handle,
                "$ref": f"{base_url}{BASE}/Users/{m.handle}",
                "type": "User",
            }
            for m in sorted(members, key=lambda a: a.handle)
        ]
        or None,
        "meta": _meta("Group", team.created_at, modified, base_url, team.handle),
    }
    return Group.model_validate(document)


# --- discovery ---------------------------------------------------------------------------------
def service_provider_config(base_url: str) -> ServiceProviderConfig:
    return ServiceProviderConfig.model_validate(
        {
            "patch": {"supported": True},
            "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": True, "maxResults": MAX_RESULTS},
            "changePassword": {"supported": False},
            "sort": {"supported": False},
            "etag": {"supported": False},
            "authenticationSchemes": [
                {
                    "type": "oauthbearertoken",
                    "name": "Bearer token",
                    "description": "Authorization: Bearer <MUSTER_SCIM_TOKEN>",
                    "primary": True,
                }
            ],
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": f"{base_url}{BASE}/ServiceProviderConfig",
            },
        }
    )


def resource_types(base_url: str) -> list[ResourceType]:
    found = []
    for model in (User, Group):
        rt = ResourceType.from_resource(model)
        rt.meta = Meta(
            resource_type="ResourceType", location=f"{base_url}{BASE}/ResourceTypes/{rt.id}"
        )
        found.append(rt)
    return found


def _only(attributes: list[Any], kept: set[str], sub: Mapping[str, set[str]]) -> list[Any]:
    chosen = []
    for attribute in attributes:
        if attribute.name not in kept:
            continue
        if attribute.name in sub and attribute.sub_attributes:
            attribute.sub_attributes = [
                s for s in attribute.sub_attributes if s.name in sub[attribute.name]
            ]
        chosen.append(attribute)
    return chosen


def schemas(base_url: str) -> list[Schema]:
    """The core User and Group schemas as Muster keeps them (the attributes it stores),
    and the schemas of the discovery resources."""
    user = User.to_schema()
    user.attributes = _only(
        user.attributes or [], _KEPT_USER, {"name": _KEPT_NAME, "emails": _KEPT_EMAIL}
    )
    group = Group.to_schema()
    group.attributes = _only(group.attributes or [], _KEPT_GROUP, {"members": _KEPT_MEMBER})
    found = [user, group]
    found += [m.to_schema() for m in (ServiceProviderConfig, ResourceType, Schema)]
    for schema in found:
        schema.meta = Meta(resource_type="Schema", location=f"{base_url}{BASE}/Schemas/{schema.id}")
    return found
