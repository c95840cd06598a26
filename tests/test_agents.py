"""Agent CLI config writers: parseable files, merged with the user's, never a token."""

from __future__ import annotations

import json
import re
import stat
import tomllib
from pathlib import Path

from coda_aio.agents.files import AgentFiles
from coda_aio.agents.configs import CODING_AGENT_HEADER, AgentModels, write_agent_configs
from coda_aio.terminal.environment import agent_env
from coda_aio.config import Settings

PROXY_URL = "http://127.0.0.1:4123"
KEY = "coda-local-test-key_123"
TOKEN = "dapi0123456789abcdef-the-databricks-token"


def paths(home: Path) -> dict[str, Path]:
    return {
        "claude": home / ".claude" / "settings.json",
        "claude_state": home / ".claude.json",
        "codex": home / ".codex" / "config.toml",
        "opencode": home / ".config" / "opencode" / "opencode.json",
        "gemini_env": home / ".gemini" / ".env",
        "gemini_settings": home / ".gemini" / "settings.json",
        "gemini_trust": home / ".gemini" / "trustedFolders.json",
        "ccr": home / ".claude-code-router" / "config.json",
    }


def parse_dotenv(text: str) -> dict[str, str]:
    """The dotenv rules agents use: KEY=VALUE lines, '#' comments and blank lines ignored."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*)", line)
        assert match, f"not a dotenv line: {line!r}"
        values[match.group(1)] = match.group(2).strip().strip("'\"")
    return values


def test_fresh_home_gets_every_config(home: Path):
    report = write_agent_configs(home, PROXY_URL, KEY)
    p = paths(home)
    assert report.ok, report.errors
    assert set(report.written) == set(p.values())

    claude = json.loads(p["claude"].read_text())["env"]
    assert claude["ANTHROPIC_BASE_URL"] == f"{PROXY_URL}/serving-endpoints/anthropic"
    assert claude["ANTHROPIC_AUTH_TOKEN"] == KEY
    assert claude["ANTHROPIC_MODEL"] == AgentModels().claude
    assert claude["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == AgentModels().claude_fast
    assert claude["ANTHROPIC_CUSTOM_HEADERS"] == CODING_AGENT_HEADER

    # First-run screens are answered: onboarding done. The trust questions of Claude Code and
    # Gemini CLI stay (their trust of a folder would cover every repository cloned below it);
    # Codex trusts exactly the projects folder, not the folders in it.
    projects = str(home / "projects")
    state = json.loads(p["claude_state"].read_text())
    assert state["hasCompletedOnboarding"] is True
    assert "projects" not in state
    assert json.loads(p["gemini_trust"].read_text()) == {}

    codex = tomllib.loads(p["codex"].read_text())
    assert codex["model_provider"] == "databricks"
    assert codex["model"] == AgentModels().codex
    provider = codex["model_providers"]["databricks"]
    assert provider["base_url"] == f"{PROXY_URL}/serving-endpoints"
    assert provider["experimental_bearer_token"] == KEY
    assert provider["wire_api"] == "responses"
    assert codex["projects"][projects] == {"trust_level": "trusted"}

    opencode = json.loads(p["opencode"].read_text())
    options = opencode["provider"]["databricks"]["options"]
    assert options == {"baseURL": f"{PROXY_URL}/serving-endpoints", "apiKey": KEY}
    assert opencode["model"] == f"databricks/{AgentModels().claude}"
    assert opencode["small_model"] == f"databricks/{AgentModels().claude_fast}"
    assert AgentModels().claude in opencode["provider"]["databricks"]["models"]

    env = parse_dotenv(p["gemini_env"].read_text())
    assert env["GEMINI_API_KEY"] == KEY
    assert env["GOOGLE_GEMINI_BASE_URL"] == f"{PROXY_URL}/serving-endpoints/google"
    assert env["GEMINI_MODEL"] == AgentModels().gemini
    gemini = json.loads(p["gemini_settings"].read_text())
    assert gemini["security"]["auth"]["selectedType"] == "gemini-api-key"
    assert gemini["privacy"]["usageStatisticsEnabled"] is False and gemini["general"]["enableAutoUpdate"] is False

    ccr = json.loads(p["ccr"].read_text())
    [ours] = ccr["Providers"]
    assert ours["name"] == "databricks"
    assert ours["api_base_url"] == f"{PROXY_URL}/serving-endpoints/{AgentModels().claude}/invocations"
    assert ours["api_key"] == KEY
    assert ccr["Router"]["default"] == f"databricks,{AgentModels().claude}"

    for path in p.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert TOKEN not in path.read_text()
        assert "dapi" not in path.read_text()


def test_existing_files_keep_the_users_keys(home: Path):
    p = paths(home)
    p["claude"].parent.mkdir(parents=True)
    p["claude"].write_text(json.dumps({"theme": "dark", "env": {"MY_VAR": "1", "ANTHROPIC_BASE_URL": "https://old"}}))
    p["codex"].parent.mkdir(parents=True)
    p["codex"].write_text(
        'model = "o3"\napproval_policy = "on-request"\n\n'
        '[model_providers.other]\nname = "Other"\nbase_url = "https://other/v1"\n\n'
        '[model_providers.databricks]\nname = "Mine"\nenv_key = "DATABRICKS_TOKEN"\nrequest_max_retries = 2\n\n'
        '[mcp_servers.docs]\ncommand = "docs-server"\n'
    )
    p["opencode"].parent.mkdir(parents=True)
    p["opencode"].write_text(
        json.dumps({"theme": "tokyonight", "provider": {"ollama": {"npm": "x"}, "databricks": {"models": {"my-endpoint": {}}}}})
    )
    p["gemini_env"].parent.mkdir(parents=True)
    p["gemini_env"].write_text("# my settings\nGEMINI_API_KEY=old-key\nexport OTHER_VAR=keep me\n\nGEMINI_API_KEY=dup\n")
    p["gemini_settings"].write_text(json.dumps({"security": {"auth": {"selectedType": "oauth-personal"}}, "ui": {"x": 1}}))
    p["ccr"].parent.mkdir(parents=True)
    p["ccr"].write_text(
        json.dumps(
            {
                "PORT": 3456,
                "Providers": [
                    {"name": "openrouter", "api_base_url": "https://openrouter.ai/api/v1/chat/completions", "models": ["m"]},
                    {"name": "databricks", "api_base_url": "https://old", "transformer": {"use": ["mine"]}},
                ],
                "Router": {"default": "openrouter,m"},
            }
        )
    )

    models = AgentModels(claude="c-model", claude_opus="o-model", claude_fast="h-model", codex="x-model", gemini="g-model")
    report = write_agent_configs(home, PROXY_URL, KEY, models)
    assert report.ok, report.errors

    claude = json.loads(p["claude"].read_text())
    assert claude["theme"] == "dark" and claude["env"]["MY_VAR"] == "1"
    assert claude["env"]["ANTHROPIC_BASE_URL"] == f"{PROXY_URL}/serving-endpoints/anthropic"
    assert claude["env"]["ANTHROPIC_MODEL"] == "c-model"

    codex = tomllib.loads(p["codex"].read_text())
    assert codex["approval_policy"] == "on-request"
    assert codex["model"] == "x-model"
    assert codex["model_providers"]["other"] == {"name": "Other", "base_url": "https://other/v1"}
    ours = codex["model_providers"]["databricks"]
    assert ours["name"] == "Mine" and ours["request_max_retries"] == 2
    assert "env_key" not in ours  # would override the key with an env var's value
    assert codex["mcp_servers"]["docs"]["command"] == "docs-server"

    opencode = json.loads(p["opencode"].read_text())
    assert opencode["theme"] == "tokyonight"
    assert opencode["provider"]["ollama"] == {"npm": "x"}
    assert set(opencode["provider"]["databricks"]["models"]) == {"my-endpoint", "c-model", "h-model", "x-model", "g-model"}

    env_text = p["gemini_env"].read_text()
    assert env_text.startswith("# my settings\n")
    env = parse_dotenv(env_text)
    assert env["GEMINI_API_KEY"] == KEY and env["OTHER_VAR"] == "keep me" and env["GEMINI_MODEL"] == "g-model"
    assert env_text.count("GEMINI_API_KEY=") == 1
    gemini_settings = json.loads(p["gemini_settings"].read_text())
    assert gemini_settings["security"] == {"auth": {"selectedType": "oauth-personal"}}
    assert gemini_settings["ui"] == {"x": 1}

    ccr = json.loads(p["ccr"].read_text())
    assert ccr["PORT"] == 3456
    assert [prov["name"] for prov in ccr["Providers"]] == ["openrouter", "databricks"]
    databricks = ccr["Providers"][1]
    assert databricks["transformer"] == {"use": ["mine"]}
    assert databricks["api_base_url"] == f"{PROXY_URL}/serving-endpoints/c-model/invocations"
    assert databricks["models"] == ["c-model"] and databricks["api_key"] == KEY
    assert ccr["Router"]["default"] == "openrouter,m"  # the user's routing choice stands


def test_rewriting_is_stable(home: Path):
    write_agent_configs(home, PROXY_URL, KEY)
    first = {name: path.read_text() for name, path in paths(home).items()}
    write_agent_configs(home, PROXY_URL, KEY)
    assert {name: path.read_text() for name, path in paths(home).items()} == first


def test_unparseable_files_are_left_untouched_and_reported(home: Path):
    p = paths(home)
    broken = {
        "claude": "{ this is not json",
        "codex": "model = [unclosed\n",
        "opencode": "[1, 2, 3]",  # valid JSON, but not an object
        "gemini_env": "GEMINI_API_KEY=x\nthis line is nonsense\n",
        "ccr": json.dumps({"Providers": "not a list"}),
    }
    for name, text in broken.items():
        p[name].parent.mkdir(parents=True, exist_ok=True)
        p[name].write_text(text)

    report = write_agent_configs(home, PROXY_URL, KEY)

    for name, text in broken.items():
        assert p[name].read_text() == text, name
        assert any(str(p[name]) in error for error in report.errors), (name, report.errors)
    assert len(report.errors) == len(broken)
    # The healthy files still get written.
    assert set(report.written) == {p["claude_state"], p["gemini_settings"], p["gemini_trust"]}


def test_nested_key_of_the_wrong_type_is_reported(home: Path):
    p = paths(home)
    p["claude"].parent.mkdir(parents=True)
    p["claude"].write_text(json.dumps({"env": ["not", "an", "object"]}))
    report = write_agent_configs(home, PROXY_URL, KEY)
    assert json.loads(p["claude"].read_text()) == {"env": ["not", "an", "object"]}
    assert any("'env' is not an object" in e for e in report.errors)


def test_models_from_env():
    models = AgentModels.from_env(
        {"ANTHROPIC_MODEL": "a", "CODEX_MODEL": "b", "GEMINI_MODEL": "c", "ANTHROPIC_SMALL_FAST_MODEL": "d"}
    )
    assert (models.claude, models.codex, models.gemini, models.claude_fast) == ("a", "b", "c", "d")
    assert models.claude_opus == AgentModels().claude_opus
    assert AgentModels.from_env({"ANTHROPIC_MODEL": "  "}) == AgentModels()


def test_users_answers_to_first_run_questions_stand(home: Path):
    p = paths(home)
    projects = str(home / "projects")
    p["claude_state"].write_text(json.dumps({
        "numStartups": 12, "hasCompletedOnboarding": False,
        "projects": {projects: {"hasTrustDialogAccepted": False, "allowedTools": ["x"]}, "/other": {}},
    }))
    p["codex"].parent.mkdir(parents=True)
    p["codex"].write_text(f'[projects."{projects}"]\ntrust_level = "untrusted"\n')
    p["gemini_trust"].parent.mkdir(parents=True)
    p["gemini_trust"].write_text(json.dumps({projects: "DO_NOT_TRUST", "/work": "TRUST_PARENT"}))
    assert write_agent_configs(home, PROXY_URL, KEY).ok

    state = json.loads(p["claude_state"].read_text())
    # Onboarding is a one-time screen, not a choice: it is always marked done.
    assert state["hasCompletedOnboarding"] is True and state["numStartups"] == 12
    assert state["projects"][projects] == {"hasTrustDialogAccepted": False, "allowedTools": ["x"]}
    assert state["projects"]["/other"] == {}
    assert tomllib.loads(p["codex"].read_text())["projects"][projects] == {"trust_level": "untrusted"}
    assert json.loads(p["gemini_trust"].read_text()) == {projects: "DO_NOT_TRUST", "/work": "TRUST_PARENT"}


def test_the_blanket_trust_coda_used_to_write_is_withdrawn(home: Path):
    """Issue 24: Claude Code and Gemini CLI trust every folder below a trusted one, so the
    projects folder trusted by coda let any repository cloned into it run its own hooks and
    MCP servers without the question. Those grants go; the user's answers elsewhere stay."""
    p = paths(home)
    projects = str(home / "projects")
    own = f"{projects}/mine"
    p["claude_state"].write_text(json.dumps({"projects": {
        projects: {"hasTrustDialogAccepted": True, "allowedTools": ["x"]},
        own: {"hasTrustDialogAccepted": True}}}))
    p["gemini_trust"].parent.mkdir(parents=True)
    p["gemini_trust"].write_text(json.dumps({projects: "TRUST_FOLDER", own: "TRUST_FOLDER"}))
    assert write_agent_configs(home, PROXY_URL, KEY).ok
    state = json.loads(p["claude_state"].read_text())
    assert state["projects"] == {projects: {"allowedTools": ["x"]}, own: {"hasTrustDialogAccepted": True}}
    assert json.loads(p["gemini_trust"].read_text()) == {own: "TRUST_FOLDER"}


def test_local_mode_writes_only_under_dot_coda(home: Path):
    """Locally the agents get config directories of coda's own; the user's files stay as they were."""
    settings = Settings(home=home)
    files = AgentFiles.for_settings(settings)
    report = write_agent_configs(files, PROXY_URL, KEY)
    assert report.ok, report.errors
    written = {path for path in home.rglob("*") if path.is_file()}
    assert written == set(report.written)
    assert all(path.is_relative_to(home / ".coda") for path in written), written

    coda = home / ".coda"
    assert files.env == {
        "CLAUDE_CONFIG_DIR": str(coda / "claude"),
        "CODEX_HOME": str(coda / "codex"),
        "OPENCODE_CONFIG": str(coda / "opencode" / "opencode.json"),
        "GEMINI_CLI_HOME": str(coda / "gemini"),
    }
    # Each file is where its CLI looks when given that setting.
    assert (coda / "claude" / "settings.json") in written and (coda / "claude" / ".claude.json") in written
    assert (coda / "codex" / "config.toml") in written
    assert (coda / "opencode" / "opencode.json") in written
    for name in ("settings.json", ".env", "trustedFolders.json"):
        assert (coda / "gemini" / ".gemini" / name) in written
    # Claude Code Router has no config-dir setting: locally it is left alone.
    assert not any("claude-code-router" in str(path) for path in written)
    trusted = json.loads((coda / "gemini" / ".gemini" / "trustedFolders.json").read_text())
    assert trusted == {}


def test_app_mode_uses_the_real_home(home: Path):
    files = AgentFiles.for_settings(Settings(home=home, app_name="coda"))
    assert files == AgentFiles.in_home(home, home / "projects")
    assert files.env == {}
    assert files.claude_settings == home / ".claude" / "settings.json"
    # No config directory to point at; Gemini CLI's settings, which a folder's trust would
    # otherwise decide (issue 24), are in the environment as they are locally.
    assert agent_env(files, PROXY_URL, KEY, AgentModels(gemini="g-model")) == {
        "GEMINI_API_KEY": KEY,
        "GOOGLE_GEMINI_BASE_URL": f"{PROXY_URL}/serving-endpoints/google",
        "GEMINI_MODEL": "g-model",
        "GEMINI_API_KEY_AUTH_MECHANISM": "bearer",
    }


def test_local_terminal_env_names_the_config_dirs_and_gemini_settings(home: Path):
    files = AgentFiles.for_settings(Settings(home=home))
    env = agent_env(files, PROXY_URL + "/", KEY, AgentModels(gemini="g-model"))
    assert env == {
        **files.env,
        "GEMINI_API_KEY": KEY,
        "GOOGLE_GEMINI_BASE_URL": f"{PROXY_URL}/serving-endpoints/google",
        "GEMINI_MODEL": "g-model",
        "GEMINI_API_KEY_AUTH_MECHANISM": "bearer",
    }
    assert not any(value.startswith("dapi") for value in env.values())
