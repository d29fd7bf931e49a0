"""/scim/v2: directory sync (SCIM 2.0) for a company directory, with MUSTER_SCIM_TOKEN.

Thin: parse with muster.api.scim, act with muster.api.directorysync, answer in
application/scim+json. SCIM is off (404) when MUSTER_SCIM_TOKEN is unset; a wrong token
is 401. Every refusal is a SCIM error body (app.py routes errors on these paths to
scim.from_exception / scim.from_api_error).
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Request
from scim2_models import (
    Context,
    Group,
    MutabilityException,
    NotFoundException,
    NotImplementedException,
    ResourceType,
    Schema,
    UnauthorizedException,
)
from starlette.responses import Response

from muster.api import directorysync, scim
from muster.api.state import state


class ScimOff(NotFoundException):
    _default_detail = "SCIM is off: MUSTER_SCIM_TOKEN is not set"


async def directory(request: Request) -> None:
    """The directory's bearer token, compared in constant time."""
    expected = state(request).settings.scim_token
    if expected is None:
        raise ScimOff()
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), expected.encode()
    ):
        raise UnauthorizedException(detail="Authorization must be `Bearer <MUSTER_SCIM_TOKEN>`")


router = APIRouter(prefix=scim.BASE, dependencies=[Depends(directory)], include_in_schema=False)


# --- discovery -----------------------------------------------------------------------------------
@router.get("/ServiceProviderConfig")
async def service_provider_config(request: Request) -> Response:
    return scim.resource(scim.service_provider_config(state(request).settings.public_url))


@router.get("/ResourceTypes")
async def resource_types(request: Request) -> Response:
    found = scim.resource_types(state(request).settings.public_url)
    return scim.listing(ResourceType, found, len(found), 0, None)


@router.get("/ResourceTypes/{name}")
async def resource_type(name: str, request: Request) -> Response:
    found: list[ResourceType] = scim.resource_types(state(request).settings.public_url)
    for one in found:
        if one.id == name:
            return scim.resource(one)
    raise NotFoundException(detail=f"no resource type {name!r}")


@router.get("/Schemas")
async def schemas(request: Request) -> Response:
    found = scim.schemas(state(request).settings.public_url)
    return scim.listing(Schema, found, len(found), 0, None)


@router.get("/Schemas/{schema_id}")
async def schema(schema_id: str, request: Request) -> Response:
    found: list[Schema] = scim.schemas(state(request).settings.public_url)
    for one in found:
        if one.id == schema_id:
            return scim.resource(one)
    raise NotFoundException(detail=f"no schema {schema_id!r}")


@router.post("/.search")
async def search_everything() -> Response:
    raise NotImplementedException(
        detail="searching several resource types at once is not supported: "
        "POST /Users/.search or /Groups/.search"
    )


# --- users ---------------------------------------------------------------------------------------
@router.get("/Users")
async def list_users(request: Request) -> Response:
    query = scim.search(request.query_params, scim.UserIn)
    users, total, start = await directorysync.search_people(state(request), query)
    return scim.listing(scim.UserIn, users, total, start, query)


@router.post("/Users/.search")
async def search_users(request: Request) -> Response:
    query = scim.search_body(await request.body(), scim.UserIn)
    users, total, start = await directorysync.search_people(state(request), query)
    return scim.listing(scim.UserIn, users, total, start, query)


@router.post("/Users")
async def create_user(request: Request) -> Response:
    st = state(request)
    user = scim.parse(await request.body(), scim.UserIn, Context.RESOURCE_CREATION_REQUEST)
    created = await directorysync.create_person(st, user)
    found = directorysync.user_of(created, st.settings.public_url)
    return scim.resource(found, 201, ctx=Context.RESOURCE_CREATION_RESPONSE)


@router.get("/Users/{user_id}")
async def get_user(user_id: str, request: Request) -> Response:
    st = state(request)
    query = scim.search(request.query_params, scim.UserIn)
    found = await directorysync.existing_person(st, user_id)
    return scim.resource(directorysync.user_of(found, st.settings.public_url), params=query)


@router.put("/Users/{user_id}")
async def replace_user(user_id: str, request: Request) -> Response:
    st = state(request)
    current = await directorysync.existing_person(st, user_id)
    user = scim.parse(await request.body(), scim.UserIn, Context.RESOURCE_REPLACEMENT_REQUEST)
    after = await directorysync.replace_person(st, current, user)
    found = directorysync.user_of(after, st.settings.public_url)
    return scim.resource(found, ctx=Context.RESOURCE_REPLACEMENT_RESPONSE)


@router.patch("/Users/{user_id}")
async def patch_user(user_id: str, request: Request) -> Response:
    st = state(request)
    current = await directorysync.existing_person(st, user_id)
    operations = scim.patch_op(await request.body(), scim.UserIn)
    user = directorysync.user_of(current, st.settings.public_url)
    scim.apply_patch(operations, user)
    if user.active is None:
        raise MutabilityException(
            detail="active cannot be removed: a person is active or not; replace it with "
            "true or false"
        )
    after = await directorysync.replace_person(st, current, user)
    found = directorysync.user_of(after, st.settings.public_url)
    return scim.resource(found, ctx=Context.RESOURCE_PATCH_RESPONSE)


@router.delete("/Users/{user_id}", status_code=204)
async def delete_user(user_id: str, request: Request) -> Response:
    st = state(request)
    await directorysync.remove_person(st, await directorysync.existing_person(st, user_id))
    return Response(status_code=204)


# --- groups --------------------------------------------------------------------------------------
@router.get("/Groups")
async def list_groups(request: Request) -> Response:
    query = scim.search(request.query_params, Group)
    groups, total, start = await directorysync.search_teams(state(request), query)
    return scim.listing(Group, groups, total, start, query)


@router.post("/Groups/.search")
async def search_groups(request: Request) -> Response:
    query = scim.search_body(await request.body(), Group)
    groups, total, start = await directorysync.search_teams(state(request), query)
    return scim.listing(Group, groups, total, start, query)


@router.post("/Groups")
async def create_group(request: Request) -> Response:
    st = state(request)
    group = scim.parse(await request.body(), Group, Context.RESOURCE_CREATION_REQUEST)
    created = await directorysync.create_team(st, group)
    found = await directorysync.group_of(st, created)
    return scim.resource(found, 201, ctx=Context.RESOURCE_CREATION_RESPONSE)


@router.get("/Groups/{group_id}")
async def get_group(group_id: str, request: Request) -> Response:
    st = state(request)
    query = scim.search(request.query_params, Group)
    found = await directorysync.existing_team(st, group_id)
    return scim.resource(await directorysync.group_of(st, found), params=query)


@router.put("/Groups/{group_id}")
async def replace_group(group_id: str, request: Request) -> Response:
    st = state(request)
    current = await directorysync.existing_team(st, group_id)
    group = scim.parse(await request.body(), Group, Context.RESOURCE_REPLACEMENT_REQUEST)
    after = await directorysync.replace_team(st, current, group)
    found = await directorysync.group_of(st, after)
    return scim.resource(found, ctx=Context.RESOURCE_REPLACEMENT_RESPONSE)


@router.patch("/Groups/{group_id}")
async def patch_group(group_id: str, request: Request) -> Response:
    st = state(request)
    current = await directorysync.existing_team(st, group_id)
    operations = scim.patch_op(await request.body(), Group)
    group = await directorysync.group_of(st, current)
    scim.apply_patch(operations, group)
    after = await directorysync.replace_team(st, current, group)
    found = await directorysync.group_of(st, after)
    return scim.resource(found, ctx=Context.RESOURCE_PATCH_RESPONSE)


@router.delete("/Groups/{group_id}", status_code=204)
async def delete_group(group_id: str, request: Request) -> Response:
    st = state(request)
    await directorysync.remove_team(st, await directorysync.existing_team(st, group_id))
    return Response(status_code=204)
