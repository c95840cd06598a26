"""Background setup steps (agent CLI installs) with progress the terminal page can show.

Steps run in parallel, each with its own timeout; one failing or timing out never stops
the others. A step is a subprocess (``command``) or a coroutine of ours (``action``, e.g.
the Databricks CLI download). A step's optional ``check`` command runs first: when it
succeeds the work is already done and the step is skipped.

Installs run at the lowest CPU and I/O priority (``nice -n 19``, ``ionice -c 3``): four
npm installs on a 2-core container must not make the terminal the user types in lag.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Literal, Mapping

from coda_aio.agents import databricks_cli
from coda_aio.agents.versions import wanted_version
from coda_aio.background import cancel_and_wait
from coda_aio.config import Settings, without_secrets

log = logging.getLogger(__name__)

StepStatus = Literal["pending", "running", "done", "skipped", "failed"]
RunStatus = Literal["idle", "running", "done", "failed"]

# How much of a failed step's output is shown: enough for npm's error summary.
ERROR_TAIL_LINES = 8
CHECK_TIMEOUT = 15.0
# Between SIGTERM and SIGKILL for a step's process group.
KILL_GRACE = 3.0


class StepFailed(Exception):
    """An ``action`` step failed; the message is what the user sees."""


@dataclass(frozen=True)
class Step:
    id: str
    label: str
    command: list[str] | None = None
    timeout: float = 600.0
    # A command whose success means the step's work is already done.
    check: list[str] | None = None
    # Work done in-process instead of ``command``; raises StepFailed (or OSError) on failure.
    action: Callable[[], Awaitable[None]] | None = None
    # What the person can do when the step fails, in words (shown beside the error).
    advice: str | None = None


@dataclass
class _StepState:
    status: StepStatus = "pending"
    error: str | None = None


class SetupRunner:
    def __init__(self, steps: list[Step], env: Mapping[str, str] | None = None):
        """``env`` is the steps' environment (the process's own when None), always without
        credentials: install scripts of third-party packages run with it."""
        self._steps = list(steps)
        self._env = without_secrets(os.environ if env is None else env)
        self._states = {step.id: _StepState() for step in self._steps}
        self._task: asyncio.Task | None = None
        self._retries: set[asyncio.Task] = set()
        self._processes: set[asyncio.subprocess.Process] = set()

    def start(self) -> None:
        """Run every step in the background (needs a running event loop); idempotent."""
        if not self._steps or self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(self._run_all(), name="setup-steps")

    async def wait(self) -> None:
        """Until every step has finished, retries included."""
        if self._task is not None:
            await asyncio.shield(self._task)
        while self._retries:
            await asyncio.shield(asyncio.gather(*self._retries, return_exceptions=True))

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        for task in list(self._retries):
            await cancel_and_wait(task)
        for process in list(self._processes):
            await _end_process_group(process)

    def retry(self, step_id: str) -> None:
        """Run a failed step again, in the background.

        Raises KeyError for an unknown step and ValueError (its message says why) for one
        that has not failed: a step that runs, or is done, is left alone.
        """
        step = next((s for s in self._steps if s.id == step_id), None)
        if step is None:
            raise KeyError(step_id)
        state = self._states[step_id]
        if self._task is None or state.status != "failed":
            raise ValueError(f"{step.label} has not failed (it is {state.status}); only a failed step is retried")
        state.status, state.error = "pending", None
        task = asyncio.get_running_loop().create_task(self._run_step(step), name=f"setup-retry-{step_id}")
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    def status(self) -> dict:
        steps = [
            {"id": s.id, "label": s.label, "status": self._states[s.id].status, "error": self._states[s.id].error,
             "advice": s.advice if self._states[s.id].status == "failed" else None}
            for s in self._steps
        ]
        return {"status": self._overall(), "steps": steps}

    def _overall(self) -> RunStatus:
        if self._task is None:
            return "idle"
        statuses = [state.status for state in self._states.values()]
        if any(s in ("pending", "running") for s in statuses):
            return "running"
        return "failed" if "failed" in statuses else "done"

    async def _run_all(self) -> None:
        await asyncio.gather(*(self._run_step(step) for step in self._steps))

    async def _run_step(self, step: Step) -> None:
        state = self._states[step.id]
        try:
            if step.check and await self._succeeds(step.check):
                state.status = "skipped"
                return
            state.status = "running"
            state.error = await self._execute(step)
            state.status = "failed" if state.error else "done"
        except asyncio.CancelledError:
            if state.status in ("pending", "running"):
                state.status, state.error = "failed", "stopped: coda is shutting down"
            raise
        except Exception as e:  # one broken step must not take the others down
            log.exception("setup step %s crashed", step.id)
            state.status, state.error = "failed", f"unexpected error: {e}"
        if state.status == "failed":
            log.warning("setup step %s failed: %s", step.id, state.error)

    async def _succeeds(self, command: list[str]) -> bool:
        try:
            process = await self._spawn(command, capture=False)
        except OSError:
            return False
        try:
            return await asyncio.wait_for(process.wait(), CHECK_TIMEOUT) == 0
        except asyncio.TimeoutError:
            return False
        finally:
            await self._reap(process)

    async def _execute(self, step: Step) -> str | None:
        """Run the step's command or action; None on success, otherwise what went wrong."""
        if step.action is not None:
            return await _perform(step)
        assert step.command is not None, f"step {step.id} has neither a command nor an action"
        try:
            process = await self._spawn(step.command, capture=True)
        except OSError as e:
            return f"cannot run {step.command[0]}: {e.strerror or e}"
        tail: collections.deque[str] = collections.deque(maxlen=ERROR_TAIL_LINES)
        try:
            code = await asyncio.wait_for(_drain_then_wait(process, tail), step.timeout)
        except asyncio.TimeoutError:
            return f"timed out after {step.timeout:g} s"
        finally:
            await self._reap(process)
        if code == 0:
            return None
        output = "\n".join(tail).strip()
        return f"exit code {code}" + (f": {output}" if output else "")

    async def _spawn(self, command: list[str], *, capture: bool) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.STDOUT if capture else asyncio.subprocess.DEVNULL,
            env=self._env,
            # Its own process group, so a timeout ends npm together with its children.
            start_new_session=True,
        )
        self._processes.add(process)
        return process

    async def _reap(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is None:
            await _end_process_group(process)
        self._processes.discard(process)


async def _perform(step: Step) -> str | None:
    assert step.action is not None
    try:
        await asyncio.wait_for(step.action(), step.timeout)
    except asyncio.TimeoutError:
        return f"timed out after {step.timeout:g} s"
    except StepFailed as e:
        return str(e)
    except OSError as e:
        return f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
    return None


async def _drain_then_wait(process: asyncio.subprocess.Process, tail: collections.deque[str]) -> int:
    # Output is read as it comes (a full pipe would stall the child) and only the last
    # lines are kept, so a chatty install cannot grow memory.
    assert process.stdout is not None
    async for raw in process.stdout:
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            tail.append(line)
    return await process.wait()


async def _end_process_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the step's process group, SIGKILL it after a grace period."""
    for sig, grace in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
        if process.returncode is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            process.kill()
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), grace)
            return
        except asyncio.TimeoutError:
            continue


# --- agent CLI installs -----------------------------------------------------------

# (step id, label, npm package, binary it installs)
AGENT_PACKAGES = (
    ("claude-code", "Claude Code", "@anthropic-ai/claude-code", "claude"),
    ("codex", "Codex", "@openai/codex", "codex"),
    ("opencode", "OpenCode", "opencode-ai", "opencode"),
    ("gemini-cli", "Gemini CLI", "@google/gemini-cli", "gemini"),
)

NPM_INSTALL_TIMEOUT = 900.0
DATABRICKS_CLI_TIMEOUT = 300.0


def low_priority(command: list[str]) -> list[str]:
    """``command`` at the lowest CPU priority and in the idle I/O class, where the tools exist.

    Both are inherited by every process npm starts (node-gyp, postinstall scripts).
    """
    prefix: list[str] = []
    if shutil.which("nice"):
        prefix += ["nice", "-n", "19"]
    if shutil.which("ionice"):
        # -t: carry on when the I/O scheduler refuses the class (some containers do).
        prefix += ["ionice", "-c", "3", "-t"]
    return prefix + command


# Succeeds when the CLI in the npm prefix's bin/ (else on PATH) runs and its --version names the
# wanted version ($3; empty: any). A bin link alone proves nothing: an npm install cut short
# leaves the link to a package that is missing files, and it would be skipped on every boot.
_RUNS_AT_VERSION = (
    'for cli in "$1" "$(command -v "$2")"; do '
    '[ -n "$cli" ] && out=$("$cli" --version 2>/dev/null) && case "$out" in *"$3"*) exit 0;; esac; '
    'done; exit 1'
)


def installed_check(path: Path, binary: str, version: str | None) -> list[str]:
    """The check command: ``path`` (else ``binary`` on PATH) runs, at ``version`` when given."""
    return ["sh", "-c", _RUNS_AT_VERSION, "sh", str(path), binary, version or ""]


def agent_install_steps(settings: Settings) -> list[Step]:
    """npm installs of each agent CLI into ``settings.npm_prefix`` (its bin/ is on every
    terminal's PATH), and the Databricks CLI beside them; a CLI already in that bin/ or on
    PATH is skipped."""
    prefix = settings.npm_prefix
    npm_steps = []
    for step_id, label, package, binary in AGENT_PACKAGES:
        version = wanted_version(package, settings.agent_versions)
        npm_steps.append(Step(
            id=step_id,
            label=f"Install {label}" + (f" {version}" if version else ""),
            command=low_priority(
                ["npm", "install", "-g", "--prefix", str(prefix), "--no-audit", "--no-fund",
                 f"{package}@{version or 'latest'}"]
            ),
            timeout=NPM_INSTALL_TIMEOUT,
            check=installed_check(prefix / "bin" / binary, binary, version),
            advice=(f"npm could not install {package}. Check that this machine reaches the npm registry "
                    "(or point npm at a mirror: npm config set registry URL), then retry."),
        ))
    return npm_steps + [databricks_cli_step(settings)]


def databricks_cli_step(settings: Settings) -> Step:
    release = databricks_cli.Release(settings.databricks_cli_version, settings.databricks_cli_base_url)

    async def install() -> None:
        try:
            await databricks_cli.install(release, settings.npm_prefix / "bin", timeout=DATABRICKS_CLI_TIMEOUT)
        except databricks_cli.InstallError as e:
            raise StepFailed(str(e)) from None

    # Skipped only when a CLI that runs prints the version asked for (CODA_DATABRICKS_CLI_VERSION);
    # another version, or the retired Python `databricks-cli` ("Version 0.18.0"), is replaced by
    # ours, which goes first on the terminal's PATH.
    check = installed_check(settings.npm_prefix / "bin" / databricks_cli.BINARY, databricks_cli.BINARY,
                            f"Databricks CLI v{settings.databricks_cli_version}")
    return Step(
        id="databricks-cli",
        label="Install the Databricks CLI",
        action=install,
        timeout=DATABRICKS_CLI_TIMEOUT + 30,
        check=check,
        advice=("Set CODA_DATABRICKS_CLI_BASE_URL to a mirror of the CLI's GitHub releases (and restart), "
                "or retry if the network was down for a moment."),
    )
