"""JSON in and out of the web routes: request bodies, and errors a person can act on."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

# How long a JSON body (a few KiB at most) may take to arrive once its headers have: a client
# that stops halfway must not hold a connection and a handler for good.
BODY_TIMEOUT = 10.0


def json_error(status: int, message: str) -> web.Response:
    """Every error the API sends: ``{"error": message}``."""
    return web.json_response({"error": message}, status=status)


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


async def read_json_object(request: web.Request, *, allow_empty: bool = False) -> dict:
    """The body as a JSON object; raises a 400 with a message for anything else."""
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            raw = await request.read()  # bounded by the app's client_max_size (413 beyond it)
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            text=json.dumps({"error": f"The request body did not arrive within {BODY_TIMEOUT:g} s."}),
            content_type="application/json") from None
    if not raw.strip():
        if allow_empty:
            return {}
        raise _bad_request("The request body is empty; send a JSON object.")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _bad_request("The request body is not valid JSON.") from None
    except RecursionError:  # "[" x 5000: Python's parser recurses once per level
        raise _bad_request("The request body nests too deeply; send a flat JSON object.") from None
    if not isinstance(body, dict):
        raise _bad_request("The request body must be a JSON object.")
    return body
