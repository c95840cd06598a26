"""Workspace calls that create a credential, which agents may not make through coda's proxy.

An agent works with the token coda injects: it lives minutes and is revoked after each
rotation. A credential the agent minted itself (a personal access token, an on-behalf-of
token, a service principal secret, an OAuth token) would outlive all of that, and in
service-principal mode it would be the app's own identity, possibly with no expiry. Agents
have no reason to make these calls, so the proxy refuses them in every mode.

Paths are compared after the normalisation a server might apply (percent-decoding, repeated
and trailing slashes, ``.`` and ``..`` segments, letter case), so a spelling the workspace
would still route cannot slip past.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote

# (pattern on the normalised path, what the call would create). Any API version.
_MINTING_CALLS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), what)
    for pattern, what in (
        (r"/api/[^/]+/(preview/)?token/create", "a personal access token (token/create)"),
        (r"/api/[^/]+/(preview/)?token-management/on-behalf-of(/.*)?",
         "a token on behalf of a service principal (token-management/on-behalf-of)"),
        (r"/api/[^/]+/(preview/)?(accounts/)?serviceprincipals/[^/]+/credentials(/.*)?",
         "a service principal secret (servicePrincipals/.../credentials/secrets)"),
        (r"/api/[^/]+/(preview/)?credentials-manager(/.*)?", "an exchanged token (credentials-manager)"),
        # OAuth: every endpoint but discovery (the token and authorize endpoints, any version).
        (r"/oidc(?!/\.well-known(/|$))(/.*)?", "an OAuth token (/oidc)"),
    )
)


def normalised(raw_path: str) -> str:
    """``raw_path`` as a lenient server would route it."""
    path = unquote(raw_path)
    path = re.sub(r";[^/]*", "", path)  # path parameters (/token;x/create), which some servers drop
    path = posixpath.normpath("/" + path.lstrip("/"))  # repeated slashes, . and .., trailing /
    return path.lower()


def minting_call(raw_path: str) -> str | None:
    """What the call to ``raw_path`` would create, or None when it creates no credential."""
    path = normalised(raw_path)
    for pattern, what in _MINTING_CALLS:
        if pattern.fullmatch(path):
            return what
    return None
