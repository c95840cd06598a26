"""App mode, user authorization (issue 21): take the signed-in user's OAuth token that the
Apps front proxy forwards with each request, from the owner's requests only.

Anyone who reaches the app gets a token forwarded too; a non-owner's is never taken (it
would make coda act as them). Runs after the owner gate, but checks the identity itself,
because the gate lets the public paths (/health) through for anyone.
"""

from __future__ import annotations

from aiohttp import web

from coda_aio.access.owner import IDENTITY_HEADER, OwnerCheck
from coda_aio.credentials.user_token import UserToken

ACCESS_TOKEN_HEADER = "X-Forwarded-Access-Token"


def forwarded_token_middleware(owner: OwnerCheck, user_token: UserToken):
    @web.middleware
    async def take_the_owners_sign_in(request: web.Request, handler) -> web.StreamResponse:
        token = request.headers.get(ACCESS_TOKEN_HEADER)
        email = request.headers.get(IDENTITY_HEADER)
        if token and owner.allows(email):
            user_token.offer(token, email.strip())
        return await handler(request)

    return take_the_owners_sign_in
