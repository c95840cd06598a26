"""The Databricks profile while the user's own sign-in is the source (issue 21).

The user's token is never written to disk, so the profile cannot hold it. It points the
CLI and SDK at the local proxy instead, with the proxy's local key as its "token": the proxy
swaps the key for the freshest sign-in on every call, as it does for the agents. A pasted
PAT later writes the workspace's host and the PAT over it, as before.
"""

from __future__ import annotations

from pathlib import Path

from coda_aio.credentials.databrickscfg import update_profile


def point_profile_at_proxy(cfg_path: Path, profile: str, proxy_url: str, local_key: str) -> None:
    update_profile(cfg_path, profile, {"host": proxy_url, "token": local_key})
