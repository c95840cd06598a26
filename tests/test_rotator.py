"""The credential lifecycle against the fake workspace on loopback, with sub-second intervals."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import time
import sys
from pathlib import Path

import pytest

from coda_aio.credentials.databrickscfg import read_profile
from coda_aio.credentials.rotation_state import fingerprint
from coda_aio.rotator import TOKEN_COMMENT, ConfigureError, Rotator
from coda_aio.credentials.token_store import TokenStore
from coda_aio.credentials.workspace import Workspace
from conftest import USER, eventually

FAST = dict(rotation_interval=0.6, token_lifetime=5, revoke_grace=0.2, workspace_timeout=1.0)


class Harness:
    """A rotator wired as the app wires it, minus the web server."""

    def __init__(self, settings, http, **rotator_options):
        self.settings = settings
        self.tokens = TokenStore(settings.databrickscfg_path, settings.profile, settings.host)
        self.rotator = Rotator(settings, self.tokens, **rotator_options)
        self.sessions_open = True
        self.states: list[str] = []
        self.tokens.subscribe(self.states.append)
        self.rotator.attach(Workspace(settings.host, http, timeout=settings.workspace_timeout), lambda: self.sessions_open)

    async def __aenter__(self):
        await self.rotator.start()
        return self

    async def __aexit__(self, *exc):
        await self.rotator.stop()

    def profile_token(self) -> str | None:
        return (read_profile(self.settings.databrickscfg_path, self.settings.profile) or {}).get("token")


@pytest.fixture
def harness(make_settings, fake, http):
    def make(*, rotator_options=None, **changes):
        return Harness(make_settings(host=fake.url, **(FAST | changes)), http, **(rotator_options or {}))

    return make


async def test_cold_start_exchange_revokes_only_the_pasted_token(harness, fake, home: Path):
    pat = fake.issue_pat(USER, comment="bootstrap")
    fake.add_user("bob@example.com")
    bob = fake.issue_pat("bob@example.com")
    async with harness() as h:
        assert h.tokens.state == "missing"
        result = await h.rotator.configure(pat)
        assert result.user == USER
        assert result.pasted_token == "revoked"
        assert "revoked" in result.message
        current = h.tokens.token
        assert current and current != pat
        assert h.profile_token() == current
        assert not fake.is_live(pat)
        assert fake.is_live(current) and fake.is_live(bob)
        assert [t["comment"] for t in fake.live_tokens(USER)] == ["coda_aio rotating token"]
        cfg = h.settings.databrickscfg_path
        assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
        state_text = (home / ".coda" / "state.json").read_text()
        assert current not in state_text and pat not in state_text


async def test_pasted_token_is_kept_when_it_cannot_be_identified(harness, fake):
    notebook = fake.issue_pat(USER, comment="notebooks")
    pat = fake.issue_pat(USER, comment="bootstrap")
    async with harness(rotation_interval=30, token_lifetime=60) as h:
        result = await h.rotator.configure(pat)
        assert result.pasted_token == "kept"
        assert "kept" in result.message
        assert fake.is_live(pat) and fake.is_live(notebook)


@pytest.mark.parametrize("bad", ["", "   ", "dapi" + "0" * 32, "two words", "x" * 5000])
async def test_invalid_token_persists_nothing(harness, fake, home: Path, bad):
    async with harness() as h:
        with pytest.raises(ConfigureError) as e:
            await h.rotator.configure(bad)
        assert e.value.status == 400 and e.value.message
        assert h.tokens.state == "missing"
        assert not (home / ".databrickscfg").exists()
        assert fake.minted_count == 0


async def test_rotations_revoke_old_tokens_and_spare_the_users_others(harness, fake):
    notebook = fake.issue_pat(USER, comment="notebooks")
    pat = fake.issue_pat(USER)
    async with harness() as h:
        await h.rotator.configure(pat)
        seen = [h.tokens.token]
        while len(seen) < 5:
            await eventually(lambda: h.tokens.token != seen[-1], timeout=3)
            seen.append(h.tokens.token)
            assert h.profile_token() == h.tokens.token
            assert fake.is_live(h.tokens.token)
        # Every superseded token is revoked once its grace period is over.
        await eventually(lambda: not any(fake.is_live(t) for t in seen[:-2]), timeout=3)
        assert fake.is_live(notebook) and fake.is_live(pat)  # pat kept: two user tokens at paste
        assert h.states.count("invalid") == 0


async def test_rotation_pauses_while_no_session_is_open(harness, fake):
    async with harness() as h:
        await h.rotator.configure(fake.issue_pat(USER))
        h.sessions_open = False
        token = h.tokens.token
        assert h.rotator.next_rotation_seconds() is None
        await asyncio.sleep(1.5)
        assert h.tokens.token == token
        h.sessions_open = True
        h.rotator.wake()  # what the session manager's listener does
        await eventually(lambda: h.tokens.token != token, timeout=2)


async def test_warm_start_reuses_the_saved_token_and_rotates_when_old(harness, fake):
    async with harness(rotation_interval=30, token_lifetime=60) as h:
        await h.rotator.configure(fake.issue_pat(USER))
        token = h.tokens.token
    # A new process: no paste needed.
    async with harness(rotation_interval=30, token_lifetime=60) as h2:
        await eventually(lambda: h2.tokens.state == "valid")
        assert h2.tokens.token == token
        assert h2.tokens.info.user == USER
        assert 29 < h2.rotator.next_rotation_seconds() <= 30
    # Older than the interval at boot: rotated at once.
    await asyncio.sleep(0.7)
    async with harness() as h3:
        await eventually(lambda: h3.tokens.token not in (None, token), timeout=3)
        await eventually(lambda: not fake.is_live(token), timeout=3)


async def test_warm_start_with_a_dead_token_asks_again(harness, fake):
    async with harness() as h:
        await h.rotator.configure(fake.issue_pat(USER))
        token = h.tokens.token
    fake.revoke(token)
    async with harness() as h2:
        await eventually(lambda: h2.rotator.last_error is not None)
        assert h2.tokens.state == "missing"
        assert "paste a new one" in h2.rotator.last_error


async def test_a_token_revoked_behind_our_back_becomes_invalid(harness, fake):
    async with harness(rotation_interval=30, token_lifetime=60) as h:
        await h.rotator.configure(fake.issue_pat(USER))
        fake.revoke(h.tokens.token)
        h.rotator.check_soon()  # what the proxy does on an upstream 401/403
        await eventually(lambda: h.tokens.state == "invalid")
        assert h.states[-1] == "invalid" and h.tokens.token is None
        # A new paste brings it back.
        await h.rotator.configure(fake.issue_pat(USER))
        assert h.tokens.state == "valid"


async def test_mint_failures_and_hangs_are_retried(harness, fake):
    async with harness() as h:
        await h.rotator.configure(fake.issue_pat(USER))
        first = h.tokens.token
        fake.fail("token_create", 500, times=2)
        fake.fail("token_create", 429, times=1, retry_after=0.2)
        fake.hang("token_create", times=1)
        fake.reset("token_create", times=1)
        await eventually(lambda: h.tokens.token != first, timeout=10)
        assert fake.is_live(h.tokens.token) and h.tokens.state == "valid"
        assert h.rotator.last_error is None


async def test_revoke_failures_keep_the_record_until_a_later_revoke(harness, fake, home: Path):
    async with harness() as h:
        await h.rotator.configure(fake.issue_pat(USER))
        first = h.tokens.token
        fake.fail("token_delete", 500, times=20)
        await eventually(lambda: h.tokens.token != first, timeout=3)
        await asyncio.sleep(0.5)
        assert fake.is_live(first)
        state = json.loads((home / ".coda" / "state.json").read_text())
        assert fake.token_id_of(first) in [m["token_id"] for m in state["minted"]]
    fake.clear_faults()
    async with harness():  # the next boot cleans up what was left
        await eventually(lambda: not fake.is_live(first), timeout=5)


async def test_configure_when_scim_times_out(harness, fake, home: Path):
    pat = fake.issue_pat(USER)
    async with harness() as h:
        fake.hang("me", times=1)
        with pytest.raises(ConfigureError) as e:
            await h.rotator.configure(pat)
        assert e.value.status == 503 and "workspace" in e.value.message.lower()
        assert not (home / ".databrickscfg").exists()
        result = await h.rotator.configure(pat)  # the next try works
        assert result.user == USER


async def test_unparseable_databrickscfg_is_left_alone_but_the_token_works(harness, fake, home: Path):
    cfg = home / ".databrickscfg"
    cfg.write_text("[coda]\ntoken = a\ntoken = b\n")
    async with harness(rotation_interval=30, token_lifetime=60) as h:
        result = await h.rotator.configure(fake.issue_pat(USER))
        assert h.tokens.state == "valid" and fake.is_live(h.tokens.token)
        assert "cannot be parsed" in result.message
        assert cfg.read_text() == "[coda]\ntoken = a\ntoken = b\n"


async def test_databricks_sdk_follows_every_rotation(harness, fake, home: Path):
    """databricks-sdk in its own process, reading only ~/.databrickscfg, reaches the workspace
    with the token that is current right after each rotation."""
    script = (
        "from databricks.sdk import WorkspaceClient\n"
        "from coda_aio.credentials.rotation_state import fingerprint\n"
        "w = WorkspaceClient(profile='coda')\n"
        "print(w.current_user.me().user_name, fingerprint(w.config.token))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABRICKS_")} | {"HOME": str(home)}
    # The interval and grace leave the SDK's few seconds of start-up inside one token's life.
    async with harness(rotation_interval=4, revoke_grace=3, token_lifetime=20) as h:
        await h.rotator.configure(fake.issue_pat(USER))
        for _ in range(2):
            previous = h.tokens.token
            await eventually(lambda: h.tokens.token != previous, timeout=6)
            current = h.tokens.token
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", script, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
            assert out.decode().split() == [USER, fingerprint(current)]


# --- issue 14: the rotator never gives up while the workspace can be reached -----------------

SP_ID, SP_SECRET = "6f1c0a52-1111-4222-8333-944455556666", "sp-secret-value"


def state_ids(home: Path) -> list[str]:
    return [m["token_id"] for m in json.loads((home / ".coda" / "state.json").read_text())["minted"]]


async def test_warm_start_keeps_retrying_until_the_workspace_answers(harness, fake):
    async with harness(rotation_interval=30, token_lifetime=60) as h:
        await h.rotator.configure(fake.issue_pat(USER))
        saved = h.tokens.token
    fake.fail("me", 503, times=None)  # the workspace is down at restart
    async with harness(rotation_interval=4, token_lifetime=60) as h2:
        h2.sessions_open = False
        await eventually(lambda: fake.calls["me"] >= 8, timeout=30)  # well past the old 5 tries
        assert h2.tokens.state == "missing" and "Could not check the saved token" in h2.rotator.last_error
        fake.clear_faults()
        await eventually(lambda: h2.tokens.state == "valid", timeout=30)
        assert h2.tokens.token == saved and fake.is_live(saved)
        assert h2.rotator.last_error is None


@pytest.fixture
def sp_harness(harness, fake):
    fake.add_service_principal(SP_ID, SP_SECRET)

    def make(**changes):
        return harness(auth_mode="service-principal", client_id=SP_ID, client_secret=SP_SECRET, **changes)

    return make


async def test_service_principal_mode_retries_a_failed_mint_and_recovers_from_a_refused_token(sp_harness, fake):
    fake.fail("token_create", 500, times=1)
    async with sp_harness(rotation_interval=30, token_lifetime=60) as h:
        await eventually(lambda: h.tokens.state == "valid", timeout=30)
        first = h.tokens.token
        assert h.tokens.info.user == SP_ID and fake.is_live(first)
        # Refused behind our back, and the first new mint fails too: still no dead end.
        fake.revoke(first)
        fake.fail("token_create", 500, times=1)
        h.rotator.check_soon()
        await eventually(lambda: h.tokens.state == "valid" and h.tokens.token != first, timeout=30)
        assert fake.is_live(h.tokens.token) and "invalid" in h.states


async def test_an_unwritable_state_file_is_reported_retried_and_leaks_no_token(sp_harness, fake, home: Path):
    state = home / ".coda" / "state.json"
    state.mkdir(parents=True)  # unwritable even for root: os.replace cannot put a file there
    async with sp_harness(rotation_interval=30, token_lifetime=60) as h:
        await eventually(lambda: "state.json" in (h.rotator.last_error or ""), timeout=30)
        assert "revoked" in h.rotator.last_error
        # It keeps trying, and every token it could not record revoked itself.
        await eventually(lambda: fake.minted_count >= 2 and len(fake.revoked_ids) == fake.minted_count, timeout=30)
        assert not [t for t in fake.live_tokens(SP_ID) if t["comment"] == TOKEN_COMMENT]
        state.rmdir()  # fixed
        await eventually(lambda: h.tokens.state == "valid", timeout=30)
        assert h.rotator.last_error is None
        live = [t["token_id"] for t in fake.live_tokens(SP_ID) if t["comment"] == TOKEN_COMMENT]
        assert live == [h.tokens.info.token_id] and live == state_ids(home)


async def test_an_exception_at_boot_is_logged_and_retried(harness, fake, monkeypatch, caplog):
    async with harness(rotation_interval=30, token_lifetime=60) as h:
        await h.rotator.configure(fake.issue_pat(USER))
        saved = h.tokens.token
    import coda_aio.credentials.warm_start as warm_start_module

    real, calls = warm_start_module.read_profile, []

    def broken_once(*args):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(*args)

    monkeypatch.setattr(warm_start_module, "read_profile", broken_once)
    async with harness(rotation_interval=30, token_lifetime=60) as h2:
        await eventually(lambda: h2.tokens.state == "valid", timeout=10)
        assert h2.tokens.token == saved
    assert "rotation step failed" in caplog.text and "boom" in caplog.text


async def test_a_step_of_the_wall_clock_does_not_let_the_token_expire(harness, fake):
    offset = [0.0]
    wall = lambda: time.time() + offset[0]  # noqa: E731 - the system clock, as an admin might set it
    async with harness(rotation_interval=2, token_lifetime=4, revoke_grace=0.2,
                       rotator_options={"clock": wall}) as h:
        await h.rotator.configure(fake.issue_pat(USER))
        first = h.tokens.token
        offset[0] -= 5  # NTP steps the clock back
        await eventually(lambda: h.tokens.token != first, timeout=3.5)  # on time: before the 4 s lifetime
        assert fake.is_live(h.tokens.token)
        assert 1 < h.rotator.next_rotation_seconds() <= 2


async def test_a_paste_answers_while_a_rotation_hangs(harness, fake):
    async with harness(workspace_timeout=20) as h:
        await h.rotator.configure(fake.issue_pat(USER))
        fake.hang("token_create", times=1)
        await eventually(lambda: fake.calls["token_create"] == 2, timeout=5)  # the rotation is stuck
        try:
            result = await asyncio.wait_for(h.rotator.configure(fake.issue_pat(USER)), 10)
        finally:
            fake.clear_faults()
        assert result.user == USER and fake.is_live(h.tokens.token)


async def test_the_same_token_pasted_twice_at_once_gets_one_answer(harness, fake):
    pat = fake.issue_pat(USER)
    async with harness(rotation_interval=30, token_lifetime=60) as h:
        first, second = await asyncio.gather(h.rotator.configure(pat), h.rotator.configure(pat))
        assert first == second and first.pasted_token == "revoked"
        assert fake.minted_count == 1
        assert await h.rotator.configure(pat) == first  # a late repeat, before anything changed


async def test_a_change_of_user_revokes_the_previous_users_token_with_its_own(harness, fake):
    fake.add_user("bob@example.com")
    async with harness(rotation_interval=30, token_lifetime=60) as h:
        h.sessions_open = False
        await h.rotator.configure(fake.issue_pat(USER))
        ada = h.tokens.token
        await h.rotator.configure(fake.issue_pat("bob@example.com"))
        await eventually(lambda: not fake.is_live(ada), timeout=5)
        await eventually(lambda: fake.token_id_of(ada) not in state_ids(h.settings.home), timeout=5)


async def test_after_a_restart_another_users_token_is_kept_on_record_not_counted_revoked(harness, fake, home):
    fake.add_user("bob@example.com")
    async with harness(rotation_interval=30, token_lifetime=60, revoke_grace=30) as h:
        h.sessions_open = False
        await h.rotator.configure(fake.issue_pat(USER))
        ada = h.tokens.token
        await h.rotator.configure(fake.issue_pat("bob@example.com"))
    # The grace period had not passed: ada's token is still live and recorded.
    async with harness(rotation_interval=30, token_lifetime=60) as h2:
        h2.sessions_open = False
        await eventually(lambda: h2.tokens.info.user == "bob@example.com")
        await eventually(lambda: not h2.rotator._revocations._revoking)  # noqa: SLF001 - the boot's revocations are done
        assert fake.is_live(ada)  # bob's token cannot revoke it: a 404 from him proves nothing
        assert fake.token_id_of(ada) in state_ids(home)
        # When ada pastes again, her own token revokes it.
        result = await h2.rotator.configure(fake.issue_pat(USER))
        assert result.user == USER
        await eventually(lambda: not fake.is_live(ada), timeout=5)


async def test_a_profile_that_cannot_be_written_causes_no_mint_storm(harness, fake, home: Path):
    cfg = home / ".databrickscfg"
    broken = "[coda]\ntoken = a\ntoken = b\n"
    cfg.write_text(broken)
    async with harness(token_lifetime=30) as h:
        flushes = []
        real_flush = h.tokens.flush

        async def counting_flush(token):
            flushes.append(token)
            return await real_flush(token)

        h.tokens.flush = counting_flush
        await h.rotator.configure(fake.issue_pat(USER))
        current = h.tokens.token
        await eventually(lambda: len(flushes) >= 4, timeout=10)  # several rotation periods of retries
        assert fake.minted_count == 1 and h.tokens.token == current  # no mint: the flush is retried
        assert "cannot be parsed" in h.rotator.last_error
        assert cfg.read_text() == broken
        cfg.write_text("[coda]\n")  # the user fixes the file
        await eventually(lambda: h.profile_token() is not None, timeout=10)
        await eventually(lambda: h.rotator.last_error is None and fake.minted_count >= 2, timeout=10)


async def test_a_spaced_section_header_is_not_our_profile(harness, fake, home: Path):
    cfg = home / ".databrickscfg"
    cfg.write_text("[ coda ]\ntoken = theirs\n")
    async with harness(rotation_interval=30, token_lifetime=60) as h:
        result = await h.rotator.configure(fake.issue_pat(USER))
        assert "Warning" not in result.message and h.rotator.last_error is None
        assert h.profile_token() == h.tokens.token
        assert cfg.read_text().startswith("[ coda ]\ntoken = theirs\n")
        assert fake.minted_count == 1


async def test_an_unexpected_error_in_the_profile_editor_costs_a_flush_not_the_token(harness, fake, monkeypatch):
    import coda_aio.credentials.token_store as token_store_module

    def broken(*args, **kwargs):
        raise KeyError("coda")  # what the old section finder raised on "[ coda ]"

    monkeypatch.setattr(token_store_module, "update_profile", broken)
    async with harness(rotation_interval=30, token_lifetime=60) as h:
        result = await h.rotator.configure(fake.issue_pat(USER))
        assert "Warning" in result.message and h.tokens.state == "valid"
        assert fake.is_live(h.tokens.token) and fake.minted_count == 1
