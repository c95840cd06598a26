"""A terminal's environment: the one place that decides what every shell starts with.

The server's own environment, minus every credential (``config.is_secret_env``) and every
CI marker, plus what makes the terminal coda's: its home, coda's commands and the agent CLIs
first on ``PATH``, the Databricks profile, Gemini CLI's settings, and (locally) the variables
that point each agent CLI at coda's own configuration instead of the user's.
"""

from __future__ import annotations

import os
from typing import Mapping

from coda_aio.agents.configs import AgentModels, gemini_env
from coda_aio.agents.files import AgentFiles
from coda_aio.key_file import load_or_create_key
from coda_aio.config import Settings, without_secrets
from coda_aio.terminal_commands import bin_dir


def is_ci_marker(name: str) -> bool:
    """A variable that tells programs "no person is here, this is a CI job".

    A terminal always has a person at it, whatever started the server: with ``CI`` or any
    ``CI_*`` variable set, Ink-based TUIs (Gemini CLI through the ``is-in-ci`` package) refuse
    interactive mode and exit asking for input on stdin.
    """
    return name in ("CI", "CONTINUOUS_INTEGRATION") or name.startswith("CI_")


def build_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """``base`` plus ``extra``, without any credential or CI marker."""
    env = {name: value for name, value in without_secrets({**base, **extra}).items() if not is_ci_marker(name)}
    env["TERM"] = "xterm-256color"
    env["COLORTERM"] = "truecolor"
    return env


def agent_env(files: AgentFiles, proxy_url: str, local_key: str, models: AgentModels) -> dict[str, str]:
    """What a terminal needs so that each CLI reads coda's configuration (locally: the config
    directories under ~/.coda) and Gemini CLI's settings (both modes).

    Gemini CLI's settings go in the environment because its .env files cannot be relied on:
    it reads the first .gemini/.env it finds walking up from the working folder (a cloned
    repository's own, or locally the user's ~/.gemini/.env), and in a folder not trusted it
    reads none of them but the key, and would send prompts to Google's endpoint. Variables
    already set win over any .env. The key is the local one, good only for the proxy on
    127.0.0.1, never a token.
    """
    return {**files.env, **gemini_env(proxy_url.rstrip("/"), local_key, models)}


def coda_env(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What every terminal gets on top of the (scrubbed) process environment."""
    environ = os.environ if environ is None else environ
    path = environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    extra = {
        "HOME": str(settings.home),
        # coda's own commands (coda-download) first, then the agent CLIs npm installs.
        "PATH": f"{bin_dir(settings)}:{settings.npm_prefix / 'bin'}:{path}",
        "DATABRICKS_CONFIG_PROFILE": settings.profile,
    }
    if settings.host:
        extra["DATABRICKS_HOST"] = settings.host
    # Locally each agent CLI reads coda's config directory under ~/.coda, not the user's own.
    files = AgentFiles.for_settings(settings)
    key = load_or_create_key(settings.state_dir / "proxy-key")
    extra.update(agent_env(files, settings.proxy_url, key, AgentModels.from_env(environ)))
    return extra


def terminal_env(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a terminal started by this app."""
    environ = os.environ if environ is None else environ
    env = build_env(environ, coda_env(settings, environ))
    if settings.app_mode:
        # The profile names the host: the workspace's with a PAT, or the local proxy while the
        # user's own sign-in is the source (issue 21). DATABRICKS_HOST would win over it.
        env.pop("DATABRICKS_HOST", None)
    return env
