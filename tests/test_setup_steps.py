"""The setup step runner, with local commands only (never the network)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from aiohttp import web

from conftest import eventually
from coda_aio.routes.app_keys import SETUP
from coda_aio.routes.setup import add_routes
from coda_aio.agents.setup import SetupRunner, Step, StepFailed, agent_install_steps, low_priority
from coda_aio.agents.versions import tested_versions as read_tested_versions
from coda_aio.config import Settings


def by_id(runner: SetupRunner) -> dict[str, dict]:
    return {s["id"]: s for s in runner.status()["steps"]}


async def test_steps_run_in_parallel_and_report_each_outcome(tmp_path: Path):
    marker = tmp_path / "ran"
    runner = SetupRunner(
        [
            Step("ok", "Succeeds", ["sh", "-c", f"sleep 0.3; touch {marker}"], timeout=10),
            Step("bad", "Fails", ["sh", "-c", "echo first line >&2; echo 'npm ERR! boom' >&2; exit 3"], timeout=10),
            Step("slow", "Times out", ["sleep", "30"], timeout=0.5),
            Step("done-before", "Already there", ["sh", "-c", "exit 1"], timeout=10, check=["true"]),
            Step("missing", "No such binary", ["/nonexistent/tool"], timeout=10),
        ]
    )
    assert runner.status()["status"] == "idle"
    started = time.monotonic()
    runner.start()
    assert runner.status()["status"] == "running"
    await asyncio.wait_for(runner.wait(), 10)
    elapsed = time.monotonic() - started

    steps = by_id(runner)
    assert steps["ok"]["status"] == "done" and steps["ok"]["error"] is None
    assert marker.exists()
    assert steps["bad"]["status"] == "failed"
    assert "exit code 3" in steps["bad"]["error"] and "npm ERR! boom" in steps["bad"]["error"]
    assert steps["slow"] == {"id": "slow", "label": "Times out", "status": "failed", "error": "timed out after 0.5 s",
                             "advice": None}
    assert steps["done-before"]["status"] == "skipped"
    assert steps["missing"]["status"] == "failed" and "cannot run /nonexistent/tool" in steps["missing"]["error"]
    assert runner.status()["status"] == "failed"
    # In parallel: the whole run takes about as long as its slowest step, not the sum.
    assert elapsed < 5


async def test_failed_check_runs_the_step(tmp_path: Path):
    marker = tmp_path / "installed"
    runner = SetupRunner([Step("s", "Install", ["touch", str(marker)], timeout=5, check=["false"])])
    runner.start()
    await runner.wait()
    assert marker.exists()
    assert runner.status() == {"status": "done", "steps": [{"id": "s", "label": "Install", "status": "done", "error": None,
                                                              "advice": None}]}


async def test_timeout_kills_the_whole_process_group(tmp_path: Path):
    pidfile = tmp_path / "child.pid"
    # The step forks a grandchild that would outlive a kill of the step's own pid.
    command = ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"]
    runner = SetupRunner([Step("s", "Forks", command, timeout=0.5)])
    runner.start()
    await runner.wait()
    child = int(pidfile.read_text())
    for _ in range(50):
        if not _alive(child):
            break
        await asyncio.sleep(0.05)
    assert not _alive(child)


async def test_stop_cancels_running_steps(tmp_path: Path):
    pidfile = tmp_path / "pid"
    runner = SetupRunner([Step("s", "Long", ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"], timeout=60)])
    runner.start()
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.02)
    pid = int(pidfile.read_text())
    await asyncio.wait_for(runner.stop(), 10)
    await asyncio.sleep(0.05)
    assert not _alive(pid)
    assert by_id(runner)["s"]["status"] == "failed"


async def test_no_steps_is_a_no_op():
    runner = SetupRunner([])
    runner.start()
    await runner.wait()
    await runner.stop()
    assert runner.status() == {"status": "idle", "steps": []}


async def test_steps_get_no_credentials(tmp_path: Path):
    out = tmp_path / "env"
    env = {"PATH": os.environ["PATH"], "DATABRICKS_TOKEN": "dapi-secret", "DATABRICKS_CLIENT_SECRET": "s", "KEEP": "1"}
    runner = SetupRunner([Step("s", "Env", ["sh", "-c", f"env > {out}"], timeout=5)], env=env)
    runner.start()
    await runner.wait()
    text = out.read_text()
    assert "KEEP=1" in text
    assert "dapi-secret" not in text and "DATABRICKS_CLIENT_SECRET" not in text


async def test_agent_install_steps_skip_installed_binaries(make_settings, home: Path):
    settings = make_settings()
    steps = agent_install_steps(settings)
    assert [s.id for s in steps] == ["claude-code", "codex", "opencode", "gemini-cli", "databricks-cli"]
    for step in steps[:4]:
        npm = step.command.index("npm")
        assert step.command[npm:npm + 5] == ["npm", "install", "-g", "--prefix", str(settings.npm_prefix)]
        assert step.command[:npm] == low_priority([])
    assert steps[4].action is not None
    # Put stand-ins that run and print the wanted versions in the prefix: every step's check
    # then succeeds and nothing is installed.
    bin_dir = settings.npm_prefix / "bin"
    bin_dir.mkdir(parents=True)
    tested = read_tested_versions()
    lines = {"claude": f"{tested['@anthropic-ai/claude-code']} (Claude Code)",
             "codex": f"codex-cli {tested['@openai/codex']}", "opencode": tested["opencode-ai"],
             "gemini": tested["@google/gemini-cli"], "databricks": f"Databricks CLI v{settings.databricks_cli_version}"}
    for name, line in lines.items():
        (bin_dir / name).write_text(f"#!/bin/sh\necho '{line}'\n")
        (bin_dir / name).chmod(0o755)
    runner = SetupRunner(steps, env={"PATH": "/usr/bin:/bin"})
    runner.start()
    await asyncio.wait_for(runner.wait(), 10)
    assert {s["status"] for s in runner.status()["steps"]} == {"skipped"}
    assert runner.status()["status"] == "done"


REPO = Path(__file__).resolve().parent.parent


def check_passes(step, path: str = "/usr/bin:/bin") -> bool:
    return subprocess.run(step.check, env={"PATH": path}, capture_output=True, timeout=60).returncode == 0


def test_agents_are_installed_at_the_tested_versions_the_makefile_installs_too(make_settings):
    tested = read_tested_versions()
    assert set(tested) == {"@anthropic-ai/claude-code", "@openai/codex", "opencode-ai", "@google/gemini-cli"}
    steps = {s.id: s for s in agent_install_steps(make_settings())}
    assert steps["codex"].command[-1] == f"@openai/codex@{tested['@openai/codex']}"
    latest = {s.id: s for s in agent_install_steps(make_settings(agent_versions="latest"))}
    assert latest["codex"].command[-1] == "@openai/codex@latest"
    # `make agents` (the CLIs tests/test_agent_clis.py runs) installs that same list.
    dry_run = subprocess.run(["make", "-n", "-B", "-C", str(REPO), ".agents/.installed"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    npm_line = next(line for line in dry_run.splitlines() if line.startswith("npm install"))
    assert npm_line.split()[-len(tested):] == [f"{p}@{v}" for p, v in tested.items()]


def test_settings_choose_tested_or_latest_agents():
    assert Settings.from_env({"HOME": "/tmp/h"}).agent_versions == "tested"
    assert Settings.from_env({"HOME": "/tmp/h", "CODA_AGENT_VERSIONS": "latest"}).agent_versions == "latest"
    with pytest.raises(ValueError, match="CODA_AGENT_VERSIONS"):
        Settings.from_env({"HOME": "/tmp/h", "CODA_AGENT_VERSIONS": "newest"})


def test_a_cli_is_installed_again_unless_it_runs_at_the_wanted_version(make_settings, tmp_path: Path):
    settings = make_settings()
    codex = {s.id: s for s in agent_install_steps(settings)}["codex"]
    bin_dir = settings.npm_prefix / "bin"
    bin_dir.mkdir(parents=True)
    link = bin_dir / "codex"
    # An npm install cut short: the bin link is there, the package it points into is not whole.
    link.symlink_to(settings.npm_prefix / "lib" / "node_modules" / "@openai" / "codex" / "bin" / "codex.js")
    assert not check_passes(codex)
    half = tmp_path / "codex.js"
    half.write_text("#!/bin/sh\nexec /nonexistent/node \"$0\" \"$@\"\n")
    half.chmod(0o755)
    link.unlink()
    link.symlink_to(half)
    assert not check_passes(codex)
    # Another version than the tested one: installed again (unless the newest is what is wanted).
    other = tmp_path / "codex-other"
    other.write_text("#!/bin/sh\necho 'codex-cli 0.171.0'\n")
    other.chmod(0o755)
    link.unlink()
    link.symlink_to(other)
    assert not check_passes(codex)
    assert check_passes({s.id: s for s in agent_install_steps(settings.with_changes(agent_versions="latest"))}["codex"])


@pytest.mark.skipif(not (REPO / ".agents" / "bin" / "codex").exists(), reason="run `make agents` first")
def test_the_real_clis_from_make_agents_pass_the_check(make_settings):
    settings = make_settings()
    (settings.npm_prefix / "bin").mkdir(parents=True)
    steps = {s.id: s for s in agent_install_steps(settings)}
    for step_id, binary in (("claude-code", "claude"), ("codex", "codex"), ("opencode", "opencode"),
                            ("gemini-cli", "gemini")):
        (settings.npm_prefix / "bin" / binary).symlink_to(REPO / ".agents" / "bin" / binary)
        assert check_passes(steps[step_id], path=f"{os.path.dirname(shutil.which('node') or '/usr/bin/node')}:/usr/bin:/bin"), step_id


async def test_setup_status_route(aiohttp_client):
    app = web.Application()
    app[SETUP] = SetupRunner([Step("s", "Quick", ["true"], timeout=5)])
    add_routes(app)
    client = await aiohttp_client(app)
    resp = await client.get("/api/setup-status")
    assert resp.status == 200
    assert await resp.json() == {"status": "idle", "steps": [{"id": "s", "label": "Quick", "status": "pending", "error": None,
                                                              "advice": None}]}
    app[SETUP].start()
    await app[SETUP].wait()
    assert (await (await client.get("/api/setup-status")).json())["status"] == "done"


@pytest.mark.skipif(not (shutil.which("nice") and shutil.which("ionice")), reason="needs nice and ionice")
async def test_installs_run_at_the_lowest_cpu_and_io_priority(tmp_path: Path):
    """What an npm install (and every process it starts) runs with: nice 19, idle I/O class."""
    out = tmp_path / "priority"
    probe = ["sh", "-c", f"sh -c 'cut -d\\) -f2 /proc/self/stat | cut -d\\  -f18; ionice' > {out}"]
    runner = SetupRunner([Step("s", "Probe", low_priority(probe), timeout=10)])
    runner.start()
    await runner.wait()
    assert by_id(runner)["s"]["status"] == "done", by_id(runner)["s"]
    nice, io_class = out.read_text().split("\n")[:2]
    assert int(nice) == 19  # the grandchild inherits it, as npm's children do
    assert io_class.startswith("idle")


async def test_action_steps_report_success_failure_and_timeout():
    done: list[str] = []

    async def works() -> None:
        done.append("works")

    async def refuses() -> None:
        raise StepFailed("checksum mismatch for x.zip; nothing was installed")

    async def hangs() -> None:
        await asyncio.sleep(60)

    async def cannot_write() -> None:
        raise PermissionError(13, "Permission denied", "/opt/bin/databricks")

    runner = SetupRunner([
        Step("ok", "Works", action=works, timeout=5),
        Step("bad", "Refuses", action=refuses, timeout=5),
        Step("slow", "Hangs", action=hangs, timeout=0.2),
        Step("perm", "No permission", action=cannot_write, timeout=5),
        Step("skip", "Done before", action=works, timeout=5, check=["true"]),
    ])
    runner.start()
    await asyncio.wait_for(runner.wait(), 10)
    steps = by_id(runner)
    assert steps["ok"]["status"] == "done" and done == ["works"]
    assert steps["bad"] == {"id": "bad", "label": "Refuses", "status": "failed",
                            "error": "checksum mismatch for x.zip; nothing was installed", "advice": None}
    assert steps["slow"]["error"] == "timed out after 0.2 s"
    assert steps["perm"]["error"] == "Permission denied: /opt/bin/databricks"
    assert steps["skip"]["status"] == "skipped"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def test_a_failed_step_is_retried_on_request_and_only_a_failed_one(aiohttp_client, tmp_path: Path):
    """POST /api/setup-steps/{id}/retry runs a failed step again, beside the others' progress."""
    fixed = tmp_path / "network-back"
    gate = tmp_path / "release-slow"
    app = web.Application()
    app[SETUP] = SetupRunner([
        Step("flaky", "Flaky", ["sh", "-c", f"test -e {fixed}"], timeout=10, advice="Fix the network, then retry."),
        Step("slow", "Slow", ["sh", "-c", f"until [ -e {gate} ]; do sleep 0.05; done"], timeout=30),
    ])
    add_routes(app)
    client = await aiohttp_client(app)
    app[SETUP].start()
    await eventually(lambda: by_id(app[SETUP])["flaky"]["status"] == "failed", timeout=10)
    # The failure and the other step's progress side by side; the advice with the failure.
    status = await (await client.get("/api/setup-status")).json()
    assert [(s["id"], s["status"], s["advice"]) for s in status["steps"]] == [
        ("flaky", "failed", "Fix the network, then retry."), ("slow", "running", None)]

    async with client.post("/api/setup-steps/slow/retry") as r:
        assert r.status == 409 and "only a failed step" in (await r.json())["error"]
    async with client.post("/api/setup-steps/nope/retry") as r:
        assert r.status == 404 and "nope" in (await r.json())["error"]

    fixed.touch()
    async with client.post("/api/setup-steps/flaky/retry") as r:
        assert r.status == 202
    gate.touch()
    await asyncio.wait_for(app[SETUP].wait(), 10)
    assert {s["id"]: s["status"] for s in app[SETUP].status()["steps"]} == {"flaky": "done", "slow": "done"}
    assert app[SETUP].status()["status"] == "done"

