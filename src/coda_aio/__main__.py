"""``python -I -m coda_aio``: credentials out of reach first, then command line -> settings -> run."""

from __future__ import annotations

# First of all, before anything else is imported (see secrets_handoff): non-dumpable, and the
# credentials out of the environment. Only when run as the program: tests import main().
from coda_aio.access import secrets_handoff

STARTING_SECRETS = secrets_handoff.take_secrets() if __name__ == "__main__" else {}

import argparse  # noqa: E402
import asyncio  # noqa: E402
import errno  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from typing import Callable  # noqa: E402

from aiohttp import web  # noqa: E402

from coda_aio.connection_guard import ConnectionGuard, GuardedSite  # noqa: E402
from coda_aio.config import ConfigError, Settings, take_service_principal  # noqa: E402
from coda_aio.ports import port_problem  # noqa: E402
from coda_aio.terminal.pty_process import descendants  # noqa: E402
from coda_aio.access.web_access import WebAccess  # noqa: E402

DEMO_USER = "demo.user@example.com"
# How long an idle keep-alive connection stays open (aiohttp's default is 75 s).
KEEPALIVE_TIMEOUT = 15.0
SHUTDOWN_TIMEOUT = 5.0
# Where the hard limit is unlimited, the soft one is raised this far.
WANTED_FDS = 65536


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -I -m coda_aio",
        description=(
            "Coding agents in a browser terminal, wired to a Databricks workspace. "
            "Open the printed URL; on first use the terminal asks for a personal access token, "
            "which coda_aio exchanges for short-lived tokens it rotates by itself. "
            "Environment variables (DATABRICKS_HOST, CODA_*) are described in the README."
        ),
    )
    parser.add_argument("--host", help="address the web server binds (default 127.0.0.1; 0.0.0.0 in App mode; env CODA_BIND)")
    parser.add_argument("--port", type=int, help="web port (default 8000; env DATABRICKS_APP_PORT)")
    parser.add_argument("--proxy-port", type=int, help="port of the token-injecting proxy on 127.0.0.1 (default 4000; env CODA_PROXY_PORT)")
    parser.add_argument(
        "--demo-workspace",
        action="store_true",
        help="run an in-process stand-in for a Databricks workspace on loopback and print a token to paste: "
        "the whole flow with no real workspace",
    )
    return parser.parse_args(argv)


async def build_app(settings: Settings) -> web.Application:
    from coda_aio.server import create_app

    if not settings.demo_workspace:
        return create_app(settings)
    from coda_aio.testing.fake_workspace import FakeWorkspace

    fake = FakeWorkspace()
    fake.add_user(DEMO_USER)
    url = await fake.start("127.0.0.1", 0)
    app = create_app(settings.with_changes(host=url))

    async def stop_fake(_app: web.Application) -> None:
        await fake.stop()

    app.on_cleanup.append(stop_fake)
    bootstrap = fake.issue_pat(DEMO_USER, comment="demo bootstrap token")
    print(f"Demo workspace on {url} (user {DEMO_USER}).")
    print(f"Paste this bootstrap token when the terminal asks for one:\n\n    {bootstrap}\n", flush=True)
    return app


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Taken at import when run as the program; a caller of main() (tests) has them taken here.
    env = {**os.environ, **STARTING_SECRETS, **secrets_handoff.take_secrets()}
    if not sys.flags.safe_path:
        logging.getLogger("coda_aio").warning(
            "started without -I (or -P): modules in the working directory are imported before coda_aio's own; "
            "start it with `python -I -m coda_aio`")
    try:
        settings = Settings.from_env(
            env, host=args.host, port=args.port, proxy_port=args.proxy_port, demo_workspace=args.demo_workspace
        )
    except ConfigError as e:
        print(f"coda_aio: {e}", file=sys.stderr)
        return 2
    # From here on only `settings` holds the service principal's secret: no child inherits it.
    take_service_principal(os.environ)
    problem = port_problem(settings)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2

    def announce() -> None:
        # Once the web port is bound, after startup bound the proxy's.
        if settings.app_mode:
            print(f"coda_aio: serving on {settings.bind}:{settings.port} (proxy on {settings.proxy_url})", flush=True)
        else:
            # The one place the web key is shown: on stdout for the person who started coda_aio.
            url = WebAccess.for_settings(settings).start_url
            print(f"coda_aio: open {url} (proxy on {settings.proxy_url})", flush=True)

    raise_fd_limit()
    try:
        asyncio.run(serve(settings, announce))
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise
        # Taken between the check and the bind.
        print(f"coda_aio: {e.strerror}", file=sys.stderr)
        return 2
    return 0


async def serve(settings: Settings, announce: Callable[[], None]) -> None:
    """The app on the web port until SIGINT or SIGTERM, through a ConnectionGuard (which
    aiohttp's run_app has no place for); then the app's cleanup, terminals first."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(await build_app(settings), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT,
                           keepalive_timeout=KEEPALIVE_TIMEOUT)
    await runner.setup()
    try:
        await GuardedSite(runner, settings.bind, settings.port, ConnectionGuard("the web port")).start()
        announce()
        await stop.wait()
    finally:
        await runner.cleanup()
        # Every terminal and setup step has ended by now; what is still below this process is
        # what escaped them, marker and session both (env -i setsid -f ...): orphans come to
        # coda_aio, the subreaper, so nothing a terminal started outlives the server.
        end_descendants()


def end_descendants() -> None:
    left = descendants(os.getpid())
    if left:
        logging.getLogger("coda_aio").info("ending %d process(es) left below the server", len(left))
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def raise_fd_limit() -> None:
    """Soft limit of open descriptors up to the hard one: 1024 is a few hundred browser
    connections, terminals and proxy streams, and the guard's caps stay below the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, WANTED_FDS)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as e:
            logging.getLogger("coda_aio").warning("could not raise the open-file limit from %s: %s", soft, e)


if __name__ == "__main__":
    sys.exit(main())
