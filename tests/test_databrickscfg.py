"""The profile editor keeps every byte it does not own, and never writes what it cannot parse."""

from __future__ import annotations

import configparser
import contextlib
import http.server
import threading
import os
import signal
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coda_aio.credentials.databrickscfg import ConfigFileError, read_profile, render_profile, update_profile

NEW = {"host": "https://ws.example.com", "token": "dapi-new"}

USER_FILE = """\
; my settings, do not lose
[DEFAULT]
host = https://default.example.com
token = dapi-default

# notebook profile
[notebooks]
host = https://nb.example.com
token = dapi-notebooks
cluster_id = 0123

[coda]
host = https://old.example.com
token = dapi-old
extra = keep me
  continued line

[ci]
token: dapi-ci
"""


def lines_other_than(text: str, section: str) -> list[str]:
    out, current = [], None
    for line in text.splitlines():
        if line.startswith("["):
            current = line.strip("[] ")
        if current != section:
            out.append(line)
    return out


def test_updates_only_our_profile_byte_for_byte(home: Path) -> None:
    cfg = home / ".databrickscfg"
    cfg.write_text(USER_FILE)
    update_profile(cfg, "coda", NEW)
    text = cfg.read_text()
    assert lines_other_than(text, "coda") == lines_other_than(USER_FILE, "coda")
    assert "extra = keep me\n  continued line\n" in text
    assert read_profile(cfg, "coda") == {"host": NEW["host"], "token": NEW["token"], "extra": "keep me\ncontinued line"}
    assert read_profile(cfg, "notebooks")["token"] == "dapi-notebooks"
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600


def test_creates_file_and_profile(home: Path) -> None:
    cfg = home / ".databrickscfg"
    update_profile(cfg, "coda", NEW)
    assert cfg.read_text() == "[coda]\nhost = https://ws.example.com\ntoken = dapi-new\n"
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600


def test_appends_profile_after_file_without_trailing_newline(home: Path) -> None:
    cfg = home / ".databrickscfg"
    cfg.write_text("[ci]\ntoken = dapi-ci")
    update_profile(cfg, "coda", NEW)
    text = cfg.read_text()
    assert text.startswith("[ci]\ntoken = dapi-ci\n\n[coda]\n")
    assert read_profile(cfg, "ci") == {"token": "dapi-ci"}


def test_keeps_crlf_and_bom(home: Path) -> None:
    cfg = home / ".databrickscfg"
    original = "\ufeff[ci]\r\ntoken = dapi-ci\r\n\r\n[coda]\r\ntoken = dapi-old\r\n"
    cfg.write_bytes(original.encode())
    update_profile(cfg, "coda", NEW)
    raw = cfg.read_bytes()
    assert raw.startswith("\ufeff[ci]\r\ntoken = dapi-ci\r\n\r\n[coda]\r\n".encode())
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert read_profile(cfg, "coda") == {"token": "dapi-new", "host": NEW["host"]}


def test_default_profile_in_app_mode(home: Path) -> None:
    cfg = home / ".databrickscfg"
    cfg.write_text("[DEFAULT]\nhost = https://old\n\n[ci]\ntoken = dapi-ci\n")
    update_profile(cfg, "DEFAULT", NEW)
    assert read_profile(cfg, "DEFAULT") == NEW
    assert cfg.read_text().endswith("[ci]\ntoken = dapi-ci\n")


@pytest.mark.parametrize(
    "content",
    [
        "[coda]\ntoken = a\ntoken = b\n",  # duplicate key: the SDK's parser refuses it
        "[coda]\n[coda]\n",  # duplicate section
        "token = no section\n",
        b"[coda]\ntoken = \xff\xfe\n",  # not UTF-8
    ],
)
def test_unparseable_file_is_left_untouched_and_reported(home: Path, content) -> None:
    cfg = home / ".databrickscfg"
    raw = content if isinstance(content, bytes) else content.encode()
    cfg.write_bytes(raw)
    with pytest.raises(ConfigFileError) as e:
        update_profile(cfg, "coda", NEW)
    assert str(cfg) in str(e.value)
    assert cfg.read_bytes() == raw
    assert not [p for p in home.iterdir() if p.name.endswith(".tmp")]


def test_unreadable_path_is_reported(home: Path) -> None:
    cfg = home / ".databrickscfg"
    cfg.mkdir()  # root reads any file, but not a directory as one
    with pytest.raises(ConfigFileError):
        update_profile(cfg, "coda", NEW)
    assert cfg.is_dir()


def test_multiline_values_refused(home: Path) -> None:
    with pytest.raises(ValueError):
        update_profile(home / ".databrickscfg", "coda", {"token": "a\n[evil]"})
    assert not (home / ".databrickscfg").exists()


def test_sdk_reads_what_we_write(home: Path) -> None:
    """databricks-sdk, in its own process, resolves host and token from our profile."""
    # The SDK probes the host at start-up; a loopback server that knows nothing answers 404,
    # which the SDK takes as "no metadata" (a closed port would be retried for minutes).
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        cfg = home / ".databrickscfg"
        cfg.write_text(USER_FILE)
        update_profile(cfg, "coda", {"host": host, "token": "dapi-new"})
        script = (
            "from databricks.sdk.core import Config\n"
            "c = Config(profile='coda')\n"
            "print(c.host, c.token == 'dapi-new', c.auth_type)\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATABRICKS_")} | {"HOME": str(home)}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [host, "True", "pat"]


# Lines a user might have: profiles, comments, blanks, odd spacing, CRLF.
line = st.one_of(
    st.sampled_from(["", "# comment", "; other comment", "   ", "[ci]", "[coda]", "[DEFAULT]", "[x y]"]),
    st.from_regex(r"[a-z_]{1,8} ?[=:] ?[A-Za-z0-9:/._-]{0,12}", fullmatch=True),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(line, max_size=14), crlf=st.booleans(), bom=st.booleans(), trailing=st.booleans())
def test_fuzzed_files_round_trip_or_stay_untouched(home: Path, lines, crlf, bom, trailing) -> None:
    cfg = home / ".databrickscfg"
    nl = "\r\n" if crlf else "\n"
    text = ("\ufeff" if bom else "") + nl.join(lines) + (nl if trailing and lines else "")
    cfg.write_bytes(text.encode())
    os.utime(cfg, (0, 0))  # written long ago: no other writer is at work on it
    try:
        before = configparser.ConfigParser(interpolation=None)
        before.read_string(text.removeprefix("\ufeff"))
    except configparser.Error:
        with pytest.raises(ConfigFileError):
            update_profile(cfg, "coda", NEW)
        assert cfg.read_bytes() == text.encode()
        return
    update_profile(cfg, "coda", NEW)
    after = configparser.ConfigParser(interpolation=None)
    after.read_string(cfg.read_text(encoding="utf-8").removeprefix("\ufeff"))
    assert after["coda"]["host"] == NEW["host"] and after["coda"]["token"] == NEW["token"]
    for section in before.sections():
        if section != "coda":
            assert dict(after[section]) == dict(before[section])
    assert dict(after.defaults()) == dict(before.defaults())
    # Only lines of [coda] changed (a blank line may be added before a new [coda]).
    rendered = render_profile(text, "coda", NEW)
    kept = [ln for ln in lines_other_than(rendered.removeprefix("\ufeff"), "coda") if ln.strip()]
    assert kept == [ln for ln in lines_other_than(text.removeprefix("\ufeff"), "coda") if ln.strip()]


# --- issue 14: one parser, symlinks, and other writers ------------------------------------


@pytest.mark.parametrize(
    "original",
    [
        "[ coda ]\ntoken = spaced\n",  # configparser: a section named " coda ", not ours
        "[ci]\nnote = first line\n  [coda]\n  token = part of the note\n",  # an indented value line
    ],
)
def test_what_is_a_section_is_decided_by_configparser(home: Path, original: str) -> None:
    cfg = home / ".databrickscfg"
    cfg.write_text(original)
    before = configparser.ConfigParser(interpolation=None)
    before.read(cfg)
    update_profile(cfg, "coda", NEW)
    text = cfg.read_text()
    assert text.startswith(original)  # every byte of the file is kept; [coda] is added after
    after = configparser.ConfigParser(interpolation=None)
    after.read(cfg)
    assert dict(after["coda"]) == NEW
    for section in before.sections():
        assert dict(after[section]) == dict(before[section])


def test_a_lone_carriage_return_is_a_line_break_as_the_sdk_reads_it(home: Path) -> None:
    cfg = home / ".databrickscfg"
    cfg.write_bytes(b"[ci]\rtoken = dapi-ci\r[coda]\rtoken = old\r")
    update_profile(cfg, "coda", NEW)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(cfg)  # as the SDK reads it: a text-mode file
    assert dict(parser["coda"]) == {"token": NEW["token"], "host": NEW["host"]}
    assert dict(parser["ci"]) == {"token": "dapi-ci"}


def test_a_symlinked_file_is_written_at_its_target(home: Path) -> None:
    dotfiles = home / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "databrickscfg"
    target.write_text(USER_FILE)
    link = home / ".databrickscfg"
    link.symlink_to(target)
    update_profile(link, "coda", NEW)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert read_profile(target, "coda")["token"] == NEW["token"]
    assert lines_other_than(target.read_text(), "coda") == lines_other_than(USER_FILE, "coda")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not [p for p in dotfiles.iterdir() if p.name.endswith(".tmp")]


def test_a_held_lock_is_waited_for_then_reported(home: Path) -> None:
    import fcntl

    cfg = home / ".databrickscfg"
    with open(home / ".databrickscfg.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ConfigFileError, match="locked"):
            update_profile(cfg, "coda", NEW, lock_timeout=0.2)
    assert not cfg.exists()
    update_profile(cfg, "coda", NEW)
    assert read_profile(cfg, "coda") == NEW


# Other programs that write the file without a lock, as the Databricks CLI and SDK do.
TRUNCATING_WRITER = """
import os, random, sys, time
path, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    with open(path) as f:
        text = f.read()
    data = (text + f"\\n[{prefix}{i}]\\ntoken = dapi-{prefix}{i}\\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # what open(path, "w") does
    os.write(fd, data[: len(data) // 2])
    time.sleep(0.001)  # a slow disk or a busy machine: the file is half-written for a moment
    os.write(fd, data[len(data) // 2:])
    os.close(fd)
    time.sleep(random.uniform(0, 0.004))
"""

CONFIGPARSER_WRITER = """
import configparser, random, sys, time
path, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    parser[f"{prefix}{i}"] = {"token": f"dapi-{prefix}{i}"}
    with open(path, "w") as f:
        parser.write(f)
    time.sleep(random.uniform(0, 0.004))
"""

CODA_WRITER = """
import sys
from pathlib import Path
from coda_aio.credentials.databrickscfg import update_profile
path, prefix, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(n):
    update_profile(path, f"{prefix}{i}", {"token": f"dapi-{prefix}{i}"})
"""


def _writer(script: str, cfg: Path, prefix: str, n: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, str(cfg), prefix, str(n)], stderr=subprocess.PIPE)


@pytest.mark.parametrize("script", [TRUNCATING_WRITER, CONFIGPARSER_WRITER], ids=["o_trunc", "configparser"])
def test_another_program_writing_at_the_same_time_loses_no_profile(home: Path, script: str) -> None:
    cfg = home / ".databrickscfg"
    cfg.write_text("[prod]\ntoken = dapi-prod\n\n[staging]\ntoken = dapi-staging\n")
    os.utime(cfg, (0, 0))
    n = 150
    writer = _writer(script, cfg, "p", n)
    updates = busy = 0
    while writer.poll() is None:
        try:
            update_profile(cfg, "coda", {"host": NEW["host"], "token": f"dapi-{updates}"})
            updates += 1
        except ConfigFileError as e:
            assert "kept changing" in str(e) or "cannot be parsed" in str(e), e
            busy += 1
    assert writer.returncode == 0, writer.stderr.read().decode()
    update_profile(cfg, "coda", NEW)
    profiles = configparser.ConfigParser(interpolation=None)
    profiles.read(cfg)
    lost = {"prod", "staging", *(f"p{i}" for i in range(n))} - set(profiles.sections())
    assert not lost, f"{len(lost)} profiles lost ({updates} updates, {busy} deferred)"
    assert dict(profiles["coda"]) == NEW
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600


STALLED_WRITER = """
import sys
path = sys.argv[1]
data = open(path).read() + "[p0]\\ntoken = dapi-p0\\n"
f = open(path, "w")  # the file is empty from here
print("truncated", flush=True)
sys.stdin.readline()  # held back, as a busy machine holds a process back
f.write(data)
f.close()
"""


def test_a_writer_held_back_between_truncating_and_writing_loses_nothing(home: Path) -> None:
    cfg = home / ".databrickscfg"
    cfg.write_text("[prod]\ntoken = dapi-prod\n")
    writer = subprocess.Popen([sys.executable, "-c", STALLED_WRITER, str(cfg)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert writer.stdout.readline() == b"truncated\n"
    # Held back long enough that the empty file's time says nobody is writing it any more.
    past = time.time() - 0.5
    os.utime(cfg, (past, past))
    with ThreadPoolExecutor(1) as pool:
        update = pool.submit(update_profile, cfg, "coda", NEW)
        with contextlib.suppress(TimeoutError):
            update.result(timeout=0.3)  # an update that took the empty file as the truth is done by now
        writer.communicate(b"go\n", timeout=10)
        update.result(timeout=10)
    profiles = configparser.ConfigParser(interpolation=None)
    profiles.read(cfg)
    assert profiles.sections() == ["prod", "p0", "coda"]
    assert dict(profiles["coda"]) == NEW


def test_a_late_write_into_the_replaced_file_is_merged_into_the_newest_one(home: Path, monkeypatch) -> None:
    # Another program's open(path, "w") found the file just before coda_aio replaced it: it writes
    # [p0] into the replaced file, then reads the new one and adds [p1] there. It saved both.
    cfg = home / ".databrickscfg"
    cfg.write_text("[prod]\ntoken = dapi-prod\n")
    os.utime(cfg, (0, 0))
    real_replace = os.replace

    def replace_while_another_program_writes(src, dst):
        if os.path.realpath(dst) != os.path.realpath(cfg):
            return real_replace(src, dst)
        monkeypatch.setattr(os, "replace", real_replace)  # once
        read_before = cfg.read_bytes()
        late = os.open(cfg, os.O_WRONLY | os.O_TRUNC)
        real_replace(src, dst)
        os.write(late, read_before + b"\n[p0]\ntoken = dapi-p0\n")
        os.close(late)
        cfg.write_bytes(cfg.read_bytes() + b"\n[p1]\ntoken = dapi-p1\n")

    monkeypatch.setattr(os, "replace", replace_while_another_program_writes)
    update_profile(cfg, "coda", NEW)
    profiles = configparser.ConfigParser(interpolation=None)
    profiles.read(cfg)
    assert sorted(profiles.sections()) == ["coda", "p0", "p1", "prod"]
    assert dict(profiles["coda"]) == NEW and profiles["p0"]["token"] == "dapi-p0"


# An update killed (SIGKILL: the OOM killer, a power cut) at one step: between writing its temp
# file and the replace, or just after the replace.
KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from coda_aio.credentials.databrickscfg import update_profile
path, step = Path(sys.argv[1]), sys.argv[2]
real_replace = os.replace

def replace(src, dst):
    if step == "after-replace":
        real_replace(src, dst)
    os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace
update_profile(path, "coda", {"token": "dapi-killed"})
"""


@pytest.mark.parametrize("step", ["before-replace", "after-replace"])
def test_an_update_killed_at_each_step_leaves_a_whole_file_and_no_copy_of_it(home: Path, step: str) -> None:
    cfg = home / ".databrickscfg"
    cfg.write_text(USER_FILE)
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(cfg), step], capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    expected = {"before-replace": "dapi-old", "after-replace": "dapi-killed"}[step]
    assert read_profile(cfg, "coda")["token"] == expected
    assert lines_other_than(cfg.read_text(), "coda") == lines_other_than(USER_FILE, "coda")
    left = [p for p in home.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == (1 if step == "before-replace" else 0)
    # Another update in flight right now has a temp file of its own (a name mkstemp could make),
    # and the user keeps an old copy under a name it could not: only the dead update's goes.
    in_flight = home / ".databrickscfg.inflight.tmp"
    in_flight.write_text("[coda]\ntoken = dapi-in-flight\n")
    users_copy = home / ".databrickscfg.my-copy.tmp"
    users_copy.write_text(USER_FILE)
    for old in [*left, users_copy]:  # over a minute ago
        os.utime(old, (time.time() - 120, time.time() - 120))
    update_profile(cfg, "coda", NEW)
    assert read_profile(cfg, "coda") == {**NEW, "extra": "keep me\ncontinued line"}
    assert sorted(p.name for p in home.iterdir() if p.name.endswith(".tmp")) == [in_flight.name, users_copy.name]


def test_many_concurrent_additions_lose_nothing(home: Path) -> None:
    cfg = home / ".databrickscfg"
    cfg.write_text(USER_FILE)
    writers = [_writer(CODA_WRITER, cfg, f"w{k}_", 50) for k in range(4)]
    for w in writers:
        assert w.wait(timeout=120) == 0, w.stderr.read().decode()
    profiles = configparser.ConfigParser(interpolation=None)
    profiles.read(cfg)
    expected = {f"w{k}_{i}" for k in range(4) for i in range(50)}
    assert expected <= set(profiles.sections()), f"{len(expected - set(profiles.sections()))} lost"
    assert cfg.read_text().startswith(USER_FILE)  # the user's lines, byte for byte


def test_a_file_dated_in_the_future_does_not_block_profile_writes(home: Path) -> None:
    # An NFS server's clock ahead, or a copy that kept the times: modified "in an hour".
    cfg = home / ".databrickscfg"
    cfg.write_text("[other]\nhost = https://other.example\n")
    future = time.time() + 3600
    os.utime(cfg, (future, future))
    update_profile(cfg, "coda", NEW)
    written = configparser.ConfigParser(interpolation=None)
    written.read_string(cfg.read_text())
    assert written["coda"]["token"] == NEW["token"] and written["other"]["host"] == "https://other.example"
