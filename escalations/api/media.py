"""Request media types: a route that reads a JSON body takes ``application/json`` (or a ``+json``
type) and nothing else.

A body sent as another type (``text/plain``, a form, none declared) is answered 415 with a
problem document before anything reads it, instead of the field errors of a body that was
never parsed; malformed JSON is a 400 (``escalations.api.problems``). The check runs once
the caller is known, so a request without a valid token gets its 401 whatever it sends: every
scope check (``deps.Requires``) ends with it, and a signed webhook calls it once its signature
holds. A route without a JSON body is left alone.
"""

from __future__ import annotations

import email.message

from fastapi import Request, params
from fastapi.routing import APIRoute

from escalations.api.problems import ProblemError

JSON = "application/json"


def reads_json(route: APIRoute) -> bool:
    """Whether the route's body is JSON: a body parameter that is not a form, or a raw body
    documented as JSON (a webhook that verifies the bytes before parsing them)."""
    body = getattr(route, "body_field", None)
    if body is not None:
        return not isinstance(body.field_info, params.Form)
    documented = ((route.openapi_extra or {}).get("requestBody") or {}).get("content") or {}
    return JSON in documented


def is_json(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


async def json_body_only(request: Request) -> None:
    """415 when a route reading JSON gets a body of another (or no declared) media type."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not reads_json(route):
        return
    content_type = request.headers.get("content-type")
    if content_type is not None and is_json(content_type):
        return
    if not await request.body():
        return  # no body at all: the route's validation says what is missing
    declared = f"a body of type {content_type.split(';')[0].strip()!r}" if content_type else \
        "a body without a Content-Type"
    raise ProblemError(415, f"this route takes {JSON}, not {declared}", slug="unsupported-media-type",
                       headers={"Accept-Post": JSON}, supported=[JSON])
