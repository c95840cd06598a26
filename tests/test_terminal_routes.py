"""Terminal HTTP and WebSocket routes on a real aiohttp server: real sockets, PTYs and bash."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from coda_aio.routes import terminal as terminal_routes
from coda_aio.routes.app_keys import ROTATOR, SESSIONS
from coda_aio.config import Settings
from coda_aio.access.origin import same_origin_only
from coda_aio.pty_bridge import SessionManager
from coda_aio.terminal.environment import build_env
from coda_aio.rotator import Rotator
from coda_aio.credentials.token_store import TokenStore

PYTHON = sys.executable
TEN_MB = 10 * 1024 * 1024


def make_app(home: Path, max_sessions: int = 4, **limits) -> web.Application:
    app = web.Application(middlewares=[same_origin_only])  # as create_app has it
    app[SESSIONS] = SessionManager(
        max_sessions=max_sessions,
        idle_timeout=60,
        cwd=home / "projects",
        env=build_env(os.environ, {"HOME": str(home)}),
        kill_grace=0.3,
        **limits,
    )
    # As create_app has it; with no workspace, creating a terminal does not check the token.
    app[ROTATOR] = Rotator(Settings(home=home), TokenStore(home / ".databrickscfg", "coda", None))
    terminal_routes.add_routes(app, heartbeat=Settings(home=home).ws_heartbeat)

    async def sessions_ctx(app: web.Application):
        await app[SESSIONS].start()
        yield
        await app[SESSIONS].close()

    app.cleanup_ctx.append(sessions_ctx)
    return app


@pytest.fixture
async def client(aiohttp_client, home):
    return await aiohttp_client(make_app(home))


class Term:
    """A WebSocket client speaking the terminal protocol, keeping what it receives."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.output = bytearray()
        self.events: list[dict] = []
        self.closed = False

    @classmethod
    async def open(cls, client, session_id: str, **kwargs) -> Term:
        return cls(await client.ws_connect(f"/api/sessions/{session_id}/ws", **kwargs))

    async def type(self, data: str | bytes) -> None:
        await self.ws.send_bytes(b"0" + (data.encode() if isinstance(data, str) else data))

    async def resize(self, payload: object) -> None:
        await self.ws.send_bytes(b"1" + json.dumps(payload).encode())

    async def receive_one(self) -> None:
        message = await self.ws.receive()
        if message.type is WSMsgType.BINARY:
            kind, payload = message.data[:1], message.data[1:]
            if kind == b"0":
                self.output += payload
            elif kind == b"1":
                self.events.append(json.loads(payload))
            else:
                raise AssertionError(f"unknown frame type {kind!r}")
        elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            self.closed = True
        else:
            raise AssertionError(f"unexpected message {message.type}: {message.data!r}")

    async def read_until(self, needle: bytes, timeout: float = 5.0, start: int = 0) -> None:
        async with asyncio.timeout(timeout):
            # Search only what is new: a flood must not make this quadratic.
            while self.output.find(needle, start) < 0:
                if self.closed:
                    raise AssertionError(f"socket closed before {needle!r}; got {bytes(self.output[-300:])!r}")
                start = max(start, len(self.output) - len(needle))
                await self.receive_one()

    async def run(self, command: str, n: int = 1, timeout: float = 5.0) -> bytes:
        """Type ``command``; return its output, up to a marker the echoed command can't contain."""
        start = len(self.output)
        await self.type(f"{command}; printf 'M%sM' {n}\r")
        await self.read_until(f"M{n}M".encode(), timeout, start)
        tail = bytes(self.output[start:])
        return tail[: tail.index(f"M{n}M".encode())]

    async def interrupt(self) -> None:
        """Ctrl-C, then wait for its echo: the interrupt flushes input typed before it is processed."""
        start = len(self.output)
        await self.type(b"\x03")
        await self.read_until(b"^C", timeout=10, start=start)

    async def read_until_closed(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not self.closed:
                await self.receive_one()

    async def read_quiet(self, quiet: float = 0.2, timeout: float = 10.0) -> None:
        """Read until nothing has arrived for ``quiet`` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    await asyncio.wait_for(self.receive_one(), quiet)
                except asyncio.TimeoutError:
                    return


async def create(client, body: object = None, **kwargs) -> str:
    response = await client.post("/api/sessions", json=body, **kwargs)
    assert response.status == 201, await response.text()
    return (await response.json())["id"]


async def sessions_by_id(client) -> dict[str, dict]:
    response = await client.get("/api/sessions")
    assert response.status == 200
    return {entry["id"]: entry for entry in await response.json()}


def pid_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().split(b") ")[1][:1] != b"Z"
    except OSError:
        return False


async def test_create_list_attach_rename_delete(client):
    plain = await create(client)
    labelled = await create(client, {"label": "build", "cols": 100, "rows": 30})
    listed = await sessions_by_id(client)
    assert set(listed) == {plain, labelled}
    entry = listed[labelled]
    assert set(entry) == {"id", "label", "created_at", "clients", "process", "memory_bytes"}
    assert entry["label"] == "build" and entry["clients"] == 0 and entry["process"]["running"] is True

    term = await Term.open(client, labelled)
    assert b"30 100\r\n" in await term.run("stty size")
    assert (await sessions_by_id(client))[labelled]["clients"] == 1

    response = await client.patch(f"/api/sessions/{labelled}", json={"label": "tests"})
    assert response.status == 200 and (await response.json())["label"] == "tests"
    assert (await sessions_by_id(client))[labelled]["label"] == "tests"

    response = await client.delete(f"/api/sessions/{labelled}")
    assert response.status == 204
    await term.read_until_closed()
    assert term.events[-1]["type"] == "exit"
    assert not pid_alive(entry["process"]["pid"])
    assert set(await sessions_by_id(client)) == {plain}
    assert (await client.delete(f"/api/sessions/{labelled}")).status == 404


@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("POST", "/api/sessions", b"{", 400),
        ("POST", "/api/sessions", b"\xff\xfe", 400),
        ("POST", "/api/sessions", b"[1, 2]", 400),
        ("POST", "/api/sessions", b'"text"', 400),
        ("POST", "/api/sessions", b'{"cols": "80"}', 400),
        ("POST", "/api/sessions", b'{"rows": true}', 400),
        ("POST", "/api/sessions", b'{"cols": 1.5}', 400),
        ("POST", "/api/sessions", b'{"label": 5}', 400),
        ("POST", "/api/sessions", b'{"label": "   "}', 400),
        ("POST", "/api/sessions", json.dumps({"label": "x" * 200}).encode(), 400),
        ("POST", "/api/sessions", b'{"label": "a\\u0000b"}', 400),
        ("POST", "/api/sessions", b'{"replaces": 7}', 400),
        ("POST", "/api/sessions", json.dumps({"replaces": "x" * 65}).encode(), 400),
        ("PATCH", "/api/sessions/nope", b'{"label": "x"}', 404),
        ("DELETE", "/api/sessions/nope", b"", 404),
        ("GET", "/api/sessions/nope/ws", b"", 404),
        ("GET", "/api/sessions/../../etc/passwd/ws", b"", 404),
    ],
)
async def test_bad_requests_get_a_4xx_with_a_message(client, method, path, body, status):
    response = await client.request(method, path, data=body, headers={"Content-Type": "application/json"})
    assert response.status == status
    if response.content_type == "application/json":
        assert isinstance((await response.json())["error"], str)
    else:
        assert status == 404  # aiohttp's own "no route" answer in this bare test app


async def test_bad_rename_and_non_websocket_get(client):
    session_id = await create(client)
    for body in (b"nope", b"{}", b'{"label": 3}', b'{"label": ""}'):
        response = await client.patch(f"/api/sessions/{session_id}", data=body)
        assert response.status == 400
        assert (await response.json())["error"]
    response = await client.get(f"/api/sessions/{session_id}/ws")
    assert response.status == 400 and "WebSocket" in (await response.json())["error"]


async def test_absurd_sizes_are_clamped(client):
    session_id = await create(client, {"cols": 10**9, "rows": -3})
    term = await Term.open(client, session_id)
    assert b"1 1000\r\n" in await term.run("stty size")


async def test_session_limit_answers_429(aiohttp_client, home):
    client = await aiohttp_client(make_app(home, max_sessions=2))
    first = await create(client)
    await create(client)
    response = await client.post("/api/sessions")
    assert response.status == 429
    assert "CODA_MAX_SESSIONS" in (await response.json())["error"]
    assert (await client.delete(f"/api/sessions/{first}")).status == 204
    await create(client)


async def test_a_lost_session_is_replaced_once_whoever_asks_and_in_whatever_order(client):
    """After a restart every page asks for a stand-in of each session it had: concurrent and
    late askers for one lost id get the same new shell, and no more shells than lost ones."""
    lost = ["lost-one-AAAAAAAA", "lost-two-BBBBBBBB"]
    asks = [lost[0], lost[1], lost[0], lost[1], lost[0]]  # two pages, one asking twice, at once
    answers = await asyncio.gather(*(client.post("/api/sessions", json={"replaces": id, "label": "Terminal 1"}) for id in asks))
    bodies = [await answer.json() for answer in answers]
    ids = [body["id"] for body in bodies]
    assert ids[0] == ids[2] == ids[4] and ids[1] == ids[3] and ids[0] != ids[1]
    assert sorted(answer.status for answer in answers) == [200, 200, 200, 201, 201]
    assert set(await sessions_by_id(client)) == {ids[0], ids[1]}
    # A late page, after the others: still the same one.
    late = await client.post("/api/sessions", json={"replaces": lost[1]})
    assert late.status == 200 and (await late.json())["id"] == ids[1]
    # A live session stands in for itself; an ended stand-in is replaced anew.
    itself = await client.post("/api/sessions", json={"replaces": ids[0]})
    assert itself.status == 200 and (await itself.json())["id"] == ids[0]
    assert (await client.delete(f"/api/sessions/{ids[1]}")).status == 204
    again = await client.post("/api/sessions", json={"replaces": lost[1]})
    assert again.status == 201 and (await again.json())["id"] not in ids
    assert len(await sessions_by_id(client)) == 2


async def test_resize_frames_and_garbage_frames(client):
    term = await Term.open(client, await create(client))
    await term.resize({"cols": 132, "rows": 43})
    assert b"43 132\r\n" in await term.run("stty size", 1)
    await term.resize({"cols": 5000, "rows": 0})
    assert b"1 1000\r\n" in await term.run("stty size", 2)
    for frame in (b"1{nope", b"1[1, 2]", b'1{"cols": true, "rows": 5}', b'1{"cols": 1e999, "rows": 5}',
                  b"1\xff", b"9unknown", b"", b"2", b"3"):
        await term.ws.send_bytes(frame)
    await term.ws.send_str("0echo text frames are ignored\r")
    out = await term.run("stty size; echo fine-$((7*6))", 3)
    assert b"1 1000\r\n" in out and b"fine-42" in out
    assert b"text frames" not in term.output


async def test_exit_code_event_then_close(client):
    session_id = await create(client)
    term = await Term.open(client, session_id)
    await term.type("exit 7\r")
    await term.read_until_closed()
    assert term.events[-1] == {"type": "exit", "code": 7}
    assert session_id not in await sessions_by_id(client)
    assert (await client.get(f"/api/sessions/{session_id}/ws")).status == 404


async def test_two_clients_share_a_session_and_a_third_gets_the_scrollback(client):
    session_id = await create(client)
    first, second = await Term.open(client, session_id), await Term.open(client, session_id)
    assert b"both-8" in await first.run("echo both-$((2*4))")
    await second.read_until(b"both-8")
    assert (await sessions_by_id(client))[session_id]["clients"] == 2
    await first.ws.close()
    await second.ws.close()

    third = await Term.open(client, session_id)
    await third.read_until(b"both-8")  # replayed from the scrollback
    assert b"later-9" in await third.run("echo later-$((3*3))", 2)
    assert third.output.index(b"both-8") < third.output.index(b"later-9")


async def test_multibyte_output_arrives_byte_for_byte(client):
    term = await Term.open(client, await create(client))
    program = "import sys; sys.stdout.buffer.write(\"\\u00e9\\u2713\\U0001f642\".encode() * 100000)"
    await term.type(f"printf 'S%sS' 1; {PYTHON} -c '{program}'; printf 'E%sE' 1\r")
    await term.read_until(b"E1E", timeout=20)
    received = bytes(term.output).split(b"S1S", 1)[1].split(b"E1E", 1)[0]
    assert received == "é✓🙂".encode() * 100000


async def test_a_ten_megabyte_paste_reaches_the_program(client):
    term = await Term.open(client, await create(client))
    # Raw mode: no 4 KiB canonical line limit, no echo of 10 MB back to us.
    await term.type("stty raw -echo; printf 'R%sR' 1; head -c 10485760 | wc -c; stty sane\r")
    await term.read_until(b"R1R")
    await term.type(b"x" * TEN_MB)
    await term.read_until(b"10485760", timeout=30)
    assert b"ok-1" in await term.run("echo ok-$((0+1))", 2)


async def test_pause_and_resume_frames(client):
    session_id = await create(client)
    term, other = await Term.open(client, session_id), await Term.open(client, session_id)
    await term.type("yes\r")
    await term.read_until(b"y\r\ny\r\ny\r\n")
    # Paused and resumed: it keeps up again (a paused socket would be dropped once more than
    # its backlog limit, 5 MB here, piled up for it while the other one reads on).
    await term.ws.send_bytes(b"2")
    await term.ws.send_bytes(b"3")
    await asyncio.gather(*(reader.read_until(b"y\r\n" * 10, timeout=20, start=len(reader.output) + 10 * 1024 * 1024)
                           for reader in (term, other)))
    # Paused for good: only this socket stops; the other reads on, and this one is dropped.
    await term.ws.send_bytes(b"2")
    await other.read_until(b"y\r\n" * 10, timeout=20, start=len(other.output) + 30 * 1024 * 1024)
    await term.read_until_closed(timeout=20)
    assert term.events[-1]["type"] == "dropped" and "behind" in term.events[-1]["reason"]
    await other.interrupt()
    assert b"done-5" in await other.run("echo done-$((2+3))", timeout=10)


async def raw_websocket(client, session_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A hand-made WebSocket handshake, so the test can later drop the TCP connection abruptly."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /api/sessions/{session_id}/ws HTTP/1.1\r\nHost: {client.server.host}:{client.server.port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def test_a_client_vanishing_mid_stream_harms_nobody(client):
    flooding, quiet = await create(client), await create(client)
    starter = await Term.open(client, flooding)
    await starter.type("yes\r")
    await starter.read_until(b"y\r\ny\r\n")
    await starter.ws.close()

    reader, writer = await raw_websocket(client, flooding)
    await reader.readexactly(200_000)
    writer.transport.abort()  # RST, no close frame
    writer.close()

    other = await Term.open(client, quiet)
    assert b"alive-3" in await other.run("echo alive-$((1+2))")

    again = await Term.open(client, flooding)
    await again.read_until(b"y\r\n")
    await again.interrupt()
    assert b"stopped-4" in await again.run("echo stopped-$((2+2))", timeout=10)
    async with asyncio.timeout(5):
        while (await sessions_by_id(client))[flooding]["clients"] != 1:
            await asyncio.sleep(0.05)


async def test_a_socket_that_never_reads_is_dropped_and_holds_up_nobody(client):
    session_id = await create(client)
    good = await Term.open(client, session_id)
    await good.run("true")
    reader, writer = await raw_websocket(client, session_id)  # handshakes, then never reads
    try:
        flood = f"{PYTHON} -c 'import sys; sys.stdout.write((\"z\" * 99 + \"\\n\") * 300000)'"  # 30 MB
        assert b"zzz" in await good.run(flood, 2, timeout=60)
        async with asyncio.timeout(10):  # the stuck socket was dropped and cut
            while (await sessions_by_id(client))[session_id]["clients"] != 1:
                await asyncio.sleep(0.05)
        assert b"after-3" in await good.run("echo after-$((1+2))", 3)
    finally:
        writer.close()


async def test_the_server_pings_idle_sockets(make_settings, serve, http):
    url, _app = await serve(make_settings(ws_heartbeat=0.2))
    async with http.post(f"{url}/api/sessions", json={}) as response:
        session_id = (await response.json())["id"]
    ws = await http.ws_connect(f"{url}/api/sessions/{session_id}/ws", autoping=False)
    try:
        pings = 0
        async with asyncio.timeout(10):
            while pings < 2:  # a second ping: they keep coming while the socket idles
                message = await ws.receive()
                if message.type is WSMsgType.PING:
                    pings += 1
                    await ws.pong(message.data)
                else:
                    assert message.type is WSMsgType.BINARY, message
        assert not ws.closed
    finally:
        await ws.close()


async def test_cross_origin_requests_are_refused(client):
    session_id = await create(client)
    own = f"http://{client.server.host}:{client.server.port}"
    evil = {"Origin": "http://evil.example"}

    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    response = await client.get(f"/api/sessions/{session_id}/ws", headers={**upgrade, **evil})
    assert response.status == 403 and "cross-origin" in (await response.json())["error"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(f"/api/sessions/{session_id}/ws", headers={"Origin": "null"})
    assert refused.value.status == 403
    assert (await client.post("/api/sessions", headers=evil)).status == 403
    assert (await client.delete(f"/api/sessions/{session_id}", headers=evil)).status == 403
    assert (await client.patch(f"/api/sessions/{session_id}", json={"label": "x"}, headers=evil)).status == 403
    assert session_id in await sessions_by_id(client)

    same_origin = await Term.open(client, session_id, headers={"Origin": own})
    assert b"same-1" in await same_origin.run("echo same-$((0+1))")
    behind_proxy = await Term.open(
        client, session_id,
        headers={"Origin": "https://coda-123.aws.databricksapps.com",
                 "X-Forwarded-Host": "coda-123.aws.databricksapps.com"},
    )
    assert b"proxied-2" in await behind_proxy.run("echo proxied-$((1+1))", 2)


async def test_token_broadcast_reaches_every_socket(client):
    terms = [await Term.open(client, await create(client)) for _ in range(2)]
    for term in terms:
        await term.run("true")  # attached and replayed
    client.server.app[SESSIONS].broadcast({"type": "token", "state": "invalid"})
    for term in terms:
        async with asyncio.timeout(5):
            while {"type": "token", "state": "invalid"} not in term.events:
                await term.receive_one()


async def test_shutdown_says_goodbye_closes_sockets_and_ends_shells(home):
    server = TestServer(make_app(home))
    await server.start_server()
    closed = False
    try:
        async with aiohttp.ClientSession() as http:
            response = await http.post(server.make_url("/api/sessions"))
            session_id = (await response.json())["id"]
            entry = (await (await http.get(server.make_url("/api/sessions"))).json())[0]
            term = Term(await http.ws_connect(server.make_url(f"/api/sessions/{session_id}/ws")))
            await term.run("true")
            reading = asyncio.ensure_future(term.read_until_closed(timeout=10))
            await asyncio.wait_for(server.close(), 10)
            closed = True
            await reading
            assert {"type": "shutting_down"} in term.events
            assert not pid_alive(entry["process"]["pid"])
    finally:
        if not closed:
            await server.close()


async def test_a_client_may_ask_for_a_shorter_replay_and_bad_values_are_a_400(client):
    """A slow link asks for less scrollback (?replay=BYTES) so it attaches soon."""
    session_id = await create(client)
    first = await Term.open(client, session_id)
    await first.run(f"{sys.executable} -c \"print(('x' * 99 + chr(10)) * 2000); print('tail-' + 'mark')\"", timeout=15)
    await first.ws.close()

    async def replay(**params) -> Term:
        term = await Term.open(client, session_id, params=params)
        async with asyncio.timeout(10):
            while not any(e["type"] == "replay_end" for e in term.events):
                await term.receive_one()
        return term

    short = await replay(replay="3000")
    assert len(short.output) <= 3000 and b"tail-mark" in short.output
    whole = await replay()
    assert len(whole.output) > 100 * 2000  # without it, the whole scrollback
    for bad in ("-1", "lots", "1e6"):
        async with client.get(f"/api/sessions/{session_id}/ws", params={"replay": bad},
                              headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                                       "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as r:
            assert r.status == 400 and "replay" in (await r.json())["error"]
    for term in (short, whole):
        await term.ws.close()
