"""The OpenAI Responses API of the fake workspace (``POST /serving-endpoints/responses``).

Codex speaks only this wire API, and Databricks serves it for OpenAI models at
``/serving-endpoints/responses``. The reply has the shapes of the real API: a ``response``
object as JSON, or with ``"stream": true`` the typed server-sent events
(``response.created`` ... ``response.completed``, each with ``sequence_number``) that Codex
and the ``openai`` SDK read. Authentication, fault injection and request recording are the
workspace's own (``FakeWorkspace._serve``), so a revoked token gets the same 403 here.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

# fake_workspace imports this module only inside make_app, so this import is not circular.
from coda_aio.testing.fake_workspace import ApiError, FakeWorkspace, prompt_size, reply_text

RESPONSES_PATH = "/serving-endpoints/responses"
ROUTE_RESPONSES = "serving.responses"


def add_routes(app: web.Application, workspace: FakeWorkspace) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await openai_responses(workspace, request)

    app.router.add_route("POST", RESPONSES_PATH, handler, name=ROUTE_RESPONSES)


async def openai_responses(workspace: FakeWorkspace, request: web.Request) -> web.StreamResponse:
    workspace._serve(request)
    body = await workspace._json_body(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "BAD_REQUEST", "model: the name of a serving endpoint is required.")
    if not isinstance(body.get("input"), (str, list)):
        raise ApiError(400, "BAD_REQUEST", "input: a string or a list of input items is required.")
    text = reply_text(model)
    response_id, item_id = f"resp_{secrets.token_hex(12)}", f"msg_{secrets.token_hex(12)}"
    input_tokens, output_tokens = prompt_size(body), len(text.split())

    def response(status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        done = status == "completed"
        return {
            "id": response_id, "object": "response", "created_at": int(workspace.clock()), "status": status,
            "model": model, "output": output, "error": None, "incomplete_details": None,
            "instructions": body.get("instructions"), "metadata": {}, "parallel_tool_calls": True,
            "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "tools": [],
            "text": {"format": {"type": "text"}}, "truncation": "disabled", "store": bool(body.get("store", False)),
            "usage": {
                "input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            } if done else None,
        }

    def part(content: str) -> dict[str, Any]:
        return {"type": "output_text", "text": content, "annotations": [], "logprobs": []}

    def message(status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}

    final = response("completed", [message("completed", [part(text)])])
    if not body.get("stream"):
        return web.json_response(final)

    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    pieces = workspace._pieces(text)
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response("in_progress", [])},
        {"type": "response.in_progress", "response": response("in_progress", [])},
        {"type": "response.output_item.added", "output_index": 0, "item": message("in_progress", [])},
        {"type": "response.content_part.added", **where, "part": part("")},
    ]
    events += [{"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []} for piece in pieces]
    events += [
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part(text)},
        {"type": "response.output_item.done", "output_index": 0, "item": message("completed", [part(text)])},
        {"type": "response.completed", "response": final},
    ]
    numbered = [(event["type"], {**event, "sequence_number": n}) for n, event in enumerate(events)]
    first_delta = 4
    return await workspace._sse(request, numbered, delayed=lambda i: first_delta <= i < first_delta + len(pieces))
