"""Where each agent CLI's configuration lives, and how a terminal points the CLI at it.

App mode: the container's home is the user's own, so the usual files are used. Locally
coda_aio must not modify files the user already had: each CLI gets a config directory of
coda's own under ~/.coda, and terminals name it through the CLI's own setting
(CLAUDE_CONFIG_DIR, CODEX_HOME, OPENCODE_CONFIG, GEMINI_CLI_HOME). What goes into the
files is ``agents``'s business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from coda_aio.config import Settings


@dataclass(frozen=True)
class AgentFiles:
    """Where each agent's files are, and what a terminal needs to make the CLI read them."""

    claude_settings: Path
    claude_state: Path  # Claude Code's own state file: onboarding, trusted folders
    codex_config: Path
    opencode_config: Path
    gemini_dir: Path  # the folder holding Gemini CLI's settings.json and .env
    claude_code_router: Path | None  # None: not written (it has no config-dir setting)
    projects_dir: Path  # where terminals start (which agents may trust: agents.configs)
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def in_home(cls, home: Path, projects_dir: Path | None = None) -> "AgentFiles":
        """The files each CLI reads by default (App mode: the home is the user's container)."""
        return cls(
            claude_settings=home / ".claude" / "settings.json",
            claude_state=home / ".claude.json",
            codex_config=home / ".codex" / "config.toml",
            opencode_config=home / ".config" / "opencode" / "opencode.json",
            gemini_dir=home / ".gemini",
            claude_code_router=home / ".claude-code-router" / "config.json",
            projects_dir=projects_dir or home / "projects",
        )

    @classmethod
    def isolated(cls, coda_dir: Path, projects_dir: Path) -> "AgentFiles":
        """Config directories of coda's own under ``coda_dir`` (~/.coda): the user's files stay untouched."""
        claude, codex, opencode, gemini_home = (coda_dir / name for name in ("claude", "codex", "opencode", "gemini"))
        return cls(
            # With CLAUDE_CONFIG_DIR set, Claude Code keeps .claude.json inside that folder too.
            claude_settings=claude / "settings.json",
            claude_state=claude / ".claude.json",
            codex_config=codex / "config.toml",
            opencode_config=opencode / "opencode.json",
            # GEMINI_CLI_HOME replaces the home folder: Gemini CLI reads <it>/.gemini/.
            gemini_dir=gemini_home / ".gemini",
            claude_code_router=None,
            projects_dir=projects_dir,
            env={
                "CLAUDE_CONFIG_DIR": str(claude),
                "CODEX_HOME": str(codex),
                "OPENCODE_CONFIG": str(opencode / "opencode.json"),
                "GEMINI_CLI_HOME": str(gemini_home),
            },
        )

    @classmethod
    def for_settings(cls, settings: Settings) -> "AgentFiles":
        """App mode: the real home's files. Locally: coda's own, under ~/.coda."""
        if settings.app_mode:
            return cls.in_home(settings.home, settings.projects_dir)
        return cls.isolated(settings.state_dir, settings.projects_dir)
