"""The ``coda-sync`` command, on every terminal's PATH while project sync is on.

    coda-sync status            each project's sync state, and any warning
    coda-sync forget NAME       stop syncing NAME and delete its backup from the workspace
    coda-sync resume NAME       sync NAME again

It asks the running app, which does the work between two syncs (never in the middle of one
of that project), through files in ``~/.coda/project-sync/requests/``: the command writes
``<id>.json``, the app renames it when it takes it and answers in ``<id>.answer``. A request
nobody took within ``TAKE_TIMEOUT`` is withdrawn, so a forget is never done later by surprise.
``forget`` asks the person to type the project's name first (``--yes`` skips that).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path

from coda_aio.config import Settings
from coda_aio.files import write_atomic
from coda_aio.terminal_commands import install_command

COMMAND = "coda-sync"
TAKE_TIMEOUT = 20.0
ANSWER_TIMEOUT = 600.0
USAGE = f"""usage: {COMMAND} status
       {COMMAND} forget NAME [--yes]   stop syncing ~/projects/NAME and delete its backup in the workspace
       {COMMAND} resume NAME           sync NAME again after a forget"""


def requests_dir(settings: Settings) -> Path:
    return settings.state_dir / "project-sync" / "requests"


def install(settings: Settings) -> Path:
    folder = requests_dir(settings)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return install_command(settings, COMMAND, "see each project's sync, or stop syncing one and delete its backup.",
                           "coda_aio.persistence.project_sync.command", folder)


def main(argv: list[str], folder: Path, *, stdin=None, out=None) -> int:
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    args = [a for a in argv if a != "--yes"]
    if not args or args[0] not in ("status", "forget", "resume") or (args[0] != "status") != (len(args) == 2):
        print(USAGE, file=out)
        return 2
    action, name = args[0], args[1] if len(args) == 2 else ""
    if action == "forget" and "--yes" not in argv:
        print(f"This stops syncing {name} and deletes its backup from the workspace (what no other backup needs).\n"
              f"~/projects/{name} itself is left as it is. Type the project's name to go on:", file=out, flush=True)
        line = stdin.readline() if stdin is not None else ""
        if line.strip() != name:
            print("Nothing done.", file=out)
            return 1
    answer = ask(folder, {"action": action, "name": name})
    if answer is None:
        print("coda_aio's project sync did not take the request (is project sync on, and coda_aio running?). "
              "Nothing done.", file=out)
        return 3
    if not answer.get("ok"):
        print(f"{COMMAND} {action}: {answer.get('message')}", file=out)
        return 1
    if action == "status":
        print(describe(answer), file=out)
    else:
        print(answer.get("message"), file=out)
    return 0


def ask(folder: Path, request: dict, take_timeout: float = TAKE_TIMEOUT,
        answer_timeout: float = ANSWER_TIMEOUT) -> dict | None:
    """Leave ``request`` for the app and wait for its answer; None when nobody took it."""
    request_id = secrets.token_hex(8)
    asked = folder / f"{request_id}.json"
    answered = folder / f"{request_id}.answer"
    write_atomic(asked, json.dumps(request).encode(), 0o600)
    deadline = time.monotonic() + take_timeout
    while asked.exists():
        if time.monotonic() > deadline:
            try:
                asked.unlink()  # withdrawn: it must not run later by surprise
                return None
            except FileNotFoundError:
                break  # taken at this very moment
        time.sleep(0.1)
    deadline = time.monotonic() + answer_timeout
    while not answered.exists():
        if time.monotonic() > deadline:
            return {"ok": False, "message": "no answer yet; the app goes on with it and its page shows the outcome"}
        time.sleep(0.2)
    try:
        return json.loads(answered.read_text())
    finally:
        answered.unlink(missing_ok=True)


def describe(details: dict) -> str:
    lines = [f"project sync: {details.get('state')}" + (f" ({details['error']})" if details.get("error") else "")]
    if details.get("backup_folder"):
        lines.append(f"backups in {details['backup_folder']}")
    for p in details.get("projects") or []:
        line = f"  {p['name']}: {p['state']}"
        if p.get("last_sync_seconds_ago") is not None:
            line += f", last {p['last_sync_seconds_ago']:.0f} s ago"
        if p.get("error"):
            line += f" ({p['error']})"
        if p.get("skipped"):
            line += f", {len(p['skipped'])} file(s) not synced"
        lines.append(line)
    for name in details.get("forgotten") or []:
        lines.append(f"  {name}: not synced (forgotten; `{COMMAND} resume {name}` syncs it again)")
    for w in details.get("warnings") or []:
        lines.append(f"warning: {w.get('message')}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:], Path(os.environ.get("HOME", "~")) / ".coda" / "project-sync" / "requests"))
