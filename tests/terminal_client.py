"""A minimal client of the terminal WebSocket protocol, for end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp


async def open_terminal(http: aiohttp.ClientSession, base_url: str, headers: dict | None = None) -> str:
    async with http.post(f"{base_url}/api/sessions", json={}, headers=headers) as r:
        assert r.status == 201, await r.text()
        return (await r.json())["id"]


async def run_command(
    http: aiohttp.ClientSession, base_url: str, session_id: str, command: str, *, headers: dict | None = None,
    timeout: float = 15.0,
) -> str:
    """Type ``command`` into the session and return the output up to a unique end marker."""
    # Unique per call: the scrollback replayed on attach holds earlier calls' markers.
    tag = uuid.uuid4().hex[:12]
    marker = f"__coda_{tag}__"
    async with http.ws_connect(f"{base_url}/api/sessions/{session_id}/ws", headers=headers) as ws:
        # The marker is split in the typed line so that only the command's output contains it whole.
        await ws.send_bytes(b"0" + f"{command}; echo __coda_''{tag}__\r".encode())
        out = bytearray()
        async with asyncio.timeout(timeout):
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY and msg.data[:1] == b"0":
                    out += msg.data[1:]
                    if marker.encode() in out:
                        return out.decode(errors="replace")
                elif msg.type == aiohttp.WSMsgType.BINARY and msg.data[:1] == b"1":
                    event = json.loads(msg.data[1:])
                    if event.get("type") == "exit":
                        break
    raise AssertionError(f"no end marker in output: {out[-500:]!r}")
