"""The HTTP client for every workspace API: one public transport (``Workspace.call``), and on it
the families the credentials need (SCIM Me, Token API 2.0, Apps get); other families (secrets,
workspace files) live with their users and call ``call`` too.

Why plain aiohttp and not databricks-sdk: a PAT call must carry exactly the token it is
given, with no silent fallback to other credentials. The SDK's credential chain once fell
back to the app's service principal, so a dead token looked valid. Every call here sends
``Authorization: Bearer <token>`` and nothing else, and a refusal is reported as a refusal.
aiohttp also keeps every call on the event loop, with no thread per request.

Errors come in three kinds, so callers can decide without parsing messages:
``TokenRejected`` (the token is dead or not allowed: ask for a new one),
``WorkspaceUnavailable`` (transient: retry later, honouring ``retry_after``) and
``WorkspaceError`` (anything else, e.g. a wrong host). Each message says what to do.
Token values never appear in messages or logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Mapping

import aiohttp

log = logging.getLogger(__name__)

SCIM_ME = "/api/2.0/preview/scim/v2/Me"
TOKEN_CREATE = "/api/2.0/token/create"
TOKEN_DELETE = "/api/2.0/token/delete"
TOKEN_LIST = "/api/2.0/token/list"



class WorkspaceError(Exception):
    """A call to the workspace failed; the message says what a person can do about it."""

    def __init__(self, message: str, status: int | None = None, error_code: str | int | None = None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code  # the workspace's own code, e.g. "RESOURCE_DOES_NOT_EXIST"


class TokenRejected(WorkspaceError):
    """401/403: the token is expired, revoked, unknown, or not allowed to do this."""

    def __init__(self, message: str, status: int | None = None, error_code: str | int | None = None,
                 said: str = ""):
        super().__init__(message, status, error_code)
        # What the workspace said ("403 Invalid access token"), for callers that explain the
        # refusal in their own words instead of nesting this message in theirs.
        self.said = said or message


class WorkspaceUnavailable(WorkspaceError):
    """Transient: 5xx, 429, timeout, connection failure, or a garbled reply. Worth retrying."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None,
                 error_code: str | int | None = None):
        super().__init__(message, status, error_code)
        self.retry_after = retry_after


@dataclass(frozen=True)
class MintedToken:
    value: str = field(repr=False)
    token_id: str
    created_at: float  # epoch seconds
    expires_at: float | None  # None: the token never expires
    comment: str


@dataclass(frozen=True)
class TokenListing:
    token_id: str
    comment: str
    created_at: float
    expires_at: float | None


def user_name(me_body: dict[str, Any]) -> str:
    """Who a SCIM Me body describes: ``userName``, else the primary (or first) email."""
    name = me_body.get("userName")
    if isinstance(name, str) and name:
        return name
    emails = [e for e in me_body.get("emails") or [] if isinstance(e, dict) and e.get("value")]
    primary = [e for e in emails if e.get("primary")]
    if primary or emails:
        return str((primary or emails)[0]["value"])
    raise WorkspaceError("The workspace did not say which user this token belongs to (no userName or email).")



def unreachable(host: str, error: aiohttp.ClientError) -> WorkspaceUnavailable:
    """A call that got no answer, said as something a person can check or wait out."""
    if isinstance(error, aiohttp.ClientConnectorError):
        return WorkspaceUnavailable(
            f"Could not reach the workspace at {host} ({error.os_error.strerror or error.os_error}). "
            "Check DATABRICKS_HOST and the network.")
    return WorkspaceUnavailable(
        f"The connection to the workspace at {host} broke ({type(error).__name__}). Try again in a moment.")


class Workspace:
    def __init__(self, host: str, session: aiohttp.ClientSession, timeout: float = 30.0):
        self.host = host.rstrip("/")
        self._session = session
        self._timeout = timeout

    async def me(self, token: str) -> dict[str, Any]:
        """The SCIM Me body of the token's owner; the cheapest proof that a token works."""
        return await self.call("GET", SCIM_ME, token)

    async def create_token(self, token: str, lifetime_seconds: int, comment: str) -> MintedToken:
        body = await self.call("POST", TOKEN_CREATE, token,
                                {"lifetime_seconds": int(lifetime_seconds), "comment": comment})
        value = body.get("token_value")
        info = body.get("token_info")
        if not isinstance(value, str) or not value or not isinstance(info, dict) or not info.get("token_id"):
            raise WorkspaceUnavailable(f"The workspace at {self.host} answered token/create without a token. "
                                       "Try again in a moment.")
        listing = _listing(info)
        return MintedToken(value, listing.token_id, listing.created_at, listing.expires_at, listing.comment)

    async def delete_token(self, token: str, token_id: str) -> None:
        """Revoke ``token_id``; a token that is already gone counts as revoked."""
        try:
            await self.call("POST", TOKEN_DELETE, token, {"token_id": token_id})
        except WorkspaceError as e:
            if e.status == 404 and e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return
            raise

    async def list_tokens(self, token: str) -> list[TokenListing]:
        """The live tokens of the token's owner (never anyone else's)."""
        body = await self.call("GET", TOKEN_LIST, token)
        infos = body.get("token_infos") or []
        if not isinstance(infos, list):
            raise WorkspaceUnavailable(f"The workspace at {self.host} sent a token list that is not a list. "
                                       "Try again in a moment.")
        return [_listing(info) for info in infos if isinstance(info, dict) and info.get("token_id")]

    async def get_app(self, token: str, name: str) -> dict[str, Any]:
        """The Apps API record of app ``name`` (its ``creator`` is the app's owner)."""
        return await self.call("GET", f"/api/2.0/apps/{name}", token)

    # --- one call ------------------------------------------------------------------------

    async def call(self, method: str, path: str, token: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """One workspace API call with exactly ``token``: the transport every API family here and
        elsewhere (secrets, workspace files) is built on. Returns the JSON body; raises the
        errors above."""
        _check_token_shape(token)
        url = self.host + path
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        started = time.monotonic()
        try:
            async with self._session.request(
                method, url, headers=headers, json=payload,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                # A workspace API never redirects; following one could send the token elsewhere.
                allow_redirects=False,
            ) as response:
                raw = await response.read()
                status = response.status
                answer_headers = response.headers
        except asyncio.TimeoutError:
            raise WorkspaceUnavailable(
                f"The workspace at {self.host} did not answer within {self._timeout:g} s. "
                "Try again in a moment.") from None
        except aiohttp.ClientError as e:
            raise unreachable(self.host, e) from None
        log.debug("%s %s -> %s in %.3fs", method, path, status, time.monotonic() - started)

        body = _parse_json(raw)
        if 200 <= status < 300:
            if not isinstance(body, dict):
                raise WorkspaceUnavailable(
                    f"The workspace at {self.host} answered {path} with something that is not JSON. "
                    "Check that DATABRICKS_HOST is the workspace URL, then try again.", status)
            return body
        raise answer_error(self.host, path, status, body, answer_headers)


def answer_error(host: str, path: str, status: int, body: Any, headers: Mapping[str, str]) -> WorkspaceError:
    """What a workspace's non-2xx answer means, said so a person can act on it: the one wording
    for every caller (this client, and project sync's streaming transport)."""
    error_code = body.get("error_code") if isinstance(body, dict) else None
    detail = (body.get("message") if isinstance(body, dict) else None) or headers.get("X-Databricks-Reason-Phrase") or ""
    detail = str(detail).strip().rstrip(".")
    said = f"{status} {detail}" if detail else str(status)
    retry_after = _retry_after(headers.get("Retry-After"))
    if status in (401, 403):
        error: WorkspaceError = TokenRejected(f"The workspace refused the token ({said}). Paste a new token.", status,
                                              said=said)
    elif status == 429:
        wait = f" in {retry_after:g} s" if retry_after is not None else " in a moment"
        error = WorkspaceUnavailable(f"The workspace is rate limiting requests ({said}). Try again{wait}.",
                                     status, retry_after)
    elif status >= 500:
        error = WorkspaceUnavailable(f"The workspace at {host} had a problem ({said}). "
                                     "Try again in a moment.", status, retry_after)
    elif 300 <= status < 400:
        error = WorkspaceError(f"The workspace at {host} redirected {path} to {headers.get('Location') or 'elsewhere'}. "
                               "Check that DATABRICKS_HOST is the workspace URL.", status)
    else:
        error = WorkspaceError(f"The workspace refused {path} ({said}).", status)
    error.error_code = error_code
    return error


def _check_token_shape(token: str) -> None:
    # A pasted token with a space or line break would be an invalid header; say so plainly.
    if not token or not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise TokenRejected("That does not look like a Databricks token (it is empty or has spaces or "
                            "line breaks). Paste the token exactly as the workspace showed it.")


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return None


def _retry_after(header: str | None) -> float | None:
    """Retry-After as seconds from now; it may be a number or an HTTP date."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def _listing(info: dict[str, Any]) -> TokenListing:
    return TokenListing(
        token_id=str(info.get("token_id")),
        comment=str(info.get("comment") or ""),
        created_at=_ms_to_s(info.get("creation_time")) or 0.0,
        expires_at=_ms_to_s(info.get("expiry_time")),
    )


def _ms_to_s(value: Any) -> float | None:
    """Token API times are epoch milliseconds; -1 (or absent) means none."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return value / 1000.0
