"""Background setup steps (agent CLI installs) with progress the terminal page can show.

Steps run in parallel as subprocesses, each with its own timeout; one failing or timing
out never stops the others. A step's optional ``check`` command runs first: when it
succeeds the work is already done and the step is skipped.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
from dataclasses import dataclass
from typing import Literal, Mapping

from .config import Settings, without_secrets

log = logging.getLogger(__name__)

StepStatus = Literal["pending", "running", "done", "skipped", "failed"]
RunStatus = Literal["idle", "running", "done", "failed"]

# How much of a failed step's output is shown: enough for npm's error summary.
ERROR_TAIL_LINES = 8
CHECK_TIMEOUT = 15.0
# Between SIGTERM and SIGKILL for a step's process group.
KILL_GRACE = 3.0


@dataclass(frozen=True)
class Step:
    id: str
    label: str
    command: list[str]
    timeout: float = 600.0
    # A command whose success means the step's work is already done.
    check: list[str] | None = None


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
        self._processes: set[asyncio.subprocess.Process] = set()

    def start(self) -> None:
        """Run every step in the background (needs a running event loop); idempotent."""
        if not self._steps or self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(self._run_all(), name="setup-steps")

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for process in list(self._processes):
            await _end_process_group(process)

    def status(self) -> dict:
        steps = [
            {"id": s.id, "label": s.label, "status": self._states[s.id].status, "error": self._states[s.id].error}
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
        """Run the step's command; None on success, otherwise what went wrong."""
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


def agent_install_steps(settings: Settings) -> list[Step]:
    """npm installs of each agent CLI into ``settings.npm_prefix`` (its bin/ is on every
    terminal's PATH); a CLI already in that bin/ or on PATH is skipped."""
    prefix = settings.npm_prefix
    return [
        Step(
            id=step_id,
            label=f"Install {label}",
            command=["npm", "install", "-g", "--prefix", str(prefix), "--no-audit", "--no-fund", package],
            timeout=NPM_INSTALL_TIMEOUT,
            check=["sh", "-c", 'test -x "$1" || command -v "$2"', "sh", str(prefix / "bin" / binary), binary],
        )
        for step_id, label, package, binary in AGENT_PACKAGES
    ]
