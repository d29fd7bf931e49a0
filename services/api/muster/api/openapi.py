"""Describe msgspec-typed routes in /openapi.json.

Routes read and write raw bytes with msgspec (faster than pydantic, and the same Structs the
rest of Muster uses), so FastAPI cannot see their bodies. `body()` and `responds()` put the
msgspec JSON Schemas into each route's OpenAPI entry, and `install()` adds the components and
the bearer security scheme, so schemathesis and generated clients see the whole contract.
"""

from __future__ import annotations

import types
from typing import Any

import msgspec
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from muster.api.schemas import ErrorOut

_REF = "#/components/schemas/{name}"
_types: set[Any] = {ErrorOut}

ERROR_STATUSES = {
    400: "Body is not valid JSON, or not an object",
    401: "Missing or unknown token",
    403: "Authenticated but not allowed",
    404: "No such thing, or not visible to the caller",
    406: "Not for this Muster (an inbound email to no reply address of ours): do not retry",
    409: "Conflict (handle taken, idempotency key reused)",
    410: "No longer accepted (a roll-call past its deadline's grace)",
    413: "Body over the size limit",
    422: "Well-formed but invalid",
    429: "Rate limit or backpressure; see Retry-After",
    503: "Redis unavailable; see Retry-After",
}


def _ref(tp: Any) -> dict[str, Any]:
    _types.add(tp)
    return {"$ref": _REF.format(name=tp.__name__)}


def _schema(tp: Any) -> dict[str, Any]:
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _ref(tp)
    origin = getattr(tp, "__origin__", None)
    if origin is list:
        return {"type": "array", "items": _schema(tp.__args__[0])}
    if isinstance(tp, types.UnionType):  # e.g. the tagged union of events (audit)
        return {"anyOf": [_schema(arg) for arg in tp.__args__]}
    raise TypeError(f"cannot describe {tp!r}")


def body(tp: type[msgspec.Struct], *, required: bool = True) -> dict[str, Any]:
    """openapi_extra for a route taking a JSON body of type `tp`."""
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": _ref(tp)}},
        }
    }


def responds(
    status: int,
    tp: Any = None,
    *,
    errors: tuple[int, ...] = (),
    description: str = "Success",
    media_type: str = "application/json",
) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: its success body (None: no body) and the errors it can give."""
    out: dict[int | str, dict[str, Any]] = {}
    ok: dict[str, Any] = {"description": description}
    if tp is not None:
        schema = tp if isinstance(tp, dict) else _schema(tp)  # a dict is a schema already
        ok["content"] = {media_type: {"schema": schema}}
    out[status] = ok
    for code in sorted({*errors, 503}):
        out[code] = {
            "description": ERROR_STATUSES[code],
            "content": {"application/json": {"schema": _ref(ErrorOut)}},
        }
    return out


SECURED: dict[str, Any] = {"security": [{"bearer": []}]}
"""openapi_extra for routes that need `Authorization: Bearer <token>`."""


def merge(*parts: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return merged


def install(app: FastAPI) -> None:
    """Replace app.openapi with one that includes every msgspec component."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _, components = msgspec.json.schema_components(
            sorted(_types, key=lambda t: t.__name__), ref_template=_REF
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(components)
        # FastAPI documents its own 422 body for parameter errors; ours answer in ErrorOut.
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                unprocessable = operation.get("responses", {}).get("422")
                if unprocessable is not None:
                    unprocessable["content"] = {"application/json": {"schema": _ref(ErrorOut)}}
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "an account token"}
        }
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
