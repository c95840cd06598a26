"""Update one profile of ``~/.databrickscfg``, keeping every other byte of the file.

configparser can read the file but cannot write it back without dropping comments,
blank lines and key spelling, so the edit is line-based: only the lines of the keys we
own in our profile change. Which line is a section header, an option or a continuation
is decided by configparser itself (``_MappedParser`` notes the line of each element it
reads), so ``[ coda ]``, an indented ``[x]`` inside a value, or a lone ``\\r`` line break
mean to this module exactly what they mean to the Databricks SDK. A file the SDK could
not read is left untouched and the reason reported: rewriting a file we do not
understand risks the user's other profiles.

Other programs write this file too (the Databricks CLI, the SDK, dotfiles managers,
editors), and none of them lock it. So an update

- takes an advisory lock (``flock`` on ``<file>.lock``), which orders coda_aio processes;
- reads through one descriptor and starts again when the file changed during the read or
  was changed a moment ago by someone else (a writer that truncates and then writes
  leaves a short file for an instant: a file built from it would lose profiles);
- writes the result to a temp file next to the real file (through a symlink, at its
  target, which stays a symlink), re-reads and compares just before ``os.replace``, and
  starts again when anything changed;
- after the replace, looks at the file it replaced through the descriptor still open on
  it: what a writer that had it open wrote there in the last instant is not lost, but the
  profiles it changed are set again in the newest file (not the late file put back, which
  would lose whatever was written to the new one since).
"""

from __future__ import annotations

import configparser
import contextlib
import errno
import fcntl
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from coda_aio.files import discard, discard_stale_temps, sync_folder, write_temp

_BOM = "\ufeff"
# What open() in text mode (as the SDK reads the file) takes for a line break.
_LINES = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
# A file changed more recently than this by someone else may still be being written.
SETTLE_SECONDS = 0.1
# An empty file that someone else changed is a writer that truncated it (open "w") and has not
# written yet, or gave up; a busy machine can hold such a writer back far longer than
# SETTLE_SECONDS, and taking its empty file as the truth would lose every profile.
EMPTY_SETTLE_SECONDS = 2.0
# A writer whose open() found the file just before we replaced it truncates it just after.
LATE_OPEN_SECONDS = 0.02
LOCK_TIMEOUT_SECONDS = 10.0
MAX_ATTEMPTS = 50


class ConfigFileError(Exception):
    """The file cannot be read, parsed or written now; the message says what to fix, and where."""


# --- one parser: configparser, with the line of each element it reads -------------------


class _Spy:
    """Wraps a compiled pattern: every match configparser makes is reported with its line."""

    def __init__(self, pattern: re.Pattern, found: list, parser: "_MappedParser"):
        self._pattern = pattern
        self._found = found
        self._parser = parser

    def match(self, value: str):
        m = self._pattern.match(value)
        if m:
            self._found.append((self._parser.line, m))
        return m


class _MappedParser(configparser.ConfigParser):
    """configparser as the SDK uses it (strict), noting where each header and option starts.

    configparser tries its section pattern and its option pattern only on lines that are
    not comments, blanks or continuations, and in file order; spying on those two
    patterns gives its own classification of every line, with no second parser to
    disagree with it.
    """

    def __init__(self) -> None:
        super().__init__(interpolation=None, strict=True)
        self.line = -1
        self._headers: list[tuple[int, re.Match]] = []
        self._options: list[tuple[int, re.Match]] = []
        self.SECTCRE = _Spy(type(self).SECTCRE, self._headers, self)
        self._optcre = _Spy(self._optcre, self._options, self)

    def read_lines(self, lines: list[str], source: str) -> None:
        def numbered() -> Iterator[str]:
            for self.line, text in enumerate(lines):
                yield text

        self.read_file(numbered(), source)

    def elements(self) -> list[tuple[int, str, str | None]]:
        """(line, section, option key or None for the header), in file order."""
        marks = [(i, "h", m.group("header")) for i, m in self._headers]
        marks += [(i, "o", m.group("option")) for i, m in self._options]
        out, section = [], None
        for i, kind, name in sorted(marks):
            if kind == "h":
                section = name
                out.append((i, name, None))
            else:
                out.append((i, section, name))
        return out


def _split_lines(text: str) -> list[str]:
    return _LINES.findall(text)


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigFileError(f"{path} is not UTF-8 text (byte {e.start}); fix or move it and paste the token again") from None


def _parse(path: Path, text: str) -> _MappedParser:
    parser = _MappedParser()
    try:
        parser.read_lines(_split_lines(text.removeprefix(_BOM)), str(path))
    except configparser.Error as e:
        first_line = str(e).splitlines()[0]
        raise ConfigFileError(f"{path} cannot be parsed ({first_line}); coda_aio left it untouched") from None
    return parser


def _own_keys(parser: configparser.ConfigParser, profile: str) -> dict[str, str] | None:
    if profile == configparser.DEFAULTSECT:
        return dict(parser.defaults()) or None
    if not parser.has_section(profile):
        return None
    # The section's own keys only: values inherited from [DEFAULT] are not ours.
    return dict(parser._sections[profile])  # noqa: SLF001 - no public API for own keys


def _everything(parser: configparser.ConfigParser) -> dict[str, dict[str, str]]:
    out = {configparser.DEFAULTSECT: dict(parser.defaults())}
    out.update({name: dict(parser._sections[name]) for name in parser.sections()})  # noqa: SLF001
    return out


def read_profile(path: Path, profile: str) -> dict[str, str] | None:
    """The keys of ``profile``, or None when the file or the profile does not exist."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigFileError(f"{path} cannot be read ({e.strerror}); coda_aio left it untouched") from None
    return _own_keys(_parse(path, _decode(path, raw)), profile)


# --- the edit -----------------------------------------------------------------------------


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def render_profile(text: str, profile: str, values: dict[str, str]) -> str:
    """``text`` with ``values`` set in ``profile``; every other line kept as it was.

    ``text`` must parse (``ConfigFileError`` otherwise).
    """
    bom = _BOM if text.startswith(_BOM) else ""
    body = text.removeprefix(bom)
    newline = "\r\n" if "\r\n" in body else "\n"
    lines = _split_lines(body)
    elements = _parse(Path("<text>"), text).elements()
    ends = [i for i, _, _ in elements[1:]] + [len(lines)]  # each element runs to the next one

    blocks = [i for i, section, key in elements if section == profile and key is None]
    if not blocks:
        block = [f"[{profile}]{newline}"] + [f"{k} = {v}{newline}" for k, v in values.items()]
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += newline
        if lines and lines[-1].strip():
            block.insert(0, newline)
        return bom + "".join(lines + block)

    pending = {k.lower(): (k, v) for k, v in values.items()}
    replaced: dict[int, tuple[int, list[str]]] = {}  # first line of an option -> (its end, new lines)
    anchor = blocks[-1]  # missing keys go after the last option of our last block
    anchor_end = anchor + 1
    for (i, section, key), end in zip(elements, ends):
        if section != profile:
            continue
        if key is not None:
            # Continuation lines are the rest of the value; comments and blanks among them stay.
            kept = [ln for ln in lines[i + 1:end] if not _holds_value(ln)]
            name = key.rstrip().lower()  # configparser's optionxform
            if name in pending:
                _, value = pending.pop(name)
                ending = newline if lines[i].endswith(("\n", "\r")) else ""
                replaced[i] = (end, [f"{_indent(lines[i])}{key.rstrip()} = {value}{ending}"] + kept)
        if i >= anchor:
            anchor = i
            anchor_end = i + 1 + _value_length(lines, i + 1, end)

    out: list[str] = []
    i = 0
    while i < len(lines):
        if i in replaced:
            end, new = replaced[i]
            out.append(new[0])
            if pending and i == anchor:
                _append_keys(out, lines[anchor], pending, newline)
                pending = {}
            out.extend(new[1:])
            i = end
        else:
            out.append(lines[i])
            i += 1
        if pending and i >= anchor_end:
            _append_keys(out, lines[anchor], pending, newline)
            pending = {}
    if pending:
        _append_keys(out, lines[anchor], pending, newline)
    return bom + "".join(out)


def _holds_value(line: str) -> bool:
    return bool(line.strip()) and not line.lstrip().startswith(("#", ";"))


def _value_length(lines: list[str], start: int, end: int) -> int:
    """How many lines from ``start`` continue the element before it (to its last value line)."""
    return max((k - start + 1 for k in range(start, end) if _holds_value(lines[k])), default=0)


def _append_keys(out: list[str], anchor_line: str, pending: dict[str, tuple[str, str]], newline: str) -> None:
    if out and not out[-1].endswith(("\n", "\r")):
        out[-1] += newline
    # The anchor's indentation: a deeper one would make the next element part of our value.
    indent = _indent(anchor_line)
    out.extend(f"{indent}{name} = {value}{newline}" for name, value in pending.values())


def _checked_render(path: Path, text: str, profile: str, values: dict[str, str]) -> str:
    """``render_profile``, refusing any result the SDK would read differently from what we mean."""
    before = _parse(path, text)
    updated = render_profile(text, profile, values)
    after = _parse(path, updated)
    expected = _everything(before)
    expected.setdefault(profile, {}).update({k.lower(): v for k, v in values.items()})
    if _everything(after) != expected:
        raise ConfigFileError(f"{path}: updating profile [{profile}] would not round-trip; coda_aio left it untouched")
    return updated


# --- reading and replacing next to other writers -------------------------------------------


@dataclass
class _Snapshot:
    """What a file held when we read it, and how to tell whether it changed since."""

    fd: int | None  # open on the file we read (kept open to see late writes into it)
    data: bytes
    stat: os.stat_result | None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _signature(st: os.stat_result | None) -> tuple | None:
    return None if st is None else (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read_whole(fd: int) -> tuple[bytes, os.stat_result] | None:
    """All bytes of ``fd``, or None when the file changed while it was read (a short read)."""
    before = os.fstat(fd)
    chunks, offset = [], 0
    while True:
        chunk = os.pread(fd, 1 << 16, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    after = os.fstat(fd)
    data = b"".join(chunks)
    if _signature(before) != _signature(after) or len(data) != after.st_size:
        return None
    return data, after


def _snapshot(path: Path, target: Path) -> _Snapshot | None:
    """The file's bytes, read whole through one descriptor; None: it is changing, try again."""
    try:
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return _Snapshot(None, b"", None)
    except OSError as e:
        raise ConfigFileError(f"{path} cannot be read ({e.strerror}); coda_aio left it untouched") from None
    try:
        read = _read_whole(fd)
    except OSError as e:
        os.close(fd)
        msg = "is a folder, not a file" if e.errno == errno.EISDIR else f"cannot be read ({e.strerror})"
        raise ConfigFileError(f"{path} {msg}; coda_aio left it untouched") from None
    if read is None:
        os.close(fd)
        return None
    return _Snapshot(fd, *read)


def _recently_changed_by_someone_else(snap: _Snapshot, ours: tuple | None, watched: tuple | None = None) -> bool:
    if snap.stat is None or _signature(snap.stat) == ours:
        return False
    if snap.stat.st_mtime_ns / 1e9 > time.time() and _signature(snap.stat) == watched:
        # Dated in the future (an NFS server's clock ahead, times kept by a copy): its age says
        # nothing, but we saw it unchanged for a settle period, so its writer is done with it.
        return False
    return not _settled(snap.data, snap.stat)


def _settled(data: bytes, st: os.stat_result) -> bool:
    """Whoever wrote this has most likely finished."""
    age = time.time() - st.st_mtime_ns / 1e9
    return age >= (SETTLE_SECONDS if data.strip() else EMPTY_SETTLE_SECONDS)


def _unchanged(snap: _Snapshot, target: Path) -> bool:
    """The path still names the file we read, holding the bytes we read."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return snap.stat is None
    if snap.stat is None or _signature(st) != _signature(snap.stat):
        return False
    # Timestamps are coarse (a few ms): two writes in one tick look alike, so compare bytes too.
    return _same(_read_whole(snap.fd), snap)  # type: ignore[arg-type]


def _same(read: tuple[bytes, os.stat_result] | None, snap: _Snapshot) -> bool:
    return read is not None and read[0] == snap.data and _signature(read[1]) == _signature(snap.stat)


def _late_write(snap: _Snapshot) -> _Snapshot | None:
    """What a writer that still had the replaced file open put in it after we read it."""
    if snap.fd is None:
        return None
    replaced = time.monotonic()
    while True:
        read = _read_whole(snap.fd)
        if read is not None and not _same(read, snap):
            if _settled(*read):
                # An empty file that stayed empty is a writer that gave up: nothing to merge.
                return _Snapshot(None, read[0], read[1]) if read[0].strip() else None
        elif read is not None and time.monotonic() - replaced >= LATE_OPEN_SECONDS:
            return None  # nobody wrote into it
        if time.monotonic() - replaced > EMPTY_SETTLE_SECONDS + 1.0:
            return None
        time.sleep(min(LATE_OPEN_SECONDS, SETTLE_SECONDS / 4))


@contextlib.contextmanager
def _advisory_lock(lock_path: Path, timeout: float) -> Iterator[int]:
    """flock on a sidecar file: coda_aio processes take turns (other tools do not lock)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise ConfigFileError(f"{lock_path} cannot be opened ({e.strerror}); coda_aio will try again") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigFileError(
                        f"{lock_path} has been locked by another coda_aio process for over {timeout:g} s; "
                        "coda_aio will try again") from None
                time.sleep(0.01)
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _last_written(lock_fd: int) -> tuple | None:
    """The signature of the file as a coda_aio process last left it (kept in the lock file)."""
    raw = os.pread(lock_fd, 256, 0).decode(errors="replace").split()
    try:
        return tuple(int(x) for x in raw) if len(raw) == 4 else None
    except ValueError:
        return None


def _remember_written(lock_fd: int, target: Path) -> tuple | None:
    """Keeps the signature of the file as this write left it; returns it (None: not known)."""
    try:
        sig = _signature(os.stat(target))
    except OSError:
        return None
    os.ftruncate(lock_fd, 0)
    os.pwrite(lock_fd, " ".join(map(str, sig)).encode(), 0)
    return sig


def update_profile(path: Path, profile: str, values: dict[str, str], *,
                   lock_timeout: float = LOCK_TIMEOUT_SECONDS) -> None:
    """Set ``values`` in ``profile`` of the INI file at ``path``, atomically, mode 0600.

    A symlink at ``path`` is written through: its target is replaced, the link stays.
    Raises ConfigFileError, leaving the file as it was, when it cannot be read, parsed or
    written, or kept changing under us.
    """
    for key, value in values.items():
        if not _writable(value):
            raise ValueError(f"refusing to write an empty or multi-line value for {key!r}")
    target = Path(os.path.realpath(path))
    with _advisory_lock(path.with_name(path.name + ".lock"), lock_timeout) as lock_fd:
        # A copy of the file with a token in it, in the user's home, from an update killed
        # between writing its temp file and the replace.
        discard_stale_temps(target.parent, target.name)
        _update_locked(path, target, profile, values, lock_fd)


def _update_locked(path: Path, target: Path, profile: str, values: dict[str, str], lock_fd: int) -> None:
    ours = _last_written(lock_fd)
    # What late writers put in files we had replaced, to set in the newest file with our values:
    # the newest is theirs or someone's built on ours, and replacing it with the late file's
    # content would lose whatever was written there since.
    late_profiles: dict[str, dict[str, str]] = {}
    written = False
    watched: tuple | None = None  # a file dated in the future, as we saw it a settle period ago
    for _ in range(MAX_ATTEMPTS):
        snap = _snapshot(path, target)
        if snap is None or _recently_changed_by_someone_else(snap, ours, watched):
            if snap:
                watched = _signature(snap.stat)
                snap.close()
            time.sleep(SETTLE_SECONDS)
            continue
        try:
            try:
                text = _decode(path, snap.data)
                for other, keys in late_profiles.items():
                    text = _checked_render(path, text, other, keys)
                updated = _checked_render(path, text, profile, values).encode()
            except ConfigFileError:
                if written:
                    return  # the late writes cannot be merged into what is there now; our update stands
                raise
            try:
                tmp = write_temp(target.parent, target.name, updated, 0o600)
            except OSError as e:
                raise ConfigFileError(f"{path} cannot be written ({e.strerror}); coda_aio will try again") from None
            try:
                if not _unchanged(snap, target):
                    continue  # someone wrote since: their file is now the newest word
                os.replace(tmp, target)
            except OSError as e:
                raise ConfigFileError(f"{path} cannot be replaced ({e.strerror}); coda_aio will try again") from None
            finally:
                discard(tmp)
            sync_folder(target.parent)
            written = True
            ours = _remember_written(lock_fd, target) or ours
            late = _late_write(snap)
            changes = {} if late is None else _changed_profiles(snap.data, late.data, profile, values)
            if not changes:
                return
            for other, keys in changes.items():
                late_profiles.setdefault(other, {}).update(keys)
        finally:
            snap.close()
    if written:
        return  # our update is in; a late writer kept writing and has its own file to show for it
    raise ConfigFileError(f"{path} kept changing while coda_aio updated it; coda_aio will try again")


def _changed_profiles(before: bytes, after: bytes, profile: str, values: dict[str, str]) -> dict[str, dict[str, str]]:
    """The keys ``after`` sets differently from ``before``, by profile; never the keys we set
    (a late writer built on what it read before our update: its values of ours are the old ones),
    nor values we could not write back (empty or on several lines). Unparseable: nothing."""
    late = Path("<late write>")
    try:
        old = _everything(_parse(late, _decode(late, before)))
        new = _everything(_parse(late, _decode(late, after)))
    except ConfigFileError:
        return {}
    ours = {k.lower() for k in values}
    changes: dict[str, dict[str, str]] = {}
    for name, keys in new.items():
        for key, value in keys.items():
            if old.get(name, {}).get(key) == value or (name == profile and key in ours):
                continue
            if _writable(value):
                changes.setdefault(name, {})[key] = value
    return changes


def _writable(value: str) -> bool:
    """A value one ``key = value`` line holds as it is."""
    return bool(value) and not any(c in value for c in "\r\n")
