"""One frozen settings object, read once from the environment and the command line.

Everything tunable lives here so that the rest of the code never reads ``os.environ``;
tests build a ``Settings`` directly and can run several apps side by side.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from coda_aio.host_check import parse_allowed_hosts

# Which variables carry credentials: secret_env (imported by the launcher before anything else).
from coda_aio.secret_env import SECRET_ENV_VARS, is_secret_env  # noqa: E402,F401 (re-exported)


def without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` minus every credential: what child processes (terminals, npm) may see."""
    return {name: value for name, value in env.items() if not is_secret_env(name)}


AUTH_MODES = ("pat", "service-principal")


class ConfigError(ValueError):
    """A setting has a value the app cannot use; the message names the variable."""


def normalize_host(raw: str | None) -> str | None:
    """Workspace URL with a scheme and no trailing slash; ``https://`` is assumed."""
    if raw is None or not raw.strip():
        return None
    host = raw.strip().rstrip("/")
    if not host.startswith(("https://", "http://")):
        host = "https://" + host
    return host


def _number(env: Mapping[str, str], name: str, default, minimum, parse, what: str):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    return _number(env, name, default, minimum, int, "a whole number")


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    return _number(env, name, default, minimum, float, "a number of seconds")


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    home: Path
    host: str | None = None
    bind: str = "127.0.0.1"
    port: int = 8000
    proxy_port: int = 4000
    app_name: str | None = None
    # repr=False keeps the secret out of any log line that prints the settings.
    client_id: str | None = field(default=None, repr=False)
    client_secret: str | None = field(default=None, repr=False)
    auth_mode: str = "pat"
    # Issue 21: model calls may run as the app's service principal when no fresh sign-in of
    # the user is at hand (opt-in: those calls are then the app's, not the user's).
    app_identity_for_models: bool = False
    # Issue 21, local runs: "oauth" signs in with databricks-sdk's U2M flow instead of a PAT.
    local_sign_in: str | None = None
    gateway_host: str | None = None
    rotation_interval: float = 600.0
    token_lifetime: int = 900
    revoke_grace: float = 60.0
    profile: str = "coda"
    max_sessions: int = 8
    idle_timeout: float = 86400.0
    install_agents: bool = True
    demo_workspace: bool = False
    # Timeout for each call to the workspace (SCIM, token create/delete/list).
    workspace_timeout: float = 30.0
    # The proxy's longest wait for the next upstream bytes; a stream may last any time.
    proxy_read_timeout: float = 600.0

    # --- persistence across restarts (issue 13) ---
    # Secret scope that holds the current token (None: off) and the key inside it.
    secret_scope: str | None = None
    secret_key: str = "coda-token"
    # Sync ~/projects to the workspace: None means "on in App mode when a workspace is set".
    sync_projects: bool | None = None
    # How often the project watcher looks at each repository's refs (seconds).
    sync_poll_interval: float = 2.0
    # Files above this are not synced (the workspace import limit is 10 MB).
    sync_max_file_bytes: int = 10 * 1024 * 1024

    # --- web port access, local mode (issue 10) ---
    # The web key; None: the one kept in ~/.coda/web-token (created on first start).
    web_token: str | None = field(default=None, repr=False)
    # Host names the web port answers to besides the loopback ones (CODA_ALLOWED_HOSTS).
    allowed_hosts: tuple[str, ...] = ()

    # --- the Databricks CLI install (issue 11) ---
    # Release of github.com/databricks/cli installed into npm_prefix/bin, and where its
    # archives are downloaded from (tests point this at a local server).
    databricks_cli_version: str = "0.290.1"
    databricks_cli_base_url: str = "https://github.com/databricks/cli/releases/download"
    # "tested": each agent CLI at the version the suite passed with (agents/tested_versions.txt);
    # "latest": the newest (CODA_AGENT_VERSIONS).
    agent_versions: str = "tested"

    # --- token checks (issue 11, section 4) ---
    # Opening a session or the page asks the workspace about a token it last accepted longer ago.
    token_check_age: float = 30.0

    # --- capacity (issue 23) ---
    # Memory one more session with an agent needs: below this much free, new sessions get a 429
    # (0: admit by CODA_MAX_SESSIONS alone). 768 MB: an agent CLI (node) plus its tools.
    session_memory_mb: int = 768

    # --- terminal sockets (issue 9) ---
    # Seconds between WebSocket pings: proxies cut idle connections (the Apps one after minutes).
    ws_heartbeat: float = 20.0

    @property
    def project_sync_enabled(self) -> bool:
        wanted = self.app_mode if self.sync_projects is None else self.sync_projects
        return wanted and self.host is not None

    @property
    def app_mode(self) -> bool:
        """Running as a Databricks App: owner-only access, fail closed."""
        return self.app_name is not None

    @property
    def databrickscfg_path(self) -> Path:
        return self.home / ".databrickscfg"

    @property
    def state_dir(self) -> Path:
        return self.home / ".coda"

    @property
    def projects_dir(self) -> Path:
        return self.home / "projects"

    @property
    def npm_prefix(self) -> Path:
        """Where agent CLIs are installed with npm; its bin/ is put on each PTY's PATH."""
        return self.home / ".npm-global"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def with_changes(self, **changes) -> "Settings":
        return replace(self, **changes)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        host: str | None = None,
        port: int | None = None,
        proxy_port: int | None = None,
        demo_workspace: bool = False,
    ) -> "Settings":
        """Settings from environment variables; command-line values (when given) win."""
        app_name = env.get("DATABRICKS_APP_NAME") or None
        app_mode = app_name is not None
        home = Path(env.get("HOME") or Path.home())
        auth_mode = env.get("CODA_AUTH_MODE", "pat") or "pat"
        if auth_mode not in AUTH_MODES:
            raise ConfigError(f"CODA_AUTH_MODE must be one of {', '.join(AUTH_MODES)}, got {auth_mode!r}")
        settings = cls(
            home=home,
            host=normalize_host(env.get("DATABRICKS_HOST")),
            bind=host or env.get("CODA_BIND") or ("0.0.0.0" if app_mode else "127.0.0.1"),
            port=port if port is not None else _int(env, "DATABRICKS_APP_PORT", 8000),
            proxy_port=proxy_port if proxy_port is not None else _int(env, "CODA_PROXY_PORT", 4000),
            app_name=app_name,
            client_id=env.get("DATABRICKS_CLIENT_ID") or None,
            client_secret=env.get("DATABRICKS_CLIENT_SECRET") or None,
            auth_mode=auth_mode,
            app_identity_for_models=_flag(env, "CODA_APP_IDENTITY_FOR_MODELS", False),
            local_sign_in=(env.get("CODA_LOCAL_SIGN_IN") or "").strip().lower() or None,
            gateway_host=normalize_host(env.get("DATABRICKS_GATEWAY_HOST")),
            rotation_interval=_float(env, "CODA_ROTATION_INTERVAL_SECONDS", 600.0, minimum=1.0),
            token_lifetime=_int(env, "CODA_TOKEN_LIFETIME_SECONDS", 900, minimum=1),
            revoke_grace=_float(env, "CODA_REVOKE_GRACE_SECONDS", 60.0),
            profile=env.get("CODA_PROFILE") or ("DEFAULT" if app_mode else "coda"),
            max_sessions=_int(env, "CODA_MAX_SESSIONS", 8, minimum=1),
            session_memory_mb=_int(env, "CODA_SESSION_MEMORY_MB", 768),
            idle_timeout=_float(env, "CODA_IDLE_TIMEOUT_SECONDS", 86400.0, minimum=1.0),
            install_agents=_flag(env, "CODA_INSTALL_AGENTS", True),
            proxy_read_timeout=_float(env, "CODA_PROXY_READ_TIMEOUT_SECONDS", 600.0, minimum=1.0),
            demo_workspace=demo_workspace,
            **_persistence_settings(env),
            **_access_settings(env),
            **_databricks_cli_settings(env),
            ws_heartbeat=_float(env, "CODA_WS_HEARTBEAT_SECONDS", 20.0, minimum=1.0),
        )
        if settings.token_lifetime <= settings.rotation_interval:
            raise ConfigError(
                "CODA_TOKEN_LIFETIME_SECONDS must be longer than CODA_ROTATION_INTERVAL_SECONDS, "
                "or tokens would expire before they are rotated"
            )
        if settings.local_sign_in not in (None, "oauth"):
            raise ConfigError(f"CODA_LOCAL_SIGN_IN must be oauth or unset, got {settings.local_sign_in!r}")
        if auth_mode == "service-principal" and not (settings.client_id and settings.client_secret):
            raise ConfigError(
                "CODA_AUTH_MODE=service-principal needs DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET"
            )
        return settings


def _persistence_settings(env: Mapping[str, str]) -> dict:
    """The issue-13 settings: the token's secret scope and the project sync."""
    scope = (env.get("CODA_SECRET_SCOPE") or "").strip() or None
    key = (env.get("CODA_SECRET_KEY") or "").strip() or "coda-token"
    for name, value in (("CODA_SECRET_SCOPE", scope), ("CODA_SECRET_KEY", key)):
        if value is not None and not _SECRET_NAME.match(value):
            raise ConfigError(f"{name} may hold only letters, digits, '-', '_' and '.' (at most 128), got {value!r}")
    sync = env.get("CODA_SYNC_PROJECTS")
    return {
        "secret_scope": scope,
        "secret_key": key,
        "sync_projects": None if sync is None or sync == "" else _flag(env, "CODA_SYNC_PROJECTS", False),
        "sync_poll_interval": _float(env, "CODA_SYNC_POLL_SECONDS", 2.0, minimum=0.05),
    }


_SECRET_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


def _access_settings(env: Mapping[str, str]) -> dict:
    """The issue-10 settings: the web key and the extra Host names of the web port."""
    token = (env.get("CODA_WEB_TOKEN") or "").strip() or None
    if token is not None and (len(token) < 16 or not (token.isascii() and token.isprintable()) or " " in token):
        raise ConfigError("CODA_WEB_TOKEN must be at least 16 printable ASCII characters with no spaces")
    try:
        allowed = parse_allowed_hosts(env.get("CODA_ALLOWED_HOSTS") or "")
    except ValueError as e:
        raise ConfigError(f"CODA_ALLOWED_HOSTS: {e}") from None
    return {"web_token": token, "allowed_hosts": allowed}


def _databricks_cli_settings(env: Mapping[str, str]) -> dict:
    """The issue-11 settings: which Databricks CLI release to install, and from where."""
    version = (env.get("CODA_DATABRICKS_CLI_VERSION") or "").strip().removeprefix("v") or Settings.databricks_cli_version
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise ConfigError(f"CODA_DATABRICKS_CLI_VERSION must look like 0.290.1, got {version!r}")
    base_url = (env.get("CODA_DATABRICKS_CLI_BASE_URL") or "").strip().rstrip("/") or Settings.databricks_cli_base_url
    if not base_url.startswith(("https://", "http://")):
        raise ConfigError(f"CODA_DATABRICKS_CLI_BASE_URL must be an http(s) URL, got {base_url!r}")
    agent_versions = (env.get("CODA_AGENT_VERSIONS") or "tested").strip().lower()
    if agent_versions not in ("tested", "latest"):
        raise ConfigError(f"CODA_AGENT_VERSIONS must be tested or latest, got {agent_versions!r}")
    return {"databricks_cli_version": version, "databricks_cli_base_url": base_url, "agent_versions": agent_versions}


def take_service_principal(environ: os._Environ | dict) -> None:
    """Remove the service principal's credentials from the process environment.

    Settings already hold them; once gone from os.environ no child process (PTY, npm,
    agent) can inherit them.
    """
    for name in ("DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
        environ.pop(name, None)
