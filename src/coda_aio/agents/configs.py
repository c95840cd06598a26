"""Config writers for the agent CLIs: each points its agent at the local proxy.

No Databricks token ever goes into these files: the credential each agent sends is the
static local key, and the proxy swaps it for the current token on every request. A
rotation therefore never leaves an agent with a stale credential, and nothing here needs
rewriting when the token changes.

Where the files live (``agent_files.AgentFiles``): in App mode the container's home is the user's own
and the files are the usual ones (~/.claude/settings.json, ...). Locally coda_aio never
modifies a file the user already had: every CLI gets its own config directory under
~/.coda/, and terminals point the CLI at it through the CLI's own setting
(CLAUDE_CONFIG_DIR, CODEX_HOME, OPENCODE_CONFIG, GEMINI_CLI_HOME; ``terminal.environment``).

Each writer merges into an existing file: it sets only the keys listed below and keeps
every other key. A file that cannot be parsed is left untouched and reported. Writes are
atomic with mode 0600 (the local key is a credential for the proxy).

| agent              | file (App mode; locally under ~/.coda/) | keys owned                                   |
| ------------------ | ---------------------------------------- | -------------------------------------------- |
| Claude Code        | ~/.claude/settings.json (claude/)        | env.ANTHROPIC_BASE_URL, env.ANTHROPIC_AUTH_TOKEN, |
|                    |                                          | env.ANTHROPIC_*MODEL, env.ANTHROPIC_CUSTOM_HEADERS, two CLAUDE_CODE_* flags |
|                    | ~/.claude.json (claude/.claude.json)     | hasCompletedOnboarding; withdraws a trust of the projects folder |
| Codex              | ~/.codex/config.toml (codex/)            | model, model_provider, [model_providers.databricks], |
|                    |                                          | the projects folder's trust_level            |
| OpenCode           | ~/.config/opencode/opencode.json         | model, small_model, provider.databricks (options, our models) |
|                    | (opencode/opencode.json)                 |                                              |
| Gemini CLI         | ~/.gemini/.env (gemini/.gemini/.env)     | GEMINI_API_KEY, GOOGLE_GEMINI_BASE_URL, GEMINI_MODEL, |
|                    |                                          | GEMINI_API_KEY_AUTH_MECHANISM                |
|                    | ~/.gemini/settings.json                  | security.auth.selectedType, privacy.usageStatisticsEnabled, |
|                    |                                          | general.enableAutoUpdate, each only when unset |
|                    | ~/.gemini/trustedFolders.json            | withdraws TRUST_FOLDER of the projects folder |
| Claude Code Router | ~/.claude-code-router/config.json        | App mode only (it has no config-dir setting): |
|                    |                                          | the Providers[] entry "databricks"; Router.default when unset or ours |

Writing is blocking file I/O: call ``write_agent_configs`` through ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import tomli_w

from coda_aio.agents.files import AgentFiles
from coda_aio.files import write_atomic

PROVIDER_ID = "databricks"
CODING_AGENT_HEADER = "x-databricks-use-coding-agent-mode: true"


@dataclass(frozen=True)
class AgentModels:
    """Databricks serving endpoint names the agents ask for.

    Defaults are pay-per-token foundation model endpoints that Databricks provisions in
    every workspace of a supported region; regions differ, so each is overridable.
    """

    claude: str = "databricks-claude-sonnet-4-5"
    claude_opus: str = "databricks-claude-opus-4-5"
    claude_fast: str = "databricks-claude-haiku-4-5"
    codex: str = "databricks-gpt-5-2"
    gemini: str = "databricks-gemini-2-5-pro"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "AgentModels":
        """Models from ANTHROPIC_MODEL, ANTHROPIC_DEFAULT_OPUS_MODEL, ANTHROPIC_SMALL_FAST_MODEL
        (or ANTHROPIC_DEFAULT_HAIKU_MODEL), CODEX_MODEL and GEMINI_MODEL; defaults otherwise."""
        default = cls()

        def pick(*names: str, fallback: str) -> str:
            for name in names:
                value = (env.get(name) or "").strip()
                if value:
                    return value
            return fallback

        return cls(
            claude=pick("ANTHROPIC_MODEL", fallback=default.claude),
            claude_opus=pick("ANTHROPIC_DEFAULT_OPUS_MODEL", fallback=default.claude_opus),
            claude_fast=pick(
                "ANTHROPIC_SMALL_FAST_MODEL", "ANTHROPIC_DEFAULT_HAIKU_MODEL", fallback=default.claude_fast
            ),
            codex=pick("CODEX_MODEL", fallback=default.codex),
            gemini=pick("GEMINI_MODEL", fallback=default.gemini),
        )


@dataclass
class AgentConfigReport:
    written: list[Path] = field(default_factory=list)
    # One message per file left as it was, naming the file and what to do about it.
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class UnusableConfig(Exception):
    """The existing file cannot be merged into; it is left untouched."""


# --- the writers ------------------------------------------------------------------


def claude_code_settings(existing: dict, proxy_url: str, key: str, models: AgentModels) -> dict:
    env = _sub_table(existing, "env")
    env.update(
        {
            "ANTHROPIC_BASE_URL": f"{proxy_url}/serving-endpoints/anthropic",
            "ANTHROPIC_AUTH_TOKEN": key,
            "ANTHROPIC_MODEL": models.claude,
            "ANTHROPIC_DEFAULT_SONNET_MODEL": models.claude,
            "ANTHROPIC_DEFAULT_OPUS_MODEL": models.claude_opus,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": models.claude_fast,
            # Older Claude Code releases read this name for the background model.
            "ANTHROPIC_SMALL_FAST_MODEL": models.claude_fast,
            # Databricks' setup for Claude Code sends this header: the workspace then
            # counts the calls as coding-agent traffic (AI Gateway usage and limits).
            "ANTHROPIC_CUSTOM_HEADERS": CODING_AGENT_HEADER,
            # Databricks' Anthropic endpoint rejects requests carrying beta features it
            # does not know; this keeps Claude Code to the stable API.
            "CLAUDE_CODE_DISABLE_EXPERIMENTAL_BETAS": "1",
            # Telemetry, error reports and auto-update go to the internet directly, not
            # through the proxy; Databricks Apps often have no such egress.
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
    )
    return existing


def claude_code_state(existing: dict, projects_dir: Path) -> dict:
    # Without this Claude Code opens on its theme/login onboarding; an API credential in
    # settings.json makes the login moot.
    existing["hasCompletedOnboarding"] = True
    # Its trust question stays (docs/security.md, "Cloned repositories"): a trusted folder
    # runs the repository's own hooks and settings without asking, and trust given to a
    # folder holds for every folder below it, so trusting the projects folder trusted every
    # repository cloned into it. That grant (which coda used to write) is withdrawn.
    projects = existing.get("projects")
    project = projects.get(str(projects_dir)) if isinstance(projects, dict) else None
    if isinstance(project, dict) and project.get("hasTrustDialogAccepted") is True:
        del project["hasTrustDialogAccepted"]
    return existing


def codex_config(existing: dict, proxy_url: str, key: str, models: AgentModels) -> dict:
    providers = _sub_table(existing, "model_providers")
    provider = _sub_table(providers, PROVIDER_ID)
    # Codex adds an env var's value as the bearer when env_key/auth are set; either would
    # override the local key, so they cannot stay in our provider table.
    provider.pop("env_key", None)
    provider.pop("auth", None)
    provider.setdefault("name", "Databricks (through coda)")
    provider.update(
        {
            # Databricks serves the OpenAI Responses API at /serving-endpoints/responses;
            # current Codex releases speak only the Responses wire API.
            "base_url": f"{proxy_url}/serving-endpoints",
            "wire_api": "responses",
            # The local key lives in the file, so the PTY environment carries nothing.
            "experimental_bearer_token": key,
        }
    )
    existing["model_provider"] = PROVIDER_ID
    existing["model"] = models.codex
    return existing


def codex_trust(existing: dict, projects_dir: Path) -> dict:
    # An untrusted folder opens Codex on a "trust this directory?" screen. Codex's trust of a
    # folder covers that folder (or that git repository) only, never the ones below it: a
    # repository cloned into the projects folder still gets the question. A user's own answer
    # for the folder stands.
    project = _sub_table(_sub_table(existing, "projects"), str(projects_dir))
    project.setdefault("trust_level", "trusted")
    return existing


def opencode_config(existing: dict, proxy_url: str, key: str, models: AgentModels) -> dict:
    existing.setdefault("$schema", "https://opencode.ai/config.json")
    providers = _sub_table(existing, "provider")
    provider = _sub_table(providers, PROVIDER_ID)
    provider.setdefault("npm", "@ai-sdk/openai-compatible")
    provider.setdefault("name", "Databricks (through coda)")
    options = _sub_table(provider, "options")
    options["baseURL"] = f"{proxy_url}/serving-endpoints"
    options["apiKey"] = key
    provider_models = _sub_table(provider, "models")
    for model in dict.fromkeys((models.claude, models.claude_fast, models.codex, models.gemini)):
        provider_models.setdefault(model, {"name": model})
    existing["model"] = f"{PROVIDER_ID}/{models.claude}"
    # Session titles and summaries use the small model; left unset, OpenCode picks one from
    # its own catalogue, which the workspace may not serve.
    existing["small_model"] = f"{PROVIDER_ID}/{models.claude_fast}"
    return existing


def gemini_settings(existing: dict, proxy_url: str, key: str, models: AgentModels) -> dict:
    # Without a selected auth type Gemini CLI asks for one on first start; a user's own
    # choice is kept.
    auth = _sub_table(_sub_table(existing, "security"), "auth")
    auth.setdefault("selectedType", "gemini-api-key")
    # As for Claude Code: usage statistics and self-updates go to the internet directly, not
    # through the proxy, and Databricks Apps often have no such egress. A user's choice stands.
    _sub_table(existing, "privacy").setdefault("usageStatisticsEnabled", False)
    _sub_table(existing, "general").setdefault("enableAutoUpdate", False)
    return existing


def gemini_trusted_folders(existing: dict, projects_dir: Path) -> dict:
    # Folder trust is on by default: in an untrusted folder Gemini CLI asks first. Its question
    # stays (docs/security.md, "Cloned repositories"): a trusted folder starts the repository's
    # own MCP servers and reads its .gemini/ settings without asking, and TRUST_FOLDER holds for
    # every folder below, so the grant of the whole projects folder (which coda used to write)
    # is withdrawn. Gemini's settings come from the terminal's environment, which no folder's
    # trust changes (terminal.environment). A user's other answers stand.
    if existing.get(str(projects_dir)) == "TRUST_FOLDER":
        del existing[str(projects_dir)]
    return existing


def gemini_env(proxy_url: str, key: str, models: AgentModels) -> dict[str, str]:
    return {
        "GEMINI_API_KEY": key,
        "GOOGLE_GEMINI_BASE_URL": f"{proxy_url}/serving-endpoints/google",
        "GEMINI_MODEL": models.gemini,
        # Send the key as "Authorization: Bearer" (as Databricks expects) rather than
        # x-goog-api-key; the proxy accepts both.
        "GEMINI_API_KEY_AUTH_MECHANISM": "bearer",
    }


def claude_code_router_config(existing: dict, proxy_url: str, key: str, models: AgentModels) -> dict:
    providers = existing.setdefault("Providers", [])
    if not isinstance(providers, list):
        raise UnusableConfig("'Providers' is not a list")
    ours = next((p for p in providers if isinstance(p, dict) and p.get("name") == PROVIDER_ID), None)
    if ours is None:
        ours = {"name": PROVIDER_ID}
        providers.append(ours)
    ours.update(
        {
            "api_base_url": f"{proxy_url}/serving-endpoints/{models.claude}/invocations",
            "api_key": key,
            "models": [models.claude],
        }
    )
    router = _sub_table(existing, "Router")
    current = router.get("default")
    if not current or (isinstance(current, str) and current.startswith(f"{PROVIDER_ID},")):
        router["default"] = f"{PROVIDER_ID},{models.claude}"
    return existing


# --- orchestration ----------------------------------------------------------------

JsonMerge = Callable[[dict, str, str, AgentModels], dict]


def write_agent_configs(
    target: Path | AgentFiles, proxy_url: str, local_key: str, models: AgentModels | None = None
) -> AgentConfigReport:
    """Point every agent CLI at the proxy; never raises for a bad file.

    ``target``: where the files go; a bare path is a home whose default files are used.
    """
    files = target if isinstance(target, AgentFiles) else AgentFiles.in_home(target)
    models = models or AgentModels()
    proxy_url = proxy_url.rstrip("/")
    report = AgentConfigReport()

    def merge(fn: JsonMerge) -> Callable[[dict], dict]:
        return lambda existing: fn(existing, proxy_url, local_key, models)

    def trusting(fn: Callable[[dict, Path], dict]) -> Callable[[dict], dict]:
        return lambda existing: fn(existing, files.projects_dir)

    def both(first: Callable[[dict], dict], second: Callable[[dict], dict]) -> Callable[[dict], dict]:
        return lambda existing: second(first(existing))

    json_files: list[tuple[Path, Callable[[dict], dict]]] = [
        (files.claude_settings, merge(claude_code_settings)),
        (files.claude_state, trusting(claude_code_state)),
        (files.opencode_config, merge(opencode_config)),
        (files.gemini_dir / "settings.json", merge(gemini_settings)),
        (files.gemini_dir / "trustedFolders.json", trusting(gemini_trusted_folders)),
    ]
    if files.claude_code_router is not None:
        json_files.append((files.claude_code_router, merge(claude_code_router_config)))
    for path, change in json_files:
        _attempt(report, path, lambda p=path, c=change: _write_json(p, c))
    codex_change = both(merge(codex_config), trusting(codex_trust))
    _attempt(report, files.codex_config, lambda: _write_toml(files.codex_config, codex_change))
    env_path = files.gemini_dir / ".env"
    _attempt(report, env_path, lambda: _write_dotenv(env_path, gemini_env(proxy_url, local_key, models)))
    return report


def _attempt(report: AgentConfigReport, path: Path, write: Callable[[], None]) -> None:
    try:
        write()
    except UnusableConfig as e:
        report.errors.append(f"{path} was left unchanged: {e}. Fix or remove it, then configure again.")
    except OSError as e:
        report.errors.append(f"{path} could not be written: {e.strerror or e}.")
    else:
        report.written.append(path)


def _sub_table(parent: dict, name: str) -> dict:
    """``parent[name]`` as a dict, created when missing; a non-table value cannot be merged."""
    value = parent.setdefault(name, {})
    if not isinstance(value, dict):
        raise UnusableConfig(f"'{name}' is not an object")
    return value


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise UnusableConfig("it is not UTF-8 text") from None


def _write_json(path: Path, change: Callable[[dict], dict]) -> None:
    text = _read_text(path)
    existing: Any = {}
    if text is not None and text.strip():
        try:
            existing = json.loads(text)
        except json.JSONDecodeError as e:
            raise UnusableConfig(f"it is not valid JSON (line {e.lineno}: {e.msg})") from None
        if not isinstance(existing, dict):
            raise UnusableConfig("it does not hold a JSON object")
    merged = change(existing)
    write_atomic(path, (json.dumps(merged, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def _write_toml(path: Path, change: Callable[[dict], dict]) -> None:
    # tomli-w writes values, not comments: a user's comments in config.toml do not survive.
    text = _read_text(path)
    existing: dict = {}
    if text is not None:
        try:
            existing = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise UnusableConfig(f"it is not valid TOML ({e})") from None
    merged = change(existing)
    write_atomic(path, tomli_w.dumps(merged).encode("utf-8"))


# KEY=VALUE, optionally after "export ", as dotenv loaders (and Gemini CLI's) accept.
_DOTENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=")


def _write_dotenv(path: Path, values: dict[str, str]) -> None:
    """Set ``values`` in a .env file: owned lines are replaced in place, the rest kept verbatim."""
    text = _read_text(path) or ""
    lines = text.splitlines()
    pending = dict(values)
    out: list[str] = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            out.append(line)
            continue
        match = _DOTENV_LINE.match(line)
        if match is None:
            raise UnusableConfig(f"line {number} is not KEY=VALUE")
        name = match.group(1)
        if name in values:
            if name in pending:
                out.append(f"{name}={pending.pop(name)}")
            # A second line for a key we own would override ours when loaded: dropped.
            continue
        out.append(line)
    out.extend(f"{name}={value}" for name, value in pending.items())
    write_atomic(path, ("\n".join(out) + "\n").encode("utf-8"))
