"""Memory per terminal, and admitting sessions by memory under a container limit (issue 23).

1. Memory of an idle session (bash at its prompt) and of each real agent CLI (from
   .agents/bin, `make agents`) started in a coda terminal against the stand-in workspace and
   waiting at its prompt: PSS (what coda reports, shared pages split) and RSS, of the whole
   process tree.
2. Admission in a 2 GB memory cgroup (made here as root; skipped where that is not possible):
   sessions are opened one after another, each running a program that holds as much memory as
   the heaviest agent measured in part 1, until coda refuses one. Baseline in the same run:
   the fixed cap alone (CODA_SESSION_MEMORY_MB=0, CODA_MAX_SESSIONS=8), the behaviour before.

    .venv/bin/python bench/bench_capacity.py [--limit-mb 2048] [--skip-agents: each session holds 300 MB]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from coda_aio.capacity.process_tree import trees  # noqa: E402

MB = 1024 * 1024
KEY = "coda-bench-capacity-key-0123456789"
AGENTS = {  # binary -> what it shows once ready for a prompt (whitespace removed)
    "claude": "?forshortcuts", "codex": "AskCodextodoanything", "opencode": "Askanything", "gemini": "Typeyourmessage",
}
QUIET_ENV = {"OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_MODELS_FETCH": "1",
             "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1", "npm_config_offline": "true", "NO_UPDATE_NOTIFIER": "1"}


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def coda(home: Path, cgroup: Path | None = None, **env_extra: str):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "CODA_"))}
    env.update(HOME=str(home), CODA_INSTALL_AGENTS="0", CODA_WEB_TOKEN=KEY, PYTHONUNBUFFERED="1",
               **QUIET_ENV, **env_extra)
    join = (lambda: (cgroup / "cgroup.procs").write_text(str(os.getpid()))) if cgroup else None
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coda_aio", "--demo-workspace", "--port", str(port), "--proxy-port", str(free_port()),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, preexec_fn=join)
    bootstrap = None
    async with asyncio.timeout(60):
        while b"http://127.0.0.1:%d" % port not in (line := await server.stdout.readline()):
            assert line, "coda did not start"
            if line.strip().startswith(b"dapi"):
                bootstrap = line.strip().decode()
    drain = asyncio.ensure_future(server.stdout.read())
    if os.environ.get("BENCH_LOG"):
        drain.add_done_callback(lambda f: Path(os.environ["BENCH_LOG"]).write_bytes(f.result()) if not f.cancelled() else None)
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as http:
            url = f"http://127.0.0.1:{port}"
            if bootstrap:
                async with http.post(f"{url}/api/configure-pat", json={"token": bootstrap}) as r:
                    assert r.status == 200, await r.text()
            yield url, http, server.pid
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(server.wait(), 30)
        drain.cancel()


async def open_session(http, url) -> tuple[int, dict]:
    async with http.post(f"{url}/api/sessions", json={}) as r:
        return r.status, await r.json()


async def type_and_wait(http, url, sid: str, line: str, ready: str, timeout: float = 90) -> str:
    """Type ``line``; wait until the (whitespace-free) output shows ``ready``, or an OOM kill."""
    async with http.ws_connect(f"{url}/api/sessions/{sid}/ws") as ws:
        await ws.send_bytes(b"0" + line.encode() + b"\r")
        seen = ""
        try:
            async with asyncio.timeout(timeout):
                async for msg in ws:
                    if msg.data[:1] == b"0":
                        # Without escape sequences and spaces: TUIs place words with cursor moves.
                        seen += re.sub(r"\s+|\x1b\[[0-9;?>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\\\)?", "",
                                       msg.data[1:].decode(errors="replace"))
                        if ready in seen:
                            return "ready"
                    elif msg.data[:1] == b"1" and json.loads(msg.data[1:]).get("type") in ("oom_killed", "exit"):
                        return json.loads(msg.data[1:])["type"]
        except TimeoutError:
            return f"timeout after: {seen[-300:]!r}"
    return "closed"


def tree_of(shell: int) -> tuple[int, int]:
    pss = trees([shell])[shell].total
    rss = trees([shell], pss=False)[shell].total
    return pss, rss


async def settled_tree(shell: int, seconds: float = 20) -> tuple[int, int]:
    """The tree's memory once it stops growing (two looks 1 s apart within 2 %)."""
    last = tree_of(shell)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(1)
        now = tree_of(shell)
        if abs(now[0] - last[0]) <= 0.02 * max(last[0], 1):
            return now
        last = now
    return last


async def shell_pid(http, url, sid) -> int:
    async with http.get(f"{url}/api/sessions") as r:
        return next(s for s in await r.json() if s["id"] == sid)["process"]["pid"]


async def per_session(skip_agents: bool) -> dict[str, tuple[int, int]]:
    figures = {}
    with tempfile.TemporaryDirectory(prefix="coda-bench-cap-") as tmp:
        home = Path(tmp)
        bin_dir = home / ".npm-global" / "bin"
        bin_dir.mkdir(parents=True)
        found = [] if skip_agents else [n for n in AGENTS if (REPO / ".agents" / "bin" / n).exists()]
        for name in found:
            (bin_dir / name).symlink_to((REPO / ".agents" / "bin" / name).resolve())
        async with coda(home) as (url, http, _):
            # The agents' configs are written once the token is valid: wait for the last of them.
            async with asyncio.timeout(20):
                while not (home / ".coda" / "gemini" / ".gemini" / ".env").exists():
                    await asyncio.sleep(0.05)
            status, body = await open_session(http, url)
            sid = body["id"]
            await type_and_wait(http, url, sid, "echo idle-$((1+1))", "idle-2", 20)
            figures["idle session (bash)"] = await settled_tree(await shell_pid(http, url, sid), 5)
            for name in found:
                status, body = await open_session(http, url)
                sid = body["id"]
                outcome = await type_and_wait(http, url, sid, name, AGENTS[name])
                if outcome == "ready":
                    figures[f"{name} at its prompt"] = await settled_tree(await shell_pid(http, url, sid))
                else:
                    print(f"  {name}: did not reach its prompt ({outcome})")
                async with http.delete(f"{url}/api/sessions/{sid}"):
                    pass
    return figures


def make_cgroup(limit: int) -> Path | None:
    root = Path("/sys/fs/cgroup/memory")
    if not (root / "memory.limit_in_bytes").exists():
        return None
    cgroup = root / f"coda-bench-{secrets.token_hex(4)}"
    try:
        cgroup.mkdir()
        (cgroup / "memory.limit_in_bytes").write_text(str(limit))
        with contextlib.suppress(OSError):
            (cgroup / "memory.memsw.limit_in_bytes").write_text(str(limit))
    except OSError:
        with contextlib.suppress(OSError):
            cgroup.rmdir()
        return None
    return cgroup


def remove_cgroup(cgroup: Path) -> None:
    for _ in range(200):
        pids = (cgroup / "cgroup.procs").read_text().split()
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.05)
    cgroup.rmdir()


async def admission(limit: int, agent_bytes: int, session_mb: str, max_sessions: int = 8) -> dict:
    """Open sessions, each holding ``agent_bytes``, until refused; what happened."""
    cgroup = make_cgroup(limit)
    if cgroup is None:
        return {}
    result = {"admitted": 0, "refused_at": None, "agents_killed": 0, "server_alive": True}
    try:
        with tempfile.TemporaryDirectory(prefix="coda-bench-adm-") as tmp:
            async with coda(Path(tmp), cgroup, CODA_SESSION_MEMORY_MB=session_mb,
                            CODA_MAX_SESSIONS=str(max_sessions)) as (url, http, pid):
                holder = f"python3 -c \"b = b'x' * {agent_bytes}; print('held' + '-now'); import time; time.sleep(900)\""
                for attempt in range(1, max_sessions + 2):
                    try:
                        status, body = await open_session(http, url)
                    except aiohttp.ClientError:
                        result["server_alive"] = False
                        break
                    if status != 201:
                        result["refused_at"] = f"session {attempt} ({status})"
                        break
                    result["admitted"] += 1
                    try:
                        outcome = await type_and_wait(http, url, body["id"], holder, "held-now", 60)
                    except (aiohttp.ClientError, TimeoutError):
                        outcome = "closed"
                    result.setdefault("outcomes", []).append(outcome[:40])
                    if outcome == "oom_killed":
                        result["agents_killed"] += 1
                    elif outcome == "closed":
                        result["server_alive"] = False
                        break
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{url}/health") as r:
                        health = await r.json()
                    result["oom_kills"] = health["memory"]["oom_kills"]
                    result["used_mb"] = round(health["memory"]["used_bytes"] / MB)
                    result["health"] = (health["status"], health.get("reasons"))
                result["server_alive"] = result["server_alive"] and Path(f"/proc/{pid}").exists()
    finally:
        remove_cgroup(cgroup)
    return result


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit-mb", type=int, default=2048)
    parser.add_argument("--skip-agents", action="store_true")
    args = parser.parse_args()

    figures = await per_session(args.skip_agents)
    print(f"{'memory per terminal':32} {'PSS MB':>8} {'RSS MB':>8}")
    for name, (pss, rss) in figures.items():
        print(f"{name:32} {pss / MB:8.0f} {rss / MB:8.0f}")

    heaviest = max((pss for name, (pss, _) in figures.items() if "idle" not in name), default=300 * MB)
    print(f"\nadmission in a {args.limit_mb} MB cgroup, each session holding {heaviest / MB:.0f} MB "
          "(the heaviest agent above)")
    runs = {"baseline: fixed cap of 8 only": "0", "memory admission (768 MB/session)": "768"}
    print(f"{'':38} {'admitted':>8} {'refused at':>16} {'OOM kills':>10} {'server alive':>13} {'used MB':>8}")
    for label, session_mb in runs.items():
        r = await admission(args.limit_mb * MB, heaviest, session_mb)
        if not r:
            print("  (no memory cgroup can be made here: skipped)")
            break
        # OOM kills: the cgroup's count (a tab hears of the kills in its own terminal only).
        print(f"{label:38} {r['admitted']:8} {str(r['refused_at']):>16} {r.get('oom_kills', '?'):>10} "
              f"{str(r['server_alive']):>13} {r.get('used_mb', '?'):>8}")


if __name__ == "__main__":
    asyncio.run(main())
