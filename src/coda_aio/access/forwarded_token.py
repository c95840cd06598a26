"""App mode, user authorization (issue 21): take the signed-in user's OAuth token that the
Apps front proxy forwards with each request, from the owner's requests only.

Anyone who reaches the app gets a token forwarded too; a non-owner's is never taken (it
would make coda act as them). Runs after the owner gate, but checks the identity itself,
because the gate lets the public paths (/health) through for anyone.
"""

from __future__ import annotations

from aiohttp import web

from coda_aio.access.owner import AmbiguousIdentity, OwnerCheck, forwarded_identity
from coda_aio.credentials.user_token import UserToken

ACCESS_TOKEN_HEADER = "X-Forwarded-Access-Token"


def forwarded_token_middleware(owner: OwnerCheck, user_token: UserToken):
    @web.middleware
    async def take_the_owners_sign_in(request: web.Request, handler) -> web.StreamResponse:
        tokens = request.headers.getall(ACCESS_TOKEN_HEADER, [])
        try:
            email = forwarded_identity(request)
        except AmbiguousIdentity:
            email = None  # the owner gate refuses it; never take a token from it either
        # The front end sends one token; a second header was added by someone else.
        if len(tokens) == 1 and tokens[0] and email and owner.allows(email):
            user_token.offer(tokens[0], email.strip())
        return await handler(request)

    return take_the_owners_sign_in
