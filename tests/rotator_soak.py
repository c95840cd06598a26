"""The rotator against a flaky workspace for a long time: the soak of issue 14.

One run: the fake workspace answers a share of the token and SCIM calls with a random fault
(500, 503, 429 with Retry-After, a hang until the client's timeout, a dropped connection),
while a rotator rotates every second, the "process" restarts now and then (a new TokenStore
and Rotator warm-starting from the files, as after a redeploy), and a sampler checks every
20 ms that the token in memory and the one in ~/.databrickscfg both still work. At the end
the faults stop, and the run must end with a working token, no live token of ours that
``~/.coda/state.json`` does not know, and every other profile of the file byte for byte.

Used by bench/soak_rotator.py (10 minutes, beside a fault-free baseline) and by
tests/test_rotator_soak.py (a few seconds).
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from coda_aio.config import Settings
from coda_aio.credentials.databrickscfg import read_profile
from coda_aio.rotator import TOKEN_COMMENT, ConfigureError, Rotator
from coda_aio.testing.fake_chaos import Chaos
from coda_aio.testing.fake_workspace import FakeWorkspace
from coda_aio.credentials.token_store import TokenStore
from coda_aio.credentials.workspace import Workspace

USER = "ada@example.com"
# The user's own file: profiles, comments, odd spacing. Everything but [coda] must survive as is.
USER_FILE = """\
; managed by hand, keep
[DEFAULT]
host = https://default.example.com

# notebooks
[notebooks]
host = https://nb.example.com
token = dapi-notebooks
cluster_id = 0123

[ coda ]
token = not ours: the spaces make it another section

[ci]
token: dapi-ci
  continued
"""


@dataclass
class SoakReport:
    seconds: float
    fault_rate: float
    rotations: int = 0
    restarts: int = 0
    calls: int = 0
    faults: Counter = field(default_factory=Counter)
    max_live: int = 0
    samples: int = 0
    dead_in_memory: int = 0  # samples where the proxy's token no longer worked
    dead_in_file: int = 0  # samples where the CLI's token (the profile) no longer worked
    gaps: list[float] = field(default_factory=list)  # seconds between successive new tokens
    boots: list[float] = field(default_factory=list)  # seconds from start to a valid token
    final_recovery: float | None = None  # seconds from "faults off" to a clean, rotated state
    working_token: bool = False
    unknown_live: list[str] = field(default_factory=list)
    others_intact: bool = False
    last_errors: Counter = field(default_factory=Counter)
    watchers: set = field(default_factory=set, repr=False)

    def overdue(self, interval: float) -> list[float]:
        """How late each rotation came, beyond its interval: the time to recover from faults."""
        return [max(0.0, g - interval) for g in self.gaps]

    @property
    def ok(self) -> bool:
        return (self.working_token and not self.unknown_live and self.others_intact
                and self.dead_in_memory == 0 and self.dead_in_file == 0)


def _others(text: str) -> list[str]:
    """Every line outside the [coda] section (configparser's own reading of what a header is)."""
    out, ours = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            ours = line.strip() == "[coda]"
        if not ours:
            out.append(line)
    return out


async def run_rotator_soak(home: Path, seconds: float, *, fault_rate: float = 0.2, seed: int = 14,
                           interval: float = 1.0, lifetime: int = 8, restart_every: float = 30.0,
                           timeout: float = 1.0) -> SoakReport:
    home.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    report = SoakReport(seconds=seconds, fault_rate=fault_rate)
    fake = FakeWorkspace()
    fake.add_user(USER)
    await fake.start()
    # A dotfiles manager's symlink, as many users have.
    dotfiles = home / "dotfiles"
    dotfiles.mkdir(exist_ok=True)
    (dotfiles / "databrickscfg").write_text(USER_FILE)
    cfg = home / ".databrickscfg"
    cfg.symlink_to(dotfiles / "databrickscfg")
    settings = Settings(home=home, host=fake.url, rotation_interval=interval, token_lifetime=lifetime,
                        revoke_grace=0.3, workspace_timeout=timeout, install_agents=False)
    chaos = Chaos(fault_rate, rng=random.Random(seed + 1)) if fault_rate > 0 else None
    fake.chaos = chaos
    last_new: list[float] = []

    def new_token(*_args) -> None:
        now = time.monotonic()
        if last_new:
            report.gaps.append(now - last_new[-1])
        last_new.append(now)

    try:
        async with aiohttp.ClientSession() as http:
            workspace = Workspace(fake.url, http, timeout=timeout)
            process = [await _start(settings, workspace, new_token, report)]
            # The user pastes once; a failed paste is pasted again, as a person would.
            pat = fake.issue_pat(USER, comment="bootstrap")
            while True:
                try:
                    await process[0][1].configure(pat)
                    break
                except ConfigureError as e:
                    if e.status != 503:
                        raise
            sampler = asyncio.create_task(_sample(fake, settings, process, report))
            deadline = time.monotonic() + seconds
            try:
                while time.monotonic() < deadline:
                    life = min(deadline - time.monotonic(), rng.uniform(0.5, 1.5) * restart_every)
                    await asyncio.sleep(max(0.0, life))
                    if time.monotonic() >= deadline:
                        break
                    tokens, rotator = process[0]
                    report.last_errors.update([rotator.last_error] if rotator.last_error else [])
                    await rotator.stop()  # a restart: everything in memory is gone
                    process[0] = await _start(settings, workspace, new_token, report)
                    report.restarts += 1
                # The faults stop: how long until a rotation has gone through and the records are clean?
                fake.chaos = None
                off = time.monotonic()
                tokens, rotator = process[0]
                rotations_then = len(last_new)
                async with asyncio.timeout(60):
                    while not (len(last_new) > rotations_then and tokens.state == "valid"
                               and not _unknown_live(fake, settings)
                               and len(_ours_live(fake)) <= 2):
                        await asyncio.sleep(0.02)
                report.final_recovery = time.monotonic() - off
            finally:
                for task in (sampler, *report.watchers):
                    task.cancel()
                await asyncio.gather(sampler, *report.watchers, return_exceptions=True)
            tokens, rotator = process[0]
            try:
                await workspace.me(tokens.token)
                report.working_token = fake.is_live(tokens.token)
            except Exception:
                report.working_token = False
            report.unknown_live = _unknown_live(fake, settings)
            report.rotations = rotator.rotations
            await rotator.stop()
        final = (dotfiles / "databrickscfg").read_text()
        # The user's file, byte for byte, then our [coda] (after the blank line that separates it).
        report.others_intact = (cfg.is_symlink() and final.startswith(USER_FILE)
                                and not "".join(_others(final[len(USER_FILE):])).strip())
        if chaos is not None:
            report.faults = chaos.injected
            report.calls = chaos.calls
        else:
            report.calls = sum(fake.calls[r] for r in ("me", "token_create", "token_delete", "token_list"))
    finally:
        await fake.stop()
    return report


async def _start(settings: Settings, workspace: Workspace, new_token, report: SoakReport):
    tokens = TokenStore(settings.databrickscfg_path, settings.profile, settings.host)
    tokens.subscribe_token(new_token)
    rotator = Rotator(settings, tokens)
    rotator.attach(workspace, lambda: True)
    started = time.monotonic()
    await rotator.start()

    async def boot_time() -> None:
        try:
            async with asyncio.timeout(120):
                while tokens.state != "valid":
                    await asyncio.sleep(0.02)
            report.boots.append(time.monotonic() - started)
        except TimeoutError:
            report.boots.append(float("inf"))

    report.watchers.add(asyncio.create_task(boot_time()))
    return tokens, rotator


def _ours_live(fake: FakeWorkspace) -> list[str]:
    return [t["token_id"] for t in fake.live_tokens(USER) if t["comment"] == TOKEN_COMMENT]


def _unknown_live(fake: FakeWorkspace, settings: Settings) -> list[str]:
    try:
        recorded = {m["token_id"] for m in json.loads((settings.state_dir / "state.json").read_text())["minted"]}
    except (OSError, ValueError):
        recorded = set()
    return [t for t in _ours_live(fake) if t not in recorded]


async def _sample(fake: FakeWorkspace, settings: Settings, process: list, report: SoakReport) -> None:
    while True:
        await asyncio.sleep(0.02)
        tokens, _ = process[0]
        report.samples += 1
        report.max_live = max(report.max_live, len(_ours_live(fake)))
        token = tokens.token
        if token is not None and not fake.is_live(token):
            report.dead_in_memory += 1
        try:
            in_file = (read_profile(settings.databrickscfg_path, settings.profile) or {}).get("token")
        except Exception:
            in_file = None
        if in_file is not None and not fake.is_live(in_file):
            report.dead_in_file += 1


def summarize(report: SoakReport, interval: float) -> dict:
    overdue = report.overdue(interval)
    return {
        "seconds": report.seconds,
        "fault rate": report.fault_rate,
        "rotations": report.rotations,
        "restarts (warm starts)": report.restarts,
        "workspace calls": report.calls,
        "faults injected": sum(report.faults.values()),
        "  by kind": dict(sorted(report.faults.items())) or "-",
        "max tokens live (ours)": report.max_live,
        "samples (every 20 ms)": report.samples,
        "samples: dead token in memory": report.dead_in_memory,
        "samples: dead token in file": report.dead_in_file,
        "recovery p50 s (rotation delay)": round(statistics.median(overdue), 3) if overdue else None,
        "recovery p99 s": round(sorted(overdue)[int(len(overdue) * 0.99) - 1], 3) if len(overdue) > 1 else None,
        "recovery max s": round(max(overdue), 3) if overdue else None,
        "warm start max s": round(max(report.boots), 3) if report.boots else None,
        "recovery after faults stop s": None if report.final_recovery is None else round(report.final_recovery, 3),
        "working token at end": report.working_token,
        "live tokens records do not know": len(report.unknown_live),
        "other profiles byte for byte": report.others_intact,
    }
