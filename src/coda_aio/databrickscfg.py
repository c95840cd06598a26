"""Update one profile of ``~/.databrickscfg``, keeping every other byte of the file.

configparser can read the file but cannot write it back without dropping comments,
blank lines and key spelling, so the edit is line-based: only the lines of the keys we
own in our profile change. Before editing, the file is parsed the way the Databricks
SDK parses it (configparser, strict); a file the SDK could not read is left untouched
and the reason is reported, because rewriting a file we do not understand risks the
user's other profiles.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from .files import write_atomic

_BOM = "\ufeff"
_SECTION = re.compile(r"^\s*\[(?P<name>[^\]]*)\]\s*$")
_OPTION = re.compile(r"^(?P<key>[^\s:=][^:=]*?)\s*[:=]")


class ConfigFileError(Exception):
    """The file cannot be read or parsed; the message says what to fix, and where."""


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigFileError(f"{path} is not UTF-8 text (byte {e.start}); fix or move it and paste the token again") from None


def _parse(path: Path, text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    try:
        parser.read_string(text.removeprefix(_BOM), source=str(path))
    except configparser.Error as e:
        first_line = str(e).splitlines()[0]
        raise ConfigFileError(f"{path} cannot be parsed ({first_line}); coda_aio left it untouched") from None
    return parser


def _read_text(path: Path) -> str | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigFileError(f"{path} cannot be read ({e.strerror}); coda_aio left it untouched") from None
    return _decode(path, raw)


def read_profile(path: Path, profile: str) -> dict[str, str] | None:
    """The keys of ``profile``, or None when the file or the profile does not exist."""
    text = _read_text(path)
    if text is None:
        return None
    parser = _parse(path, text)
    if profile == configparser.DEFAULTSECT:
        values = dict(parser.defaults())
        return values or None
    if not parser.has_section(profile):
        return None
    # Read the section's own keys only: values inherited from [DEFAULT] are not ours.
    return dict(parser._sections[profile])  # noqa: SLF001 - no public API for own keys


def render_profile(text: str, profile: str, values: dict[str, str]) -> str:
    """``text`` with ``values`` set in ``profile``; every other line kept as it was."""
    bom = _BOM if text.startswith(_BOM) else ""
    text = text.removeprefix(bom)
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)

    start = end = None  # [start, end) are the lines of our section, header excluded
    for i, line in enumerate(lines):
        match = _SECTION.match(line)
        if match:
            if start is not None and end is None:
                end = i
            if match.group("name").strip() == profile:
                start = i + 1
                end = None
    if start is None:
        block = [f"[{profile}]{newline}"] + [f"{k} = {v}{newline}" for k, v in values.items()]
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += newline
        if lines and lines[-1].strip():
            block.insert(0, newline)
        return bom + "".join(lines + block)
    if end is None:
        end = len(lines)

    pending = {k.lower(): (k, v) for k, v in values.items()}
    out = lines[:start]
    last_option = start  # where missing keys go: after the section's last option line
    i = start
    while i < end:
        line = lines[i]
        match = _OPTION.match(line)
        key = match.group("key").strip().lower() if match and not line[0].isspace() else None
        # Continuation lines (indented) belong to the option above them.
        j = i + 1
        while j < end and lines[j][:1] in (" ", "\t") and lines[j].strip():
            j += 1
        if key is not None and key in pending:
            name, value = pending.pop(key)
            ending = newline if line.endswith(("\n", "\r")) else ""
            out.append(f"{match.group('key').strip()} = {value}{ending}")
        else:
            out.extend(lines[i:j])
        if key is not None:
            last_option = len(out)
        i = j
    if pending:
        if last_option > 0 and not out[last_option - 1].endswith(("\n", "\r")):
            out[last_option - 1] += newline
        added = [f"{name} = {value}{newline}" for name, value in pending.values()]
        out[last_option:last_option] = added
    out.extend(lines[end:])
    return bom + "".join(out)


def update_profile(path: Path, profile: str, values: dict[str, str]) -> None:
    """Set ``values`` in ``profile`` of the INI file at ``path``, atomically, mode 0600.

    Raises ConfigFileError, leaving the file as it was, when it cannot be read or parsed.
    """
    for key, value in values.items():
        if not value or any(c in value for c in "\r\n"):
            raise ValueError(f"refusing to write an empty or multi-line value for {key!r}")
    text = _read_text(path) or ""
    _parse(path, text)
    updated = render_profile(text, profile, values)
    # Never write what the SDK would fail to read back, or read back differently.
    parsed = _parse(path, updated)
    section = parsed.defaults() if profile == configparser.DEFAULTSECT else parsed[profile]
    if any(section.get(k) != v for k, v in values.items()):
        raise ConfigFileError(f"{path}: updating profile [{profile}] would not round-trip; coda_aio left it untouched")
    write_atomic(path, updated.encode("utf-8"), mode=0o600)
