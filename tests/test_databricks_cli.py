"""The Databricks CLI setup step: the real install code against a local release server.

The release server serves a zip the test builds, laid out like the official ones, with a
stand-in ``databricks`` that answers ``current-user me`` through databricks-sdk with the
profile coda_aio flushes. Where a real Databricks CLI is on PATH it is tried too.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import stat
import sys
import zipfile
from pathlib import Path

import pytest
from aiohttp import web

from coda_aio.agents import databricks_cli
from coda_aio.config import Settings
from coda_aio.agents.setup import SetupRunner, databricks_cli_step
from conftest import USER, free_port, serving_app
from terminal_client import open_terminal, run_command

VERSION = "0.299.0"

STAND_IN = f"""#!{sys.executable}
# A stand-in for the Databricks CLI: the two commands the tests need, through databricks-sdk,
# which reads the profile named by DATABRICKS_CONFIG_PROFILE from ~/.databrickscfg.
import json, sys
args = sys.argv[1:]
if args == ["--version"]:
    print("Databricks CLI v{VERSION} (stand-in)")
elif args[:2] == ["current-user", "me"]:
    from databricks.sdk import WorkspaceClient
    print(json.dumps(WorkspaceClient().current_user.me().as_dict(), indent=2))
else:
    sys.exit("stand-in databricks: unsupported command " + " ".join(args))
"""


def release_zip(script: str = STAND_IN) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("LICENSE", "stand-in\n")
        info = zipfile.ZipInfo("databricks")
        info.external_attr = 0o755 << 16
        zf.writestr(info, script)
    return buffer.getvalue()


def release_app(files: dict[str, bytes], hits: list[str] | None = None) -> web.Application:
    """GitHub's release download layout: /v<version>/<file name>. ``hits`` records the requests."""
    app = web.Application()

    async def download(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if hits is not None:
            hits.append(name)
        if request.match_info["version"] != f"v{VERSION}" or name not in files:
            raise web.HTTPNotFound()
        return web.Response(body=files[name], content_type="application/octet-stream")

    app.router.add_get("/{version}/{name}", download)
    return app


def release_files(archive: bytes, listed_digest: str | None = None) -> dict[str, bytes]:
    system, arch = databricks_cli.this_platform()
    name = f"databricks_cli_{VERSION}_{system}_{arch}.zip"
    digest = listed_digest or hashlib.sha256(archive).hexdigest()
    other = "0" * 64
    sums = f"{other}  databricks_cli_{VERSION}_darwin_arm64.zip\n{digest}  {name}\n".encode()
    return {name: archive, f"databricks_cli_{VERSION}_SHA256SUMS": sums}


def settings_for(make_settings, release_url: str, **changes) -> Settings:
    return make_settings(**{"databricks_cli_version": VERSION, "databricks_cli_base_url": release_url, **changes})


async def run_step(settings: Settings, path: str = "/usr/bin:/bin") -> dict:
    runner = SetupRunner([databricks_cli_step(settings)], env={"PATH": path})
    runner.start()
    await runner.wait()
    [step] = runner.status()["steps"]
    return step


def test_release_names_follow_the_official_archives():
    release = databricks_cli.Release("0.290.1", "https://github.com/databricks/cli/releases/download/")
    assert release.url(release.archive_name("linux", "amd64")) == (
        "https://github.com/databricks/cli/releases/download/v0.290.1/databricks_cli_0.290.1_linux_amd64.zip"
    )
    assert release.url(release.sums_name) == (
        "https://github.com/databricks/cli/releases/download/v0.290.1/databricks_cli_0.290.1_SHA256SUMS"
    )


def test_settings_from_env():
    env = {"HOME": "/tmp/h", "CODA_DATABRICKS_CLI_VERSION": "v0.300.2", "CODA_DATABRICKS_CLI_BASE_URL": "http://m/d/"}
    settings = Settings.from_env(env)
    assert (settings.databricks_cli_version, settings.databricks_cli_base_url) == ("0.300.2", "http://m/d")
    with pytest.raises(ValueError, match="CODA_DATABRICKS_CLI_VERSION"):
        Settings.from_env({"HOME": "/tmp/h", "CODA_DATABRICKS_CLI_VERSION": "latest; rm -rf"})


async def test_step_installs_the_verified_binary_into_the_terminals_bin(make_settings):
    archive = release_zip()
    port = free_port()
    async with serving_app(release_app(release_files(archive)), port) as url:
        settings = settings_for(make_settings, url)
        step = await run_step(settings)
    assert step["status"] == "done", step
    installed = settings.npm_prefix / "bin" / "databricks"
    assert installed.read_text() == STAND_IN
    assert stat.S_IMODE(installed.stat().st_mode) == 0o755
    # Nothing but the binary is left behind: no download, no temp file.
    assert sorted(p.name for p in installed.parent.iterdir()) == ["databricks"]


async def test_bad_checksum_fails_clearly_and_installs_nothing(make_settings):
    archive = release_zip()
    port = free_port()
    async with serving_app(release_app(release_files(archive, listed_digest="ab" * 32)), port) as url:
        settings = settings_for(make_settings, url)
        step = await run_step(settings)
    assert step["status"] == "failed"
    assert "checksum mismatch" in step["error"] and "nothing was installed" in step["error"]
    bin_dir = settings.npm_prefix / "bin"
    assert not bin_dir.exists() or list(bin_dir.iterdir()) == []


async def test_missing_release_and_corrupt_archive_fail_with_a_message(make_settings):
    port = free_port()
    corrupt = b"PK\x03\x04 not really a zip"
    async with serving_app(release_app(release_files(corrupt)), port) as url:
        step = await run_step(settings_for(make_settings, url))
        assert step["status"] == "failed" and "not a valid zip" in step["error"]
        missing = await run_step(settings_for(make_settings, url, databricks_cli_version="0.0.1"))
        assert missing["status"] == "failed" and "HTTP 404" in missing["error"]
    unreachable = await run_step(settings_for(make_settings, f"http://127.0.0.1:{free_port()}"))
    assert unreachable["status"] == "failed"
    # In words, with what to do, not an exception's repr.
    assert unreachable["error"] == ("cannot download the Databricks CLI: 127.0.0.1 could not be reached "
                                    "(no network, a firewall, or no DNS for it); nothing was installed")
    assert "CODA_DATABRICKS_CLI_BASE_URL" in unreachable["advice"] and "retry" in unreachable["advice"]
    assert not (make_settings().npm_prefix / "bin" / "databricks").exists()


@pytest.mark.parametrize("version_line, installed", [
    (f"Databricks CLI v{VERSION}", False),  # the version asked for: nothing to do
    ("Databricks CLI v0.250.0", True),  # another version: CODA_DATABRICKS_CLI_VERSION's is installed
    ("Version 0.18.0", True),  # the retired Python databricks-cli: ours is installed (first on PATH)
])
async def test_skipped_only_when_the_current_cli_is_already_on_path(make_settings, tmp_path: Path, version_line,
                                                                     installed):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "databricks").write_text(f"#!/bin/sh\necho '{version_line}'\n")
    (elsewhere / "databricks").chmod(0o755)
    port = free_port()
    hits: list[str] = []
    async with serving_app(release_app(release_files(release_zip()), hits), port) as url:
        settings = settings_for(make_settings, url)
        step = await run_step(settings, path=f"{elsewhere}:/usr/bin:/bin")
    assert step["status"] == ("done" if installed else "skipped")
    assert bool(hits) == installed
    assert (settings.npm_prefix / "bin" / "databricks").exists() == installed


async def test_current_user_me_in_a_coda_terminal(make_settings, serve, http, fake):
    """The installed CLI, in a real terminal, answers with the profile coda_aio flushed."""
    port = free_port()
    async with serving_app(release_app(release_files(release_zip())), port) as release_url:
        settings = settings_for(make_settings, release_url, host=fake.url)
        assert (await run_step(settings))["status"] == "done"
    output = await configured_terminal_runs(settings, serve, http, fake, "databricks current-user me")
    assert f'"userName": "{USER}"' in output


@pytest.mark.skipif(shutil.which("databricks") is None,
                    reason="no Databricks CLI on PATH here (its releases are on github.com, which this "
                           "machine cannot reach); the stand-in covers the flow")
async def test_real_databricks_cli_current_user_me(make_settings, serve, http, fake):
    settings = make_settings(host=fake.url)
    output = await configured_terminal_runs(settings, serve, http, fake, "databricks current-user me -o json")
    assert USER in output


async def configured_terminal_runs(settings: Settings, serve, http, fake, command: str) -> str:
    url, _ = await serve(settings)
    async with http.post(f"{url}/api/configure-pat", json={"token": fake.issue_pat(USER)}) as r:
        assert r.status == 200, await r.text()
    session_id = await open_terminal(http, url)
    # The SDK must find the profile by itself: nothing in the environment names a token.
    env = await run_command(http, url, session_id, "env | grep ^DATABRICKS_ | sort")
    assert "DATABRICKS_TOKEN" not in env and f"DATABRICKS_CONFIG_PROFILE={settings.profile}" in env
    return await run_command(http, url, session_id, command, timeout=60)


async def test_a_cli_of_another_version_in_the_terminals_bin_is_replaced(make_settings):
    settings = settings_for(make_settings, "http://unused")
    bin_dir = settings.npm_prefix / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "databricks").write_text("#!/bin/sh\necho 'Databricks CLI v0.250.0'\n")
    (bin_dir / "databricks").chmod(0o755)
    async with serving_app(release_app(release_files(release_zip())), free_port()) as url:
        step = await run_step(settings.with_changes(databricks_cli_base_url=url))
    assert step["status"] == "done", step
    assert (bin_dir / "databricks").read_text() == STAND_IN
