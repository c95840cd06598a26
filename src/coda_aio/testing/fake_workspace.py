"""An in-process stand-in for a Databricks workspace, for tests and ``--demo-workspace``.

It answers the parts of the workspace REST API that coda_aio and its agents touch, with
the shapes a real workspace uses:

- SCIM Me, the Token API 2.0 (create / list / delete, per principal), Apps get;
- OAuth M2M for service principals: ``/.well-known/databricks-config`` (databricks-sdk
  0.156 asks it first, on every client), ``/oidc/.well-known/oauth-authorization-server``
  and ``/oidc/v1/token`` (client credentials, by HTTP Basic auth or form fields);
- serving endpoints: OpenAI chat completions, Anthropic Messages, Google generateContent,
  each as JSON or as its own server-sent-event stream, plus two plain helpers for proxy
  tests (``echo`` streams the request body back, ``blob`` streams N bytes).

Like a workspace, every API call needs ``Authorization: Bearer <token>``: no header gives
401, an unknown, revoked or expired token gives 403 ``Invalid access token.``. Serving
endpoints accept only the bearer header too (no ``x-api-key``), so a proxy that forgets
to swap credentials fails here as it would against a real workspace.

Tests steer it with fault injection (``fail``, ``hang``, ``delay``, ``reset``), a clock they
control, and inspection helpers (``live_tokens``, ``is_live``, ``served``, ``calls``).
All state lives on the ``FakeWorkspace`` object, so several can run side by side.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Literal

from aiohttp import web

Clock = Callable[[], float]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

INVALID_TOKEN_MESSAGE = "Invalid access token."
NO_CREDENTIAL_MESSAGE = "Credential was not sent or was of an unsupported type for this API."
PATS_DISABLED_MESSAGE = "Personal access tokens are disabled for this workspace."

# Issue 21: the API scope an OAuth token needs, by path prefix (first match). A token with
# "all-apis" (the service principal's, a U2M sign-in's) passes them all; a user-authorization
# token forwarded by the Apps proxy carries only what the app was granted.
API_SCOPES = (
    ("/api/2.0/preview/scim/v2/Me", "iam.current-user:read"),
    ("/serving-endpoints", "serving.serving-endpoints"),
    ("/ai-gateway", "serving.serving-endpoints"),
    ("/api/2.0/sql", "sql"),
    ("/api/2.0/fs", "files.files"),
)
ALL_APIS = "all-apis"
# The pattern `blob` streams, so a test can rebuild the expected bytes from the size alone.
BLOB_PATTERN = bytes(range(256))


def blob_bytes(size: int) -> bytes:
    """The exact bytes ``GET /serving-endpoints/blob?size=N`` sends."""
    whole, rest = divmod(size, len(BLOB_PATTERN))
    return BLOB_PATTERN * whole + BLOB_PATTERN[:rest]


class ManualClock:
    """A clock tests move by hand, so token expiry needs no sleeping."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- what the workspace knows ----------------------------------------------------------


@dataclass
class Principal:
    id: str
    user_name: str  # a user's email, or a service principal's application id
    display_name: str
    is_service_principal: bool = False
    client_secret: str | None = field(default=None, repr=False)

    def scim(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "userName": self.user_name,
            "displayName": self.display_name,
            "active": True,
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "groups": [],
        }
        if "@" in self.user_name:
            body["emails"] = [{"value": self.user_name, "type": "work", "primary": True}]
        return body


@dataclass
class IssuedToken:
    value: str = field(repr=False)
    token_id: str
    owner: str  # Principal.user_name
    created_at: float
    expires_at: float | None
    comment: str = ""
    kind: Literal["pat", "oauth"] = "pat"
    revoked: bool = False
    scopes: frozenset[str] = frozenset({ALL_APIS})  # OAuth only: what the token may call

    def live(self, now: float) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)

    def info(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "creation_time": int(self.created_at * 1000),
            "expiry_time": -1 if self.expires_at is None else int(self.expires_at * 1000),
            "comment": self.comment,
        }


@dataclass(frozen=True)
class FakeApp:
    name: str
    creator: str
    service_principal_client_id: str
    description: str = ""


@dataclass(frozen=True)
class ServedRequest:
    """One authenticated serving-endpoint request, as the workspace saw it."""

    method: str
    path: str
    query: str
    token: str = field(repr=False)
    user: str
    headers: dict[str, str] = field(repr=False, default_factory=dict)


@dataclass
class Fault:
    kind: Literal["fail", "hang", "delay", "reset"]
    target: str  # a route name ("token_create", "serving") or a path prefix ("/oidc/v1/token")
    times: int | None  # None: until clear_faults()
    status: int = 500
    retry_after: float | None = None
    body: Any = None
    seconds: float = 0.0

    def matches(self, route: str, path: str) -> bool:
        if self.target.startswith("/"):
            return path.startswith(self.target)
        return route == self.target or route.startswith(self.target + ".")


def api_error(status: int, error_code: str | int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error_code": error_code, "message": message}, status=status, headers=headers)


class ApiError(Exception):
    """Raised inside handlers; the middleware turns it into the workspace's JSON error."""

    def __init__(self, status: int, error_code: str | int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.response = api_error(status, error_code, message, headers)


# Route names: faults target them ("serving" hits every "serving.*" route).
ROUTE_HOST_METADATA = "host_metadata"
ROUTE_OIDC_DISCOVERY = "oidc.discovery"
ROUTE_OIDC_TOKEN = "oidc.token"
ROUTE_ME = "me"
ROUTE_TOKEN_CREATE = "token_create"
ROUTE_TOKEN_DELETE = "token_delete"
ROUTE_TOKEN_LIST = "token_list"
ROUTE_APPS = "apps"


class FakeWorkspace:
    def __init__(
        self,
        *,
        clock: Clock = time.time,
        max_token_lifetime: float | None = None,
        oauth_token_lifetime: int = 3600,
        sse_events: int = 3,
        sse_delay: float = 0.0,
        workspace_id: str = "1234567890123456",
    ):
        self.clock = clock
        self.max_token_lifetime = max_token_lifetime
        self.oauth_token_lifetime = oauth_token_lifetime
        self.sse_events = sse_events  # content pieces per streamed reply
        self.sse_delay = sse_delay  # seconds before each piece
        self.workspace_id = workspace_id
        # The admin switch "Personal access tokens: off": token/create is refused and a
        # personal access token no longer authenticates (OAuth tokens still do).
        self.pats_disabled = False
        # Issue 21, local OAuth (U2M): who is signed in to the workspace in "the browser". The
        # authorize endpoint consents as them at once; None answers as a signed-out browser.
        self.browser_user: str | None = None
        self._codes: dict[str, dict[str, Any]] = {}  # authorization code -> what it was issued for
        self._refresh: dict[str, tuple[str, frozenset[str]]] = {}  # refresh token -> (user, scopes)

        self._principals: dict[str, Principal] = {}  # by user_name
        self._tokens: dict[str, IssuedToken] = {}  # by value
        self._apps: dict[str, FakeApp] = {}
        self._faults: list[Fault] = []
        self._release_hangs = asyncio.Event()

        self.calls: Counter[str] = Counter()  # requests per route name
        self.served: deque[ServedRequest] = deque(maxlen=1000)
        self.revoked_ids: list[str] = []  # token ids deleted through the API, in order
        self.minted_count = 0  # tokens created through POST /api/2.0/token/create

        self._runner: web.AppRunner | None = None
        self.url: str | None = None

        # Secrets and workspace files (issue 13) live in their own modules.
        from coda_aio.testing.fake_secrets import FakeSecrets
        from coda_aio.testing.fake_workspace_files import FakeWorkspaceFiles

        self.secrets = FakeSecrets(self)
        self.files = FakeWorkspaceFiles(self)

        # Random faults for long runs (issue 14): a testing.fake_chaos.Chaos, or None.
        self.chaos = None

    # --- setup, for tests and the demo ---------------------------------------------------

    def add_user(self, user_name: str, display_name: str | None = None) -> None:
        if display_name is None:
            display_name = user_name.split("@")[0].replace(".", " ").title()
        self._principals[user_name] = Principal(self._new_principal_id(), user_name, display_name)

    def add_service_principal(self, client_id: str, client_secret: str, display_name: str | None = None) -> None:
        """A service principal; its application id is its OAuth client id, as in Databricks."""
        self._principals[client_id] = Principal(
            self._new_principal_id(),
            client_id,
            display_name or f"sp-{client_id[:8]}",
            is_service_principal=True,
            client_secret=client_secret,
        )

    def add_app(self, name: str, creator: str, service_principal_client_id: str | None = None,
                description: str = "") -> None:
        sp = service_principal_client_id or str(uuid.uuid4())
        self._apps[name] = FakeApp(name, creator, sp, description)

    def issue_pat(self, user_name: str, lifetime_seconds: float | None = None, comment: str = "") -> str:
        """A personal access token for ``user_name``, as if made in the workspace's UI."""
        if user_name not in self._principals:
            raise KeyError(f"no such user {user_name!r}: call add_user first")
        return self._issue(user_name, lifetime_seconds, comment).value

    def issue_user_oauth(self, user_name: str, scopes: list[str] | tuple[str, ...], lifetime_seconds: float = 3600
                         ) -> str:
        """An OAuth access token of ``user_name`` as the Apps proxy forwards one: a JWT with the
        granted scopes and an ``exp``, no refresh token (issue 21)."""
        if user_name not in self._principals:
            raise KeyError(f"no such user {user_name!r}: call add_user first")
        token = self._issue(user_name, lifetime_seconds, "", kind="oauth", scopes=frozenset(scopes))
        return token.value

    def revoke(self, token_value: str) -> None:
        """Revoke a token behind coda_aio's back, as a user would in the workspace's UI."""
        self._tokens[token_value].revoked = True

    # --- inspection ------------------------------------------------------------------------

    def live_tokens(self, user_name: str) -> list[dict[str, Any]]:
        now = self.clock()
        return [t.info() for t in self._tokens.values() if t.kind == "pat" and t.owner == user_name and t.live(now)]

    def is_live(self, token_value: str) -> bool:
        token = self._tokens.get(token_value)
        return token is not None and token.live(self.clock())

    def token_id_of(self, token_value: str) -> str:
        return self._tokens[token_value].token_id

    # --- fault injection -------------------------------------------------------------------

    def fail(self, target: str, status: int = 500, *, times: int | None = 1, retry_after: float | None = None,
             body: Any = None) -> None:
        """Answer ``status`` instead. ``body``: a dict (sent as JSON), str or bytes (sent as is)."""
        self._faults.append(Fault("fail", target, times, status=status, retry_after=retry_after, body=body))

    def hang(self, target: str, *, times: int | None = 1) -> None:
        """Never answer, until the client gives up, ``clear_faults()`` or ``stop()``."""
        self._faults.append(Fault("hang", target, times))

    def delay(self, target: str, seconds: float, *, times: int | None = 1) -> None:
        self._faults.append(Fault("delay", target, times, seconds=seconds))

    def reset(self, target: str, *, times: int | None = 1) -> None:
        """Drop the connection without answering."""
        self._faults.append(Fault("reset", target, times))

    def clear_faults(self) -> None:
        self._faults.clear()
        self._release_hangs.set()
        self._release_hangs = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        # 16 MiB: a workspace import of the largest file allowed (10 MB) in base64 JSON.
        app = web.Application(middlewares=[self._middleware], client_max_size=16 * 1024**2)
        add = app.router.add_route
        add("GET", "/", self._index)
        add("GET", "/.well-known/databricks-config", self._host_metadata, name=ROUTE_HOST_METADATA)
        add("GET", "/oidc/.well-known/oauth-authorization-server", self._oidc_discovery, name=ROUTE_OIDC_DISCOVERY)
        add("POST", "/oidc/v1/token", self._oidc_token, name=ROUTE_OIDC_TOKEN)
        add("GET", "/oidc/v1/authorize", self._oidc_authorize, name="oidc.authorize")
        add("GET", "/api/2.0/preview/scim/v2/Me", self._me, name=ROUTE_ME)
        add("POST", "/api/2.0/token/create", self._token_create, name=ROUTE_TOKEN_CREATE)
        add("POST", "/api/2.0/token/delete", self._token_delete, name=ROUTE_TOKEN_DELETE)
        add("GET", "/api/2.0/token/list", self._token_list, name=ROUTE_TOKEN_LIST)
        add("GET", "/api/2.0/apps/{name}", self._app_get, name=ROUTE_APPS)
        add("POST", "/serving-endpoints/chat/completions", self._openai_chat, name="serving.chat")
        add("POST", "/serving-endpoints/anthropic/v1/messages", self._anthropic_messages, name="serving.anthropic")
        add("POST", "/serving-endpoints/google/v1beta/models/{model_action}", self._google, name="serving.google")
        add("POST", "/serving-endpoints/echo", self._echo, name="serving.echo")
        add("GET", "/serving-endpoints/blob", self._blob, name="serving.blob")
        add("POST", "/serving-endpoints/{name}/invocations", self._openai_chat, name="serving.invocations")
        # The OpenAI Responses API (Codex) lives in its own module; imported here because it imports this one.
        from coda_aio.testing import fake_serving

        fake_serving.add_routes(app, self)
        self.secrets.add_routes(app)
        self.files.add_routes(app)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0: any free port); returns the base URL."""
        # handler_cancellation: a client that gives up on a hung request ends its handler.
        self._runner = web.AppRunner(self.make_app(), handler_cancellation=True, shutdown_timeout=1.0,
                                     access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        self._release_hangs.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- plumbing --------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name or ""
        if route:
            self.calls[route] += 1
        fault = self._take_fault(route, request.path)
        if fault is not None:
            injected = await self._apply(fault, request)
            if injected is not None:
                return injected
        try:
            response = await handler(request)
        except ApiError as e:
            response = e.response
        except web.HTTPException as e:
            if e.status < 400:
                raise
            # A workspace answers unknown paths with JSON too, never an HTML page.
            code = "ENDPOINT_NOT_FOUND" if e.status == 404 else "BAD_REQUEST"
            response = api_error(e.status, code, f"No API found for '{request.method} {request.path}'"
                                 if e.status in (404, 405) else e.reason)
        if not response.prepared:
            response.headers.setdefault("x-databricks-org-id", self.workspace_id)
        return response

    def _take_fault(self, route: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.matches(route, path):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                return fault
        return self.chaos.pick(route) if self.chaos is not None else None

    async def _apply(self, fault: Fault, request: web.Request) -> web.StreamResponse | None:
        if fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
            return None
        if fault.kind == "hang":
            await self._release_hangs.wait()
            return api_error(503, "TEMPORARILY_UNAVAILABLE", "The request was released without an answer.")
        if fault.kind == "reset":
            if request.transport is not None:
                request.transport.abort()
            # Nothing can be sent any more; aiohttp drops this response on the closed transport.
            return web.Response(status=500)
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        if fault.body is None:
            code = {429: "REQUEST_LIMIT_EXCEEDED", 503: "TEMPORARILY_UNAVAILABLE"}.get(fault.status, "INTERNAL_ERROR")
            return api_error(fault.status, code, f"Injected failure ({fault.status}).", headers)
        if isinstance(fault.body, (dict, list)):
            return web.json_response(fault.body, status=fault.status, headers=headers)
        data = fault.body.encode() if isinstance(fault.body, str) else fault.body
        return web.Response(body=data, status=fault.status, headers=headers, content_type="text/html")

    def _authenticate(self, request: web.Request) -> tuple[Principal, str]:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise ApiError(401, 401, NO_CREDENTIAL_MESSAGE)
        token = self._tokens.get(value.strip())
        if token is None or not token.live(self.clock()):
            raise ApiError(403, 403, INVALID_TOKEN_MESSAGE, {"X-Databricks-Reason-Phrase": INVALID_TOKEN_MESSAGE})
        if token.kind == "pat" and self.pats_disabled:
            raise ApiError(403, "PERMISSION_DENIED", PATS_DISABLED_MESSAGE)
        needed = next((scope for prefix, scope in API_SCOPES if request.path.startswith(prefix)), ALL_APIS)
        if ALL_APIS not in token.scopes and needed not in token.scopes:
            raise ApiError(403, "PERMISSION_DENIED",
                           f"Provided OAuth token does not have required scopes: {needed}")
        return self._principals[token.owner], token.value

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "MALFORMED_REQUEST", "Could not parse request object: invalid JSON.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "MALFORMED_REQUEST", "Could not parse request object: expected a JSON object.")
        return body

    def _issue(self, owner: str, lifetime_seconds: float | None, comment: str,
               kind: Literal["pat", "oauth"] = "pat", scopes: frozenset[str] = frozenset({ALL_APIS})) -> IssuedToken:
        now = self.clock()
        expires = None if lifetime_seconds is None or lifetime_seconds <= 0 else now + lifetime_seconds
        if kind == "pat":
            value = "dapi" + secrets.token_hex(16)
        else:
            value = _jwt({"sub": owner, "scope": " ".join(sorted(scopes)), "iat": int(now),
                          "exp": int(expires if expires is not None else now + 3600), "jti": secrets.token_hex(8)})
        token = IssuedToken(value, secrets.token_hex(32), owner, now, expires, comment, kind, scopes=scopes)
        self._tokens[value] = token
        return token

    def _new_principal_id(self) -> str:
        return str(1_000_000_000_000 + len(self._principals) + 1)

    # --- control plane ---------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.Response:
        users = ", ".join(p.user_name for p in self._principals.values() if not p.is_service_principal) or "none"
        return web.Response(text=(
            "coda_aio demo workspace\n\n"
            "This is an in-process stand-in for a Databricks workspace, not a real one.\n"
            f"Users: {users}\n"
            "Tokens for it are printed by `python -m coda_aio --demo-workspace`.\n"
        ))

    async def _host_metadata(self, request: web.Request) -> web.Response:
        base = request.url.origin()
        return web.json_response({
            "oidc_endpoint": f"{base}/oidc",
            "workspace_id": self.workspace_id,
            "cloud": "AWS",
        })

    async def _oidc_discovery(self, request: web.Request) -> web.Response:
        base = request.url.origin()
        return web.json_response({
            "issuer": f"{base}/oidc",
            "authorization_endpoint": f"{base}/oidc/v1/authorize",
            "token_endpoint": f"{base}/oidc/v1/token",
            "jwks_uri": f"{base}/oidc/jwks.json",
            "response_types_supported": ["code", "id_token"],
            "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["all-apis", "offline_access", "openid", "email", "profile", "sql"],
        })

    async def _oidc_token(self, request: web.Request) -> web.Response:
        form = await request.post()
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            try:
                pair = base64.b64decode(header[6:].strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                pair = ":"
            client_id, _, client_secret = pair.partition(":")
        grant = form.get("grant_type")
        if grant in ("authorization_code", "refresh_token"):
            return self._user_grant(form)
        if grant != "client_credentials":
            return web.json_response(
                {"error": "unsupported_grant_type", "error_description": f"Unsupported grant_type {grant!r}."},
                status=400)
        principal = self._principals.get(str(client_id or ""))
        if (principal is None or principal.client_secret is None
                or not secrets.compare_digest(principal.client_secret, str(client_secret or ""))):
            return web.json_response(
                {"error": "invalid_client", "error_description": "Client authentication failed"}, status=401)
        token = self._issue(principal.user_name, self.oauth_token_lifetime, "", kind="oauth")
        return web.json_response({
            "access_token": token.value,
            "token_type": "Bearer",
            "expires_in": self.oauth_token_lifetime,
            "scope": str(form.get("scope") or "all-apis"),
        })

    async def _oidc_authorize(self, request: web.Request) -> web.Response:
        """The U2M consent page, as a browser signed in as ``browser_user`` passes it: PKCE (S256)
        required, then a redirect to a loopback ``redirect_uri`` with the code and the state."""
        q = request.query
        redirect = q.get("redirect_uri", "")
        host = redirect.split("//", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
        if q.get("response_type") != "code" or not q.get("client_id") or host not in ("localhost", "127.0.0.1"):
            return web.json_response({"error": "invalid_request", "error_description": "Bad authorize request."},
                                     status=400)
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return web.json_response({"error": "invalid_request", "error_description": "PKCE (S256) is required."},
                                     status=400)
        if self.browser_user is None:
            return web.Response(status=401, text="Sign in to the workspace first.")
        code = secrets.token_urlsafe(24)
        scopes = frozenset((q.get("scope") or ALL_APIS).split()) - {"offline_access"}
        self._codes[code] = {"client_id": q["client_id"], "redirect_uri": redirect, "user": self.browser_user,
                             "challenge": q["code_challenge"], "scopes": scopes or frozenset({ALL_APIS}),
                             "offline": "offline_access" in (q.get("scope") or "")}
        separator = "&" if "?" in redirect else "?"
        raise web.HTTPFound(f"{redirect}{separator}code={code}&state={q.get('state', '')}")

    def _user_grant(self, form) -> web.Response:
        """authorization_code (with the PKCE verifier) and refresh_token grants of a public client."""
        def refused(description: str) -> web.Response:
            return web.json_response({"error": "invalid_grant", "error_description": description}, status=400)

        if form.get("grant_type") == "authorization_code":
            issued = self._codes.pop(str(form.get("code") or ""), None)
            verifier = str(form.get("code_verifier") or "")
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if issued is None or issued["client_id"] != form.get("client_id") \
                    or issued["redirect_uri"] != form.get("redirect_uri") or challenge != issued["challenge"]:
                return refused("The authorization code or the PKCE verifier is not valid.")
            user, scopes, offline = issued["user"], issued["scopes"], issued["offline"]
        else:
            held = self._refresh.pop(str(form.get("refresh_token") or ""), None)
            if held is None:
                return refused("The refresh token is not valid.")
            (user, scopes), offline = held, True
        token = self._issue(user, self.oauth_token_lifetime, "", kind="oauth", scopes=scopes)
        body = {"access_token": token.value, "token_type": "Bearer", "expires_in": self.oauth_token_lifetime,
                "scope": " ".join(sorted(scopes))}
        if offline:  # a new refresh token each time; the old one is spent
            refresh = secrets.token_urlsafe(32)
            self._refresh[refresh] = (user, scopes)
            body["refresh_token"] = refresh
        return web.json_response(body)

    async def _me(self, request: web.Request) -> web.Response:
        principal, _ = self._authenticate(request)
        return web.json_response(principal.scim())

    async def _token_create(self, request: web.Request) -> web.Response:
        principal, _ = self._authenticate(request)
        if self.pats_disabled:  # as a workspace answers, whoever asks
            raise ApiError(403, "PERMISSION_DENIED", PATS_DISABLED_MESSAGE)
        body = await self._json_body(request)
        lifetime = body.get("lifetime_seconds")
        if lifetime is not None and (isinstance(lifetime, bool) or not isinstance(lifetime, (int, float))):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "lifetime_seconds must be a number of seconds.")
        if self.max_token_lifetime is not None:
            if lifetime is None or lifetime <= 0:
                lifetime = self.max_token_lifetime
            elif lifetime > self.max_token_lifetime:
                raise ApiError(400, "INVALID_PARAMETER_VALUE",
                               f"Token lifetime exceeds the maximum of {self.max_token_lifetime:g} seconds "
                               "set by the workspace admin.")
        token = self._issue(principal.user_name, lifetime, str(body.get("comment") or ""))
        self.minted_count += 1
        return web.json_response({"token_value": token.value, "token_info": token.info()})

    async def _token_delete(self, request: web.Request) -> web.Response:
        principal, _ = self._authenticate(request)
        body = await self._json_body(request)
        token_id = body.get("token_id")
        if not isinstance(token_id, str) or not token_id:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "token_id is required.")
        now = self.clock()
        for token in self._tokens.values():
            if token.token_id == token_id and token.owner == principal.user_name and token.kind == "pat" \
                    and token.live(now):
                token.revoked = True
                self.revoked_ids.append(token_id)
                return web.json_response({})
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Token with id {token_id} does not exist.")

    async def _token_list(self, request: web.Request) -> web.Response:
        principal, _ = self._authenticate(request)
        return web.json_response({"token_infos": self.live_tokens(principal.user_name)})

    async def _app_get(self, request: web.Request) -> web.Response:
        self._authenticate(request)
        name = request.match_info["name"]
        app = self._apps.get(name)
        if app is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"App with name {name} does not exist or is deleted.")
        stamp = "2025-01-01T00:00:00Z"
        return web.json_response({
            "name": app.name,
            "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, app.name)),
            "description": app.description,
            "url": f"{request.url.origin()}/apps/{app.name}",
            "creator": app.creator,
            "updater": app.creator,
            "create_time": stamp,
            "update_time": stamp,
            "service_principal_client_id": app.service_principal_client_id,
            "service_principal_id": 7_000_000_000_000 + len(app.name),
            "service_principal_name": f"app-{app.name}",
            "app_status": {"state": "RUNNING", "message": "App has status: App is running"},
            "compute_status": {"state": "ACTIVE", "message": "App compute is running."},
        })

    # --- serving endpoints -----------------------------------------------------------------

    def _serve(self, request: web.Request) -> None:
        """Authenticate a serving request and record which token the workspace saw."""
        principal, token = self._authenticate(request)
        self.served.append(ServedRequest(
            request.method, request.path, request.query_string, token, principal.user_name,
            {k: v for k, v in request.headers.items() if k.lower() != "authorization"},
        ))

    def _pieces(self, text: str) -> list[str]:
        n = max(1, self.sse_events)
        return [text[i * len(text) // n:(i + 1) * len(text) // n] for i in range(n)]

    async def _sse(self, request: web.Request, events: list[tuple[str | None, Any]],
                   delayed: Callable[[int], bool]) -> web.StreamResponse:
        """Send ``(event name, data)`` pairs as server-sent events, one write each."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        for i, (name, data) in enumerate(events):
            if delayed(i) and self.sse_delay > 0:
                await asyncio.sleep(self.sse_delay)
            payload = data if isinstance(data, str) else json.dumps(data)
            line = f"event: {name}\ndata: {payload}\n\n" if name else f"data: {payload}\n\n"
            await response.write(line.encode())
        await response.write_eof()
        return response

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        self._serve(request)
        body = await self._json_body(request)
        if not isinstance(body.get("messages"), list):
            raise ApiError(400, "BAD_REQUEST", "messages: a list of chat messages is required.")
        model = request.match_info.get("name") or str(body.get("model") or "unknown")
        text = reply_text(model)
        ident, created = f"chatcmpl-{secrets.token_hex(12)}", int(self.clock())
        usage = {"prompt_tokens": prompt_size(body), "completion_tokens": len(text.split()),
                 "total_tokens": prompt_size(body) + len(text.split())}
        if not body.get("stream"):
            return web.json_response({
                "id": ident, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop", "logprobs": None}],
                "usage": usage,
            })

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

        pieces = self._pieces(text)
        events: list[tuple[str | None, Any]] = [
            (None, chunk({"role": "assistant", "content": piece} if i == 0 else {"content": piece}, None))
            for i, piece in enumerate(pieces)
        ]
        events.append((None, {**chunk({}, "stop"), "usage": usage}))
        events.append((None, "[DONE]"))
        return await self._sse(request, events, delayed=lambda i: i < len(pieces))

    async def _anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        self._serve(request)
        body = await self._json_body(request)
        if not isinstance(body.get("messages"), list) or "max_tokens" not in body:
            raise ApiError(400, "BAD_REQUEST", "messages and max_tokens are required.")
        model = str(body.get("model") or "unknown")
        text = reply_text(model)
        ident = f"msg_{secrets.token_hex(12)}"
        usage = {"input_tokens": prompt_size(body), "output_tokens": len(text.split())}
        message = {"id": ident, "type": "message", "role": "assistant", "model": model,
                   "content": [{"type": "text", "text": text}],
                   "stop_reason": "end_turn", "stop_sequence": None, "usage": usage}
        if not body.get("stream"):
            return web.json_response(message)
        pieces = self._pieces(text)
        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        events: list[tuple[str | None, Any]] = [
            ("message_start", {"type": "message_start", "message": start}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
        ]
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": piece}}) for piece in pieces]
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"output_tokens": usage["output_tokens"]}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        return await self._sse(request, events, delayed=lambda i: 2 <= i < 2 + len(pieces))

    async def _google(self, request: web.Request) -> web.StreamResponse:
        self._serve(request)
        model, _, action = request.match_info["model_action"].partition(":")
        if action not in ("generateContent", "streamGenerateContent"):
            raise ApiError(404, "ENDPOINT_NOT_FOUND", f"Unknown method {action!r}; use generateContent.")
        body = await self._json_body(request)
        if not isinstance(body.get("contents"), list):
            raise ApiError(400, "BAD_REQUEST", "contents: a list of contents is required.")
        text = reply_text(model)
        usage = {"promptTokenCount": prompt_size(body), "candidatesTokenCount": len(text.split()),
                 "totalTokenCount": prompt_size(body) + len(text.split())}

        def candidate(piece: str, finished: bool) -> dict[str, Any]:
            out: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": piece}]}, "index": 0}
            if finished:
                out["finishReason"] = "STOP"
            return out

        if action == "generateContent":
            return web.json_response({"candidates": [candidate(text, True)], "usageMetadata": usage,
                                      "modelVersion": model})
        pieces = self._pieces(text)
        events: list[tuple[str | None, Any]] = []
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            chunk: dict[str, Any] = {"candidates": [candidate(piece, last)], "modelVersion": model}
            if last:
                chunk["usageMetadata"] = usage
            events.append((None, chunk))
        return await self._sse(request, events, delayed=lambda i: True)

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        """Stream the request body back as it arrives, never holding all of it."""
        self._serve(request)
        response = web.StreamResponse(headers={
            "Content-Type": request.headers.get("Content-Type", "application/octet-stream")})
        await response.prepare(request)
        async for chunk in request.content.iter_chunked(64 * 1024):
            await response.write(chunk)
        await response.write_eof()
        return response

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        self._serve(request)
        try:
            size = int(request.query.get("size", "0"))
        except ValueError:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "size must be a whole number of bytes.") from None
        if size < 0:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "size must not be negative.")
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        block = BLOB_PATTERN * 256  # 64 KiB, a whole number of patterns
        sent = 0
        while sent < size:
            piece = block[: min(len(block), size - sent)]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response


def _jwt(claims: dict[str, Any]) -> str:
    """An unsigned-looking JWT (header.payload.signature, base64url): what a workspace's OAuth
    access tokens look like to a client, which reads ``exp`` but cannot check the signature."""
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    header = part(json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": "fake"}).encode())
    return f"{header}.{part(json.dumps(claims).encode())}.{part(secrets.token_bytes(32))}"


def reply_text(model: str) -> str:
    return f"Hello from the fake workspace (model {model})."


def prompt_size(body: dict[str, Any]) -> int:
    """A rough token count of a request, enough for a plausible ``usage`` block."""
    return max(1, len(json.dumps(body.get("messages") or body.get("contents") or body.get("input") or "").split()))
