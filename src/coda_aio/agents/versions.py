"""Which version of each agent CLI to install: the tested ones (``tested_versions.txt``, the
list the Makefile installs for the test suite too) or, opted in, the newest."""

from __future__ import annotations

from importlib import resources

VERSIONS_FILE = "tested_versions.txt"
AGENT_VERSION_MODES = ("tested", "latest")


def tested_versions() -> dict[str, str]:
    """npm package -> the version the test suite passed with."""
    text = resources.files("coda_aio.agents").joinpath(VERSIONS_FILE).read_text()
    versions = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        # "@scope/name@1.2.3": the version follows the last "@" (a scope starts with one).
        package, _, version = line.rpartition("@")
        versions[package] = version
    return versions


def wanted_version(package: str, mode: str) -> str | None:
    """The version to install (None: the newest)."""
    return None if mode == "latest" else tested_versions()[package]
