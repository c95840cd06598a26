"""File names for uploads: what a browser (or any client) says a file is called, made safe to
create inside ``~/uploads`` and unique there.

Names are cleaned rather than refused: a person who drops ``résumé (final).pdf`` gets that name,
and a client that sends ``../../.bashrc`` gets ``bashrc`` inside the uploads folder, never a
path outside it or a hidden file.
"""

from __future__ import annotations

import unicodedata
from typing import Iterator

FALLBACK_NAME = "upload"
# Linux allows 255 bytes per name; room is left for the "-12" that makes a name unique.
MAX_NAME_BYTES = 200
# Control characters (newlines, escapes) and invisible format characters (right-to-left
# overrides that make "gnp.sh" read as "hs.png"), and line/paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def safe_name(raw: str) -> str:
    """``raw`` as one plain, visible file name: no separators, no control characters, no
    leading dots (no hidden files, no ``..``), unicode kept (NFC), at most MAX_NAME_BYTES."""
    name = unicodedata.normalize("NFC", raw)
    name = "".join("_" if ch in "/\\" or unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in name)
    name = name.strip().lstrip(".").strip()
    name = _shorten(name)
    return name or FALLBACK_NAME


def _shorten(name: str) -> str:
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    stem, ext = split_extension(name)
    ext = ext if len(ext.encode()) <= 20 else ""
    budget = MAX_NAME_BYTES - len(ext.encode())
    stem = stem.encode()[:budget].decode(errors="ignore")
    return stem + ext


def split_extension(name: str) -> tuple[str, str]:
    """``photo.png`` -> (``photo``, ``.png``); ``logs.tar.gz`` -> (``logs``, ``.tar.gz``)."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return name, ""
    if stem.endswith(".tar"):
        return stem[: -len(".tar")], ".tar." + ext
    return stem, "." + ext


def candidates(name: str) -> Iterator[str]:
    """``name``, then ``name-1``, ``name-2``... with the extension kept at the end."""
    yield name
    stem, ext = split_extension(name)
    n = 1
    while True:
        yield f"{stem}-{n}{ext}"
        n += 1
