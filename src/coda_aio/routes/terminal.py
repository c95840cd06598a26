"""HTTP and WebSocket routes for terminal sessions.

This module knows sockets and nothing of processes beyond the ``Session`` API: it turns
requests into calls on the app's ``SessionManager`` and WebSocket frames into
``write``/``resize``/``pause``/``resume`` (protocol in ``ws_protocol``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from coda_aio.terminal import ws_protocol
from coda_aio.capacity.monitor import CapacityMonitor, MemoryShortError
from coda_aio.routes.app_keys import CAPACITY, ROTATOR, SESSIONS
from coda_aio.pty_bridge import Session, SessionClosedError, SessionLimitError, SessionStartError
from coda_aio.web_json import json_error, read_json_object

log = logging.getLogger(__name__)

# A 10 MB paste arrives as one frame.
MAX_FRAME_BYTES = 16 * 1024 * 1024
GOODBYE_TIMEOUT = 2.0

_OPEN_SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("terminal_sockets", set)
_HEARTBEAT: web.AppKey[float] = web.AppKey("terminal_heartbeat", float)


def add_routes(app: web.Application, *, heartbeat: float) -> None:
    """``heartbeat``: how often each terminal socket is pinged (``Settings.ws_heartbeat``): proxies
    in front of the app, such as the Databricks Apps one, cut connections idle for a few minutes,
    and a peer that vanished without a FIN is noticed within about 1.5 heartbeats."""
    app[_OPEN_SOCKETS] = set()
    app[_HEARTBEAT] = heartbeat
    app.router.add_get("/api/sessions", list_sessions)
    app.router.add_post("/api/sessions", create_session)
    app.router.add_patch("/api/sessions/{id}", rename_session)
    app.router.add_delete("/api/sessions/{id}", delete_session)
    app.router.add_get("/api/sessions/{id}/ws", attach_socket)
    app.on_shutdown.append(_close_sockets)


class _BadRequest(Exception):
    pass


# --- HTTP ---------------------------------------------------------------------------


async def list_sessions(request: web.Request) -> web.Response:
    capacity = request.app.get(CAPACITY)
    return web.json_response([describe(session, capacity) for session in request.app[SESSIONS]])


def describe(session: Session, capacity: CapacityMonitor | None = None) -> dict[str, Any]:
    return {
        "id": session.id,
        "label": session.label,
        "created_at": session.created_at,
        "clients": session.clients,
        "process": session.process,
        # Its processes' memory at the last sample (PSS; RSS while memory is short); None before the first.
        "memory_bytes": None if capacity is None else capacity.session_memory(session.id),
    }


async def create_session(request: web.Request) -> web.Response:
    try:
        body = await read_json_object(request, allow_empty=True)
        label = body.get("label")
        if label is not None and not isinstance(label, str):
            raise _BadRequest("label must be a string")
        cols = _size(body, "cols", 80)
        rows = _size(body, "rows", 24)
        replaces = body.get("replaces")
        await request.app[ROTATOR].confirm()  # a dead token turns invalid: terminals ask for a new one
        sessions = request.app[SESSIONS]
        capacity = request.app.get(CAPACITY)
        if capacity is not None and (replaces is None or not sessions.has_stand_in(replaces)):
            await capacity.admit()  # a stand-in that already runs takes no more memory
        if replaces is None:
            session, created = await sessions.create(label=label, cols=cols, rows=rows), True
        else:
            # A page whose session was lost (a restart): every page asking for the same lost
            # session gets the same new one, so each lost shell is replaced exactly once.
            session, created = await sessions.replacement(replaces, label=label, cols=cols, rows=rows)
    except (_BadRequest, ValueError) as e:
        return json_error(400, str(e))
    except MemoryShortError as e:
        return web.json_response({"error": str(e), **e.details}, status=429)
    except SessionLimitError as e:
        return json_error(429, str(e))
    except SessionStartError as e:
        return json_error(503, str(e))
    return web.json_response({"id": session.id, "label": session.label}, status=201 if created else 200)


async def rename_session(request: web.Request) -> web.Response:
    session = request.app[SESSIONS].get(request.match_info["id"])
    if session is None:
        return _unknown_session()
    try:
        body = await read_json_object(request, allow_empty=True)
        if "label" not in body:
            raise _BadRequest('expected a JSON body like {"label": "build"}')
        session.rename(body["label"])
    except (_BadRequest, ValueError) as e:
        return json_error(400, str(e))
    return web.json_response(describe(session, request.app.get(CAPACITY)))


async def delete_session(request: web.Request) -> web.Response:
    if not await request.app[SESSIONS].delete(request.match_info["id"]):
        return _unknown_session()
    return web.Response(status=204)


def _size(body: dict[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadRequest(f"{name} must be a whole number")
    return value  # the session clamps it to 1..1000


def _unknown_session() -> web.Response:
    return json_error(404, "no such terminal session; it may have ended. List them with GET /api/sessions")


# --- WebSocket ----------------------------------------------------------------------


class SocketClient:
    """A WebSocket seen by a session: output and events become typed binary frames."""

    __slots__ = ("_ws", "_request")

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self._ws = ws
        self._request = request

    async def send_output(self, data: bytes) -> None:
        await self._ws.send_bytes(ws_protocol.encode_output(data))

    async def send_event(self, event: dict[str, Any]) -> None:
        await self._ws.send_bytes(ws_protocol.encode_event(event))

    async def close(self) -> None:
        """The session dropped this client (it fell behind): close it, cutting it if it is stuck."""
        try:
            await asyncio.wait_for(
                self._ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"fell behind the terminal"), GOODBYE_TIMEOUT
            )
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            transport = self._request.transport
            if transport is not None:
                transport.abort()


async def attach_socket(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSIONS].get(request.match_info["id"])
    if session is None:
        return _unknown_session()
    ws = web.WebSocketResponse(
        heartbeat=request.app[_HEARTBEAT],
        max_msg_size=MAX_FRAME_BYTES,
        # Terminal output at tens of MB/s: deflating it costs more CPU than it saves on loopback.
        compress=False,
        timeout=GOODBYE_TIMEOUT,
    )
    if not ws.can_prepare(request).ok:
        return json_error(400, "this endpoint expects a WebSocket upgrade")
    # A client on a slow link asks for a shorter replay (?replay=BYTES) so that it attaches soon.
    raw_replay = request.query.get("replay")
    replay_bytes = None
    if raw_replay is not None:
        if not raw_replay.isdigit():
            return json_error(400, f"replay must be a number of bytes (0 or more), got {raw_replay!r}")
        replay_bytes = int(raw_replay)
    await ws.prepare(request)

    client = SocketClient(ws, request)
    sockets = request.app[_OPEN_SOCKETS]
    try:
        detach = session.attach(client, replay_bytes)
    except SessionClosedError:
        await client.send_event({"type": "exit", "code": session.process["exit_code"]})
        await ws.close()
        return ws
    sockets.add(ws)
    closer = asyncio.ensure_future(_close_when_ended(ws, session))
    try:
        async for message in ws:
            if message.type is WSMsgType.BINARY:
                await _handle_frame(session, client, message.data)
            elif message.type is WSMsgType.ERROR:
                break
            # Text frames are not part of the protocol and are ignored.
    finally:
        detach()
        sockets.discard(ws)
        if session.closed:
            # The closer is sending the close frame; cancelling it would cut the socket instead.
            await closer
        else:
            closer.cancel()
    return ws


async def _handle_frame(session: Session, client: SocketClient, frame: bytes) -> None:
    kind, payload = ws_protocol.decode(frame)
    if kind == ws_protocol.INPUT:
        session.focus(client)  # typing here: this is where the person is
        session.write(payload)
        # Stop reading the socket while a big paste is still on its way into the PTY.
        await session.drain()
    elif kind == ws_protocol.RESIZE:
        size = ws_protocol.parse_resize(payload)
        if size is not None:
            session.resize(*size)
    elif kind == ws_protocol.REPLY:
        session.write_reply(client, payload)
    elif kind == ws_protocol.FOCUS:
        session.focus(client)
    elif kind == ws_protocol.PAUSE:
        session.pause(client)
    elif kind == ws_protocol.RESUME:
        session.resume(client)


async def _close_when_ended(ws: web.WebSocketResponse, session: Session) -> None:
    await session.wait_closed()
    await ws.close(code=WSCloseCode.OK, message=b"terminal ended")


async def _close_sockets(app: web.Application) -> None:
    """On shutdown tell every terminal why it is going away, then close it."""
    await asyncio.gather(*(_say_goodbye(ws) for ws in list(app[_OPEN_SOCKETS])))


async def _say_goodbye(ws: web.WebSocketResponse) -> None:
    try:
        await asyncio.wait_for(_goodbye(ws), GOODBYE_TIMEOUT)
    except (asyncio.TimeoutError, ConnectionError, RuntimeError) as e:
        log.debug("could not close a terminal socket cleanly: %r", e)


async def _goodbye(ws: web.WebSocketResponse) -> None:
    await ws.send_bytes(ws_protocol.encode_event({"type": "shutting_down"}))
    await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
