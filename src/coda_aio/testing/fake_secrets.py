"""The secrets API of the fake workspace: scopes, secrets and their ACLs, with real semantics.

Shapes and limits follow the Databricks REST API (``/api/2.0/secrets/...``):

- a scope's creator gets MANAGE (or ``initial_manage_principal``, e.g. ``users``);
- permissions are ordered READ < WRITE < MANAGE, a principal uses the strongest one it has,
  directly or through the ``users`` group; READ reads and lists, WRITE also puts and deletes
  secrets, MANAGE also changes ACLs and deletes the scope;
- a call without the permission gets 403 ``PERMISSION_DENIED``; an unknown scope or key 404
  ``RESOURCE_DOES_NOT_EXIST``;
- keys: letters, digits, ``-_.``, at most 128 characters; values at most 128 KB; at most
  1000 secrets per scope;
- ``GET /api/2.0/secrets/get`` answers ``{"key", "value"}`` with the value base64-encoded.

Route names start with ``secrets.``, so ``fake.fail("secrets")`` breaks every call here.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from aiohttp import web

# fake_workspace imports this module only inside FakeWorkspace.__init__, so this import is not circular.
from coda_aio.testing.fake_workspace import ApiError, FakeWorkspace

PERMISSIONS = ("READ", "WRITE", "MANAGE")
NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
MAX_VALUE_BYTES = 128 * 1024
MAX_SECRETS_PER_SCOPE = 1000
ALL_USERS = "users"


@dataclass
class SecretScope:
    name: str
    acls: dict[str, str] = field(default_factory=dict)  # principal -> permission
    secrets: dict[str, tuple[bytes, int]] = field(default_factory=dict, repr=False)  # key -> (value, ms)


class FakeSecrets:
    def __init__(self, workspace: FakeWorkspace):
        self._ws = workspace
        self.scopes: dict[str, SecretScope] = {}

    # --- setup and inspection, for tests ---------------------------------------------------

    def create_scope(self, name: str, manager: str) -> None:
        self.scopes[name] = SecretScope(name, {manager: "MANAGE"})

    def grant(self, scope: str, principal: str, permission: str) -> None:
        self.scopes[scope].acls[principal] = permission

    def value(self, scope: str, key: str) -> bytes | None:
        entry = self.scopes.get(scope, SecretScope(scope)).secrets.get(key)
        return None if entry is None else entry[0]

    # --- routes ----------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        add = app.router.add_route
        add("POST", "/api/2.0/secrets/scopes/create", self._create_scope, name="secrets.scopes_create")
        add("POST", "/api/2.0/secrets/scopes/delete", self._delete_scope, name="secrets.scopes_delete")
        add("GET", "/api/2.0/secrets/scopes/list", self._list_scopes, name="secrets.scopes_list")
        add("POST", "/api/2.0/secrets/put", self._put, name="secrets.put")
        add("POST", "/api/2.0/secrets/delete", self._delete, name="secrets.delete")
        add("GET", "/api/2.0/secrets/list", self._list, name="secrets.list")
        add("GET", "/api/2.0/secrets/get", self._get, name="secrets.get")
        add("POST", "/api/2.0/secrets/acls/put", self._put_acl, name="secrets.acls_put")
        add("POST", "/api/2.0/secrets/acls/delete", self._delete_acl, name="secrets.acls_delete")
        add("GET", "/api/2.0/secrets/acls/list", self._list_acls, name="secrets.acls_list")

    # --- helpers ---------------------------------------------------------------------------

    def _scope(self, name: object) -> SecretScope:
        if not isinstance(name, str) or not name:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "scope is required.")
        scope = self.scopes.get(name)
        if scope is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Scope {name} does not exist!")
        return scope

    def _level(self, scope: SecretScope, principal: str) -> int:
        granted = [scope.acls.get(principal), scope.acls.get(ALL_USERS)]
        return max((PERMISSIONS.index(p) + 1 for p in granted if p), default=0)

    def _require(self, request: web.Request, scope: SecretScope, permission: str) -> str:
        principal, _ = self._ws._authenticate(request)
        if self._level(scope, principal.user_name) < PERMISSIONS.index(permission) + 1:
            raise ApiError(403, "PERMISSION_DENIED",
                              f"User {principal.user_name} does not have {permission} permission on scope "
                              f"{scope.name}")
        return principal.user_name

    @staticmethod
    def _key(body: dict) -> str:
        key = body.get("key")
        if not isinstance(key, str) or not NAME.match(key):
            raise ApiError(400, "INVALID_PARAMETER_VALUE",
                           "key must consist of alphanumeric characters, dashes, underscores, and periods, "
                           "and may not exceed 128 characters.")
        return key

    # --- scopes ----------------------------------------------------------------------------

    async def _create_scope(self, request: web.Request) -> web.Response:
        principal, _ = self._ws._authenticate(request)
        body = await self._ws._json_body(request)
        name = body.get("scope")
        if not isinstance(name, str) or not NAME.match(name):
            raise ApiError(400, "INVALID_PARAMETER_VALUE",
                              "Scope name must consist of alphanumeric characters, dashes, underscores, and "
                              "periods, and may not exceed 128 characters.")
        if name in self.scopes:
            raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"Scope {name} already exists!")
        manager = body.get("initial_manage_principal") or principal.user_name
        if manager not in (principal.user_name, ALL_USERS):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "initial_manage_principal must be 'users' or unset.")
        self.scopes[name] = SecretScope(name, {str(manager): "MANAGE"})
        return web.json_response({})

    async def _delete_scope(self, request: web.Request) -> web.Response:
        body = await self._ws._json_body(request)
        scope = self._scope(body.get("scope"))
        self._require(request, scope, "MANAGE")
        del self.scopes[scope.name]
        return web.json_response({})

    async def _list_scopes(self, request: web.Request) -> web.Response:
        principal, _ = self._ws._authenticate(request)
        visible = [s for s in self.scopes.values() if self._level(s, principal.user_name) > 0]
        return web.json_response({"scopes": [{"name": s.name, "backend_type": "DATABRICKS"} for s in visible]})

    # --- secrets ---------------------------------------------------------------------------

    async def _put(self, request: web.Request) -> web.Response:
        body = await self._ws._json_body(request)
        scope = self._scope(body.get("scope"))
        self._require(request, scope, "WRITE")
        key = self._key(body)
        string_value, bytes_value = body.get("string_value"), body.get("bytes_value")
        if (string_value is None) == (bytes_value is None):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "Exactly one of string_value or bytes_value is required.")
        if string_value is not None:
            if not isinstance(string_value, str):
                raise ApiError(400, "INVALID_PARAMETER_VALUE", "string_value must be a string.")
            value = string_value.encode()
        else:
            try:
                value = base64.b64decode(str(bytes_value), validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, "INVALID_PARAMETER_VALUE", "bytes_value must be base64.") from None
        if len(value) > MAX_VALUE_BYTES:
            raise ApiError(400, "INVALID_PARAMETER_VALUE",
                              f"Size of the secret value exceeds the maximum of {MAX_VALUE_BYTES} bytes.")
        if key not in scope.secrets and len(scope.secrets) >= MAX_SECRETS_PER_SCOPE:
            raise ApiError(400, "RESOURCE_LIMIT_EXCEEDED",
                              f"Scope {scope.name} has reached the maximum of {MAX_SECRETS_PER_SCOPE} secrets.")
        scope.secrets[key] = (value, int(self._ws.clock() * 1000))
        return web.json_response({})

    async def _delete(self, request: web.Request) -> web.Response:
        body = await self._ws._json_body(request)
        scope = self._scope(body.get("scope"))
        self._require(request, scope, "WRITE")
        key = self._key(body)
        if scope.secrets.pop(key, None) is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Secret {key} does not exist in scope {scope.name}!")
        return web.json_response({})

    async def _list(self, request: web.Request) -> web.Response:
        scope = self._scope(request.query.get("scope"))
        self._require(request, scope, "READ")
        return web.json_response({"secrets": [{"key": k, "last_updated_timestamp": ts}
                                              for k, (_, ts) in sorted(scope.secrets.items())]})

    async def _get(self, request: web.Request) -> web.Response:
        scope = self._scope(request.query.get("scope"))
        self._require(request, scope, "READ")
        key = self._key(dict(request.query))
        entry = scope.secrets.get(key)
        if entry is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Failed to get secret {key} for scope {scope.name}.")
        return web.json_response({"key": key, "value": base64.b64encode(entry[0]).decode()})

    # --- ACLs ------------------------------------------------------------------------------

    async def _put_acl(self, request: web.Request) -> web.Response:
        body = await self._ws._json_body(request)
        scope = self._scope(body.get("scope"))
        self._require(request, scope, "MANAGE")
        principal, permission = body.get("principal"), body.get("permission")
        if not isinstance(principal, str) or not principal or permission not in PERMISSIONS:
            raise ApiError(400, "INVALID_PARAMETER_VALUE",
                              "principal and permission (READ, WRITE or MANAGE) are required.")
        scope.acls[principal] = permission
        return web.json_response({})

    async def _delete_acl(self, request: web.Request) -> web.Response:
        body = await self._ws._json_body(request)
        scope = self._scope(body.get("scope"))
        self._require(request, scope, "MANAGE")
        if scope.acls.pop(str(body.get("principal")), None) is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", "No ACL for this principal on the scope.")
        return web.json_response({})

    async def _list_acls(self, request: web.Request) -> web.Response:
        scope = self._scope(request.query.get("scope"))
        self._require(request, scope, "MANAGE")
        return web.json_response({"items": [{"principal": p, "permission": perm}
                                            for p, perm in sorted(scope.acls.items())]})
