"""App mode: only the app's owner may use it; everyone else is refused, and so is everyone
until the owner is known (fail closed).

The Databricks Apps front end authenticates users and forwards their identity in
``X-Forwarded-Email``. The owner is the app's ``creator``, looked up with the app's
service principal; the lookup is retried in the background until it succeeds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Literal

from aiohttp import web

from coda_aio.credentials import service_principal
from coda_aio.background import cancel_and_wait
from coda_aio.backoff import backoff
from coda_aio.config import Settings
from coda_aio.access.web_access import PUBLIC_PATHS

log = logging.getLogger(__name__)

IDENTITY_HEADER = "X-Forwarded-Email"

OwnerStatus = Literal["disabled", "pending", "ok"]


class OwnerCheck:
    def __init__(self, settings: Settings, *, lookup: Callable[[Settings], str] = service_principal.app_creator):
        self._settings = settings
        self._lookup = lookup
        self._owner: str | None = None
        self._known = asyncio.Event()  # set once the owner is known
        self._task: asyncio.Task | None = None
        self.last_error: str | None = None
        self.attempts = 0

    @property
    def status(self) -> OwnerStatus:
        if not self._settings.app_mode:
            return "disabled"
        return "ok" if self._owner else "pending"

    def allows(self, email: str | None) -> bool:
        return bool(email and self._owner and same_identity(email, self._owner))

    def allows_request(self, request: web.Request) -> bool:
        try:
            return self.allows(forwarded_identity(request))
        except AmbiguousIdentity:
            return False

    def refusal(self, user: str) -> str | None:
        """Why a token of ``user`` may not be used here, or None. The app acts, rotates and
        proxies as whoever owns the token it holds, so it must be the owner's; a token of
        anyone else is left exactly as it was (a paste and a saved token alike)."""
        if self.status == "disabled" or self.allows(user):
            return None
        return (f"This token belongs to {user}, not to the owner of this app: coda_aio would act as {user}. "
                "Paste a token of your own. Nothing was changed, and that token was left as it was.")

    async def refusal_once_known(self, user: str) -> str | None:
        """``refusal``, after waiting for the owner lookup (a boot may come before it)."""
        if self.status != "disabled":
            await self._known.wait()
        return self.refusal(user)

    async def start(self) -> None:
        if self._settings.app_mode:
            self._task = asyncio.create_task(self._resolve(), name="coda-owner-lookup")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _resolve(self) -> None:
        while self._owner is None:
            self.attempts += 1
            try:
                owner = await asyncio.to_thread(self._lookup, self._settings)
                self._owner = owner.strip()
                self._known.set()
                self.last_error = None
                log.info("owner check ready")  # the address itself is not logged
            except Exception as e:  # any failure means "not yet": keep refusing, keep trying
                self.last_error = f"{type(e).__name__}: {e}"
                delay = backoff(self.attempts, 30.0)
                log.warning("owner lookup failed (%s); retrying in %.0f s", self.last_error, delay)
                await asyncio.sleep(delay)


class AmbiguousIdentity(Exception):
    """The request names its user more than once: no single identity can be read from it."""


def forwarded_identity(request: web.Request) -> str | None:
    """The user the Apps front end says this request is from; None when it says nothing.

    Exactly one header with exactly one address: the front end sends one, so a second header
    or a list in one was added by someone else, and reading the first (or the last) would let
    that someone choose who they are (AmbiguousIdentity).
    """
    values = request.headers.getall(IDENTITY_HEADER, [])
    if not values:
        return None
    if len(values) > 1 or "," in values[0]:
        raise AmbiguousIdentity()
    return values[0]


def same_identity(a: str, b: str) -> bool:
    """Email addresses compared as the platform compares them: ASCII letters without case,
    every other character exactly. str.lower() would fold look-alikes too (the Kelvin sign
    U+212A lowers to "k"), letting "\u212aim@..." pass for "kim@...".
    """
    return _ascii_lower(a.strip(" \t")) == _ascii_lower(b.strip(" \t"))


def _ascii_lower(text: str) -> str:
    return "".join(chr(ord(ch) + 32) if "A" <= ch <= "Z" else ch for ch in text)


def owner_middleware(owner: OwnerCheck):
    """The App-mode gate, bound to the app's owner check."""

    @web.middleware
    async def only_the_owner(request: web.Request, handler) -> web.StreamResponse:
        return await _gate(owner, request, handler)

    return only_the_owner


async def _gate(owner: OwnerCheck, request: web.Request, handler) -> web.StreamResponse:
    if owner.status == "disabled" or request.path in PUBLIC_PATHS:
        return await handler(request)
    if owner.status == "pending":
        return web.json_response(
            {"error": "coda_aio is still confirming who owns this app; try again in a few seconds."},
            status=503,
            headers={"Retry-After": "5"},
        )
    try:
        identity = forwarded_identity(request)
    except AmbiguousIdentity:
        return web.json_response(
            {"error": f"Refused: the request names its user more than once ({IDENTITY_HEADER} sent twice, "
                      "or a list in it). Requests through the Databricks Apps front end carry exactly one."},
            status=400,
        )
    if not owner.allows(identity):
        # Never name the owner: the refusal must not reveal whose terminal this is.
        return web.json_response(
            {"error": "This coda_aio app is private to the user who created it; you are not that user."},
            status=403,
        )
    return await handler(request)
