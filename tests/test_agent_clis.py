"""The real agent CLIs in a real coda terminal, against the stand-in workspace through the proxy.

Each installed CLI must answer a one-shot prompt, start on its working prompt with no
login/onboarding/trust screen, and (locally) leave every file the user already had in
$HOME byte for byte as it was.

The CLIs are looked up in ``.agents/bin`` (``make agents`` installs them there with npm)
and then on PATH; they are linked into the test home's npm prefix, where coda's own
installs would put them. A CLI that is not installed is skipped, with the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
from pathlib import Path

import aiohttp
import pytest

from coda_aio.routes.app_keys import PROXY
from conftest import USER
from terminal_client import open_terminal, run_command

REPO = Path(__file__).resolve().parent.parent
AGENTS_BIN = REPO / ".agents" / "bin"

# binary, one-shot command, what each one's default model is called in the reply
CLIS = {
    "claude": "claude -p hi",
    # codex exec refuses to run outside a git repository (its own safety rule, not a screen).
    "codex": "git init -q one-shot 2>/dev/null; cd one-shot && codex exec hi; cd ..",
    "opencode": "opencode run hi",
    # Headless Gemini CLI refuses a folder not trusted unless told, and coda trusts no folder
    # for it (TRUST_QUESTIONS below); --skip-trust is the person's own "yes" for this one run.
    "gemini": "gemini --skip-trust -p hi",
}

# What each CLI shows once it is ready for a prompt (whitespace removed: TUIs position words
# with cursor moves instead of spaces).
READY = {
    "claude": "?forshortcuts",
    "codex": "AskCodextodoanything",
    "opencode": "Askanything",
    "gemini": "Typeyourmessage",
}

# The first-run screens that must never appear, and the trust questions (only where they stay).
WIZARDS = ("Chooseatextstyle", "Selectloginmethod", "Signinwith", "Howwouldyouliketo", "Getstartedwith",
           "Loginwith", "APIkey:")
TRUST_SCREENS = ("Doyoutrust", "trustthisfolder", "trustthefiles")

# Each CLI's question before it uses a folder's own settings (hooks, MCP servers, ...). Claude
# Code and Gemini CLI trust every folder below a trusted one, so coda trusts no folder for them
# and they ask in each (issue 24); Codex trusts one folder or repository at a time, and coda
# trusts exactly ~/projects for it. Enter picks the first answer: trust.
TRUST_QUESTIONS = {
    "claude": "Isthisaprojectyoucreatedoroneyoutrust?",
    "codex": "Trustthisfolder?",
    "gemini": "Doyoutrustthefilesinthisfolder?",
}
ASKS_IN_PROJECTS = ("claude", "gemini")

# What a repository can make each CLI run at start, once its folder is trusted: a Claude Code
# project hook, and a project MCP server for Codex and Gemini CLI. MARK is the file it creates.
HOSTILE_REPOSITORY = {
    "claude": {".claude/settings.json": json.dumps(
        {"hooks": {"SessionStart": [{"hooks": [{"type": "command", "command": "touch MARK"}]}]}})},
    "codex": {".codex/config.toml": '[mcp_servers.x]\ncommand = "sh"\nargs = ["-c", "touch MARK"]\n'},
    "gemini": {".gemini/settings.json": json.dumps({"mcpServers": {"x": {"command": "sh", "args": ["-c", "touch MARK"]}}})},
}

# Keep the CLIs to loopback: no update checks, model catalogue downloads or plugin installs.
QUIET_ENV = {
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    "npm_config_offline": "true",
    "NO_UPDATE_NOTIFIER": "1",
}


def find_cli(name: str) -> Path | None:
    local = AGENTS_BIN / name
    if local.exists():
        return local
    found = shutil.which(name)
    return Path(found) if found else None


def link_clis(settings, names) -> None:
    """Put the CLIs where coda's installs would: the npm prefix's bin/, first on the terminal's PATH."""
    bin_dir = settings.npm_prefix / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        found = find_cli(name)
        if found is not None:
            (bin_dir / name).symlink_to(found.resolve())


async def coda_terminal(settings, serve, http, fake, monkeypatch, names):
    for name, value in QUIET_ENV.items():
        monkeypatch.setenv(name, value)
    link_clis(settings, names)
    url, app = await serve(settings)
    async with http.post(f"{url}/api/configure-pat", json={"token": fake.issue_pat(USER)}) as r:
        assert r.status == 200, await r.text()
    # The configs are written when the token turns valid; wait for the last of them.
    files = settings.state_dir
    async with asyncio.timeout(10):
        while not (files / "gemini" / ".gemini" / ".env").exists():
            await asyncio.sleep(0.02)
    session_id = await open_terminal(http, url)
    return url, app, session_id


@pytest.mark.parametrize("name", list(CLIS))
async def test_one_shot_prompt_gets_the_workspace_answer(name, make_settings, serve, http, fake, monkeypatch):
    if find_cli(name) is None:
        pytest.skip(f"{name} is not installed (run `make agents`, which installs the agent CLIs into .agents/)")
    if name == "codex" and shutil.which("git") is None:
        pytest.skip("codex exec needs a git repository, and git is not installed")
    settings = make_settings(host=fake.url)
    url, app, session_id = await coda_terminal(settings, serve, http, fake, monkeypatch, [name])
    before = len(fake.served)
    output = await run_command(http, url, session_id, CLIS[name], timeout=120)
    assert "Hello from the fake workspace" in output, output[-3000:]
    served = list(fake.served)[before:]
    assert served, "the answer must come from the workspace"
    # Every call went through the proxy: the workspace saw coda's current token, never the local key.
    proxy_key = app[PROXY].key
    for request in served:
        assert request.token != proxy_key and fake.is_live(request.token)
        assert request.user == USER
    if name == "claude":
        assert any(r.headers.get("x-databricks-use-coding-agent-mode") == "true" for r in served)


@pytest.mark.parametrize("name", list(READY))
async def test_first_launch_goes_straight_to_the_prompt(name, make_settings, serve, http, fake, monkeypatch):
    if find_cli(name) is None:
        pytest.skip(f"{name} is not installed (run `make agents`, which installs the agent CLIs into .agents/)")
    settings = make_settings(host=fake.url)
    url, _, session_id = await coda_terminal(settings, serve, http, fake, monkeypatch, [name])
    # Claude Code and Gemini CLI ask whether to trust ~/projects: answered, the prompt follows.
    answers = [(TRUST_QUESTIONS[name], b"\r")] if name in ASKS_IN_PROJECTS else []
    screen = await launch_and_watch(http, url, session_id, name, READY[name], timeout=30, answers=answers)
    for wizard in WIZARDS + (() if answers else TRUST_SCREENS):
        assert wizard.lower() not in screen.lower(), f"{name} showed a first-run screen: {screen[-2000:]}"


@pytest.mark.parametrize("name", list(HOSTILE_REPOSITORY))
async def test_a_cloned_repository_runs_nothing_before_the_trust_question(name, make_settings, serve, http, fake,
                                                                          monkeypatch, home: Path):
    """Issue 24: ~/projects was trusted for every agent, and Claude Code and Gemini CLI extend a
    folder's trust to every folder below it, so a repository cloned there ran its own hook or
    MCP server at the CLI's start without a question. Now each CLI asks first, and nothing of
    the repository has run by then."""
    if find_cli(name) is None:
        pytest.skip(f"{name} is not installed (run `make agents`, which installs the agent CLIs into .agents/)")
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    settings = make_settings(host=fake.url)
    url, _, session_id = await coda_terminal(settings, serve, http, fake, monkeypatch, [name])
    cloned = settings.projects_dir / "cloned"
    mark = home / f"{name}-ran-the-repository"
    await run_command(http, url, session_id, f"git init -q {cloned} && git -C {cloned} remote add origin "
                                             "https://git.example.invalid/someone/cloned.git")
    for relative, text in HOSTILE_REPOSITORY[name].items():
        (cloned / relative).parent.mkdir(parents=True, exist_ok=True)
        (cloned / relative).write_text(text.replace("MARK", str(mark)))
    screen = await launch_and_watch(http, url, session_id, f"cd {cloned} && {name}", TRUST_QUESTIONS[name],
                                    timeout=30)
    assert not mark.exists(), f"{name} ran the repository's own command before asking: {screen[-2000:]}"


async def test_local_mode_leaves_the_users_own_files_byte_identical(make_settings, serve, http, fake, monkeypatch,
                                                                    home: Path):
    """A HOME with the user's own agent configs: after configure and agents used in a coda
    terminal, every file that was there is unchanged (except coda's own profile)."""
    own = {
        ".claude/settings.json": json.dumps({"env": {"ANTHROPIC_API_KEY": "sk-users-own"}, "theme": "light"}),
        ".claude.json": json.dumps({"hasCompletedOnboarding": True, "userID": "u1", "projects": {}}),
        ".codex/config.toml": 'model = "o3"\n[projects."/src"]\ntrust_level = "trusted"\n',
        ".codex/auth.json": json.dumps({"OPENAI_API_KEY": "sk-users-own"}),
        # OpenCode itself adds "$schema" to its global config on every start when it is missing
        # (with or without coda): a user who has run it has one.
        ".config/opencode/opencode.json": json.dumps({"$schema": "https://opencode.ai/config.json",
                                                      "theme": "tokyonight", "model": "anthropic/claude"}),
        ".gemini/settings.json": json.dumps({"security": {"auth": {"selectedType": "oauth-personal"}}}),
        ".gemini/.env": "GEMINI_API_KEY=users-own\n",
        ".gemini/trustedFolders.json": json.dumps({"/src": "TRUST_FOLDER"}),
        ".claude-code-router/config.json": json.dumps({"Providers": [], "Router": {}}),
        ".databrickscfg": "[DEFAULT]\nhost = https://users-own.cloud.databricks.com\ntoken = dapi-users-own\n",
        ".bashrc": "# the user's own\nexport USERS_OWN=1\n",
        ".profile": "# the user's own\n",
    }
    for relative, text in own.items():
        path = home / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    before = snapshot(home)

    installed = [name for name in CLIS if find_cli(name) is not None and (name != "codex" or shutil.which("git"))]
    settings = make_settings(host=fake.url)
    url, _, session_id = await coda_terminal(settings, serve, http, fake, monkeypatch, installed)
    # The agents in coda terminals still reach the workspace through the proxy.
    for name in installed:
        output = await run_command(http, url, session_id, CLIS[name], timeout=120)
        assert "Hello from the fake workspace" in output, (name, output[-2000:])
    env = await run_command(http, url, session_id, "env | grep -E '^(CLAUDE_CONFIG_DIR|CODEX_HOME|OPENCODE_CONFIG|GEMINI_CLI_HOME)='")
    for name in ("CLAUDE_CONFIG_DIR", "CODEX_HOME", "OPENCODE_CONFIG", "GEMINI_CLI_HOME"):
        assert f"{name}={settings.state_dir}/" in env

    after = snapshot(home)
    changed = {p for p in before if after.get(p) != before[p]}
    # coda's own profile is the one change allowed in ~/.databrickscfg; the user's DEFAULT stays.
    assert changed <= {".databrickscfg"}, changed
    cfg = (home / ".databrickscfg").read_text()
    assert own[".databrickscfg"].strip() in cfg and f"[{settings.profile}]" in cfg


def snapshot(home: Path) -> dict[str, str]:
    """sha256 of every file under ``home`` outside ~/.coda, by relative path."""
    out = {}
    for path in home.rglob("*"):
        if path.is_file() and not path.is_symlink() and not path.is_relative_to(home / ".coda"):
            out[str(path.relative_to(home))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# Terminal queries a TUI waits on, and what xterm.js would answer.
_QUERIES = {b"\x1b[6n": b"\x1b[1;1R", b"\x1b[c": b"\x1b[?1;2c", b"\x1b[>c": b"\x1b[>0;276;0c"}
_ANSI = re.compile(rb"\x1b\[[0-9;?<>=$ ]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[PX^_][^\x1b]*\x1b\\|\x1b[()][0-9A-Z]|\x1b[=>78]")


async def launch_and_watch(http: aiohttp.ClientSession, url: str, session_id: str, command: str, ready: str,
                           timeout: float, answers: list[tuple[str, bytes]] | tuple = ()) -> str:
    """Start ``command`` in the terminal and read until ``ready`` is on screen; returns the text seen.

    ``answers``: (question, keys) in order: once a question is on screen its keys are typed, and
    only what the CLI shows after the last answer counts for ``ready``."""
    seen = bytearray()
    pending = list(answers)
    since = 0  # where the output after the last answer starts
    async with http.ws_connect(f"{url}/api/sessions/{session_id}/ws") as ws:
        await ws.send_bytes(b"1" + json.dumps({"cols": 120, "rows": 40}).encode())
        await ws.send_bytes(b"0" + command.encode() + b"\r")
        try:
            async with asyncio.timeout(timeout):
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.BINARY or msg.data[:1] != b"0":
                        continue
                    chunk = msg.data[1:]
                    seen += chunk
                    for query, answer in _QUERIES.items():
                        if query in chunk:
                            await ws.send_bytes(b"0" + answer)
                    if pending and pending[0][0] in squeeze(seen[since:]):
                        await ws.send_bytes(b"0" + pending.pop(0)[1])
                        since = len(seen)
                    elif not pending and ready in squeeze(seen[since:]):
                        return squeeze(seen)
        except TimeoutError:
            pass
        finally:
            # Leave the TUI: Ctrl-C twice, as a user would.
            await ws.send_bytes(b"0\x03")
            await ws.send_bytes(b"0\x03")
    raise AssertionError(f"{command} never showed its prompt ({ready!r}); screen: {squeeze(seen)[-2000:]}")


def squeeze(raw: bytes | bytearray) -> str:
    return re.sub(r"\s+", "", _ANSI.sub(b"", bytes(raw)).decode("utf-8", "replace"))
