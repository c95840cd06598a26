"""Agent CLI config writers: parseable files, merged with the user's, never a token."""

from __future__ import annotations

import json
import re
import stat
import tomllib
from pathlib import Path

from coda_aio.agents import AgentModels, write_agent_configs

PROXY_URL = "http://127.0.0.1:4123"
KEY = "coda-local-test-key_123"
TOKEN = "dapi0123456789abcdef-the-databricks-token"


def paths(home: Path) -> dict[str, Path]:
    return {
        "claude": home / ".claude" / "settings.json",
        "codex": home / ".codex" / "config.toml",
        "opencode": home / ".config" / "opencode" / "opencode.json",
        "gemini_env": home / ".gemini" / ".env",
        "gemini_settings": home / ".gemini" / "settings.json",
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

    codex = tomllib.loads(p["codex"].read_text())
    assert codex["model_provider"] == "databricks"
    assert codex["model"] == AgentModels().codex
    provider = codex["model_providers"]["databricks"]
    assert provider["base_url"] == f"{PROXY_URL}/serving-endpoints"
    assert provider["experimental_bearer_token"] == KEY
    assert provider["wire_api"] == "responses"

    opencode = json.loads(p["opencode"].read_text())
    options = opencode["provider"]["databricks"]["options"]
    assert options == {"baseURL": f"{PROXY_URL}/serving-endpoints", "apiKey": KEY}
    assert opencode["model"] == f"databricks/{AgentModels().claude}"
    assert AgentModels().claude in opencode["provider"]["databricks"]["models"]

    env = parse_dotenv(p["gemini_env"].read_text())
    assert env["GEMINI_API_KEY"] == KEY
    assert env["GOOGLE_GEMINI_BASE_URL"] == f"{PROXY_URL}/serving-endpoints/google"
    assert env["GEMINI_MODEL"] == AgentModels().gemini
    assert json.loads(p["gemini_settings"].read_text())["security"]["auth"]["selectedType"] == "gemini-api-key"

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
    assert set(opencode["provider"]["databricks"]["models"]) == {"my-endpoint", "c-model", "x-model", "g-model"}

    env_text = p["gemini_env"].read_text()
    assert env_text.startswith("# my settings\n")
    env = parse_dotenv(env_text)
    assert env["GEMINI_API_KEY"] == KEY and env["OTHER_VAR"] == "keep me" and env["GEMINI_MODEL"] == "g-model"
    assert env_text.count("GEMINI_API_KEY=") == 1
    gemini_settings = json.loads(p["gemini_settings"].read_text())
    assert gemini_settings == {"security": {"auth": {"selectedType": "oauth-personal"}}, "ui": {"x": 1}}

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
    assert report.written == [p["gemini_settings"]]  # the one healthy file still gets written


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
