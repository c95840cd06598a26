"""Where synced projects live in the workspace.

One folder per app, so two apps of one user (``coda`` and ``coda-dev``) never touch each
other's backups; a local run is the app ``local``::

    /Workspace/Users/<user>/coda-backups/<app>/<project>/manifest-<generation>.json
    /Workspace/Users/<user>/coda-backups/<app>/<project>/objects/<sha256>.<part>

It is outside ``/Workspace/Users/<user>/coda/``, the folder docs/deploy.md deploys the app's
source code from: backups there would be deployed with the app.

Manifests are never overwritten: each sync writes the next generation, and the newest one
is the project (the commit point). Objects are content-addressed (named by the SHA-256 of
their bytes) and split into parts that fit one import call, so no object a manifest names is
ever rewritten either.

Before this layout, projects went to ``/Workspace/Users/<user>/coda/history/<project>/`` (a
version-1 manifest and its bundles) and ``/Workspace/Users/<user>/coda/projects/<project>/``
(the tree, file for file), shared by every app of the user. Those are read, never written:
restore takes a project from there when this app's folder lacks it.
"""

from __future__ import annotations

import re

# What a project folder may be called (also the name of its folder under ~/projects).
PROJECT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
APP_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
LOCAL_APP = "local"
MANIFEST_NAME = re.compile(r"^manifest-(\d{8})\.json$")
OBJECT_NAME = re.compile(r"^([0-9a-f]{64})\.(\d{3,})$")
BACKUPS = "coda-backups"
LEGACY = "coda"


def app_namespace(app_name: str | None) -> str:
    """The app's own folder name: its Databricks App name, or ``local`` for a local run."""
    if app_name and APP_NAME.match(app_name) and app_name not in (".", ".."):
        return app_name
    return LOCAL_APP


class Layout:
    """Workspace paths of one user's synced projects, for one app."""

    def __init__(self, user: str, app: str):
        self.user = user
        self.app = app
        self.home = f"/Workspace/Users/{user}"
        self.root = f"{self.home}/{BACKUPS}/{app}"

    def project(self, name: str) -> str:
        return f"{self.root}/{name}"

    def manifest(self, name: str, generation: int) -> str:
        return f"{self.project(name)}/{manifest_file(generation)}"

    def objects(self, name: str) -> str:
        return f"{self.project(name)}/objects"

    def object_home(self, name: str) -> str:
        """An object folder as manifests record it: relative to the user's home folder."""
        return f"{BACKUPS}/{self.app}/{name}/objects"

    def absolute(self, relative: str) -> str:
        return f"{self.home}/{relative}"

    # --- the version-1 layout, read only ---------------------------------------------------

    @property
    def legacy_history(self) -> str:
        return f"{self.home}/{LEGACY}/history"

    def legacy_manifest(self, name: str) -> str:
        return f"{self.legacy_history}/{name}/manifest.json"

    def legacy_folders(self, name: str) -> list[str]:
        return [f"{self.home}/{LEGACY}/history/{name}", f"{self.home}/{LEGACY}/projects/{name}"]


def manifest_file(generation: int) -> str:
    return f"manifest-{generation:08d}.json"


def part_name(sha256: str, part: int) -> str:
    return f"{sha256}.{part:03d}"
