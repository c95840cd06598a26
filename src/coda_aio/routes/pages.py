"""The browser UI: the page, its own static files, and xterm.js from node_modules.

Only files named here are ever served: the page's own files are looked up by bare name
inside ``web/`` (no sub-paths; see ``web_dir``), and xterm.js files by an explicit map into node_modules,
so no request can reach anything else on disk.
"""

from __future__ import annotations

import html
import importlib.util
import re
from pathlib import Path

from aiohttp import web


def web_dir() -> Path:
    """The front end's files: the package ``coda_aio.web``, which pyproject.toml maps to web/
    at the repository root (an editable install points there; a wheel carries a copy)."""
    spec = importlib.util.find_spec("coda_aio.web")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    # Run from a checkout without installing (PYTHONPATH=src): the repository's own web/.
    return Path(__file__).resolve().parents[3] / "web"


WEB_DIR = web_dir()

# URL name under /vendor/ -> file inside node_modules (installed by `npm ci`, never committed).
VENDOR_FILES = {
    "xterm.mjs": "@xterm/xterm/lib/xterm.mjs",
    "xterm.css": "@xterm/xterm/css/xterm.css",
    "addon-fit.mjs": "@xterm/addon-fit/lib/addon-fit.mjs",
    "addon-web-links.mjs": "@xterm/addon-web-links/lib/addon-web-links.mjs",
    "addon-search.mjs": "@xterm/addon-search/lib/addon-search.mjs",
    "addon-unicode11.mjs": "@xterm/addon-unicode11/lib/addon-unicode11.mjs",
    "addon-image.mjs": "@xterm/addon-image/lib/addon-image.mjs",
    "addon-clipboard.mjs": "@xterm/addon-clipboard/lib/addon-clipboard.mjs",
    "addon-webgl.mjs": "@xterm/addon-webgl/lib/addon-webgl.mjs",
}

# Set explicitly rather than guessed: browsers refuse module scripts that are not served as
# JavaScript, and the system's MIME table does not always know .mjs.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

STATIC_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")

# Revalidate instead of no-store: a reload then costs a 304 instead of the whole of xterm.js.
REVALIDATE = {"Cache-Control": "no-cache"}


def node_modules_dir() -> Path:
    """node_modules at the repository root, or in the working directory as a fallback."""
    beside_package = Path(__file__).resolve().parents[3] / "node_modules"
    if beside_package.is_dir():
        return beside_package
    return Path.cwd() / "node_modules"


def npm_ci_hint(node_modules: Path) -> str:
    return (
        f"xterm.js is not installed (looked in {node_modules}). "
        f"Run `npm ci` in {node_modules.parent} and reload the page."
    )


def missing_xterm_page(node_modules: Path) -> str:
    # Plain markup and the page's own stylesheet: the CSP allows no inline script or style.
    return (
        "<!doctype html><html lang=en data-theme=dark><head><meta charset=utf-8>"
        "<title>coda_aio: xterm.js missing</title><link rel=stylesheet href=/static/style.css></head>"
        "<body class=error-page><main><h1>The web terminal cannot start</h1>"
        f"<p>{html.escape(npm_ci_hint(node_modules))}</p>"
        f"<pre>cd {html.escape(str(node_modules.parent))}\nnpm ci</pre></main></body></html>"
    )


def file_response(path: Path) -> web.FileResponse:
    headers = {"Content-Type": CONTENT_TYPES[path.suffix], **REVALIDATE}
    return web.FileResponse(path, headers=headers)


class WebAssets:
    """Serves the page and its files. node_modules is checked per request, so running
    `npm ci` while the server is up needs no restart."""

    def __init__(self, node_modules: Path | None = None) -> None:
        self.node_modules = node_modules

    def vendor_dir(self) -> Path:
        return self.node_modules if self.node_modules is not None else node_modules_dir()

    async def index(self, request: web.Request) -> web.StreamResponse:
        node_modules = self.vendor_dir()
        if any(not (node_modules / rel).is_file() for rel in VENDOR_FILES.values()):
            return web.Response(status=503, text=missing_xterm_page(node_modules), content_type="text/html")
        return file_response(WEB_DIR / "index.html")

    async def static_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = WEB_DIR / name
        if not STATIC_NAME.match(name) or path.suffix not in CONTENT_TYPES or not path.is_file():
            raise web.HTTPNotFound(text=f"No such file: /static/{name}")
        return file_response(path)

    async def vendor_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        rel = VENDOR_FILES.get(name)
        if rel is None:
            raise web.HTTPNotFound(text=f"No such file: /vendor/{name}")
        node_modules = self.vendor_dir()
        path = node_modules / rel
        if not path.is_file():
            raise web.HTTPNotFound(text=npm_ci_hint(node_modules))
        return file_response(path)


def add_routes(app: web.Application, node_modules: Path | None = None) -> None:
    """``node_modules`` defaults to the repository's (see ``node_modules_dir``)."""
    assets = WebAssets(node_modules)
    app.router.add_get("/", assets.index)
    app.router.add_get("/static/{name}", assets.static_file)
    app.router.add_get("/vendor/{name}", assets.vendor_file)
