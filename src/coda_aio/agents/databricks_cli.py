"""Install the Databricks CLI (the Go binary) from its official release archive.

Releases of github.com/databricks/cli carry, per version, one zip per OS and architecture
(``databricks_cli_<version>_<os>_<arch>.zip``, the ``databricks`` binary at its root) and a
``databricks_cli_<version>_SHA256SUMS`` file (``<sha256>  <file name>`` lines). The archive
is streamed to a temp file beside the target while its digest is computed, checked against
that list, and only then is the binary extracted (off the event loop) and moved into place
with ``os.replace``: a failed download or a wrong checksum leaves nothing installed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import platform
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiofiles
import aiohttp

BINARY = "databricks"
CHUNK = 256 * 1024
# The checksum list is a few lines; anything bigger is not one.
MAX_SUMS_BYTES = 64 * 1024

_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_SYSTEMS = {"linux": "linux", "darwin": "darwin"}


class InstallError(Exception):
    """The CLI could not be installed; the message says why and what to check."""


@dataclass(frozen=True)
class Release:
    version: str
    base_url: str  # e.g. https://github.com/databricks/cli/releases/download

    def archive_name(self, system: str, arch: str) -> str:
        return f"databricks_cli_{self.version}_{system}_{arch}.zip"

    @property
    def sums_name(self) -> str:
        return f"databricks_cli_{self.version}_SHA256SUMS"

    def url(self, name: str) -> str:
        return f"{self.base_url.rstrip('/')}/v{self.version}/{name}"


def this_platform() -> tuple[str, str]:
    """(os, arch) as the release files name them; InstallError for a platform without a build."""
    system = _SYSTEMS.get(sys.platform)
    arch = _ARCHES.get(platform.machine().lower())
    if system is None or arch is None:
        raise InstallError(f"no Databricks CLI build for {sys.platform}/{platform.machine()}")
    return system, arch


async def install(release: Release, bin_dir: Path, *, timeout: float = 300.0,
                  platform_names: tuple[str, str] | None = None) -> Path:
    """Download, verify and install ``databricks`` into ``bin_dir``; returns its path."""
    system, arch = platform_names or this_platform()
    archive = release.archive_name(system, arch)
    bin_dir.mkdir(parents=True, exist_ok=True)
    client_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=30)
    async with aiohttp.ClientSession(timeout=client_timeout) as http:
        expected = parse_sums(await _fetch_text(http, release.url(release.sums_name)), archive)
        fd, tmp_name = tempfile.mkstemp(dir=bin_dir, prefix=".databricks-download.", suffix=".zip")
        os.close(fd)
        tmp_zip = Path(tmp_name)
        try:
            async with aiofiles.open(tmp_zip, "wb") as out:
                actual = await _download(http, release.url(archive), out)
            if actual != expected:
                raise InstallError(
                    f"checksum mismatch for {archive}: expected sha256 {expected}, got {actual}; "
                    "nothing was installed (check CODA_DATABRICKS_CLI_BASE_URL)"
                )
            return await asyncio.to_thread(_extract_binary, tmp_zip, bin_dir)
        finally:
            tmp_zip.unlink(missing_ok=True)


def parse_sums(text: str, name: str) -> str:
    """The sha256 that a SHA256SUMS listing gives for ``name``."""
    for line in text.splitlines():
        parts = line.split()
        # sha256sum writes "<hash>  <name>", or "<hash> *<name>" in binary mode.
        if len(parts) == 2 and parts[1].lstrip("*") == name:
            digest = parts[0].lower()
            if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
                return digest
    raise InstallError(f"the checksum list has no sha256 for {name}; nothing was installed")


async def _fetch_text(http: aiohttp.ClientSession, url: str) -> str:
    try:
        async with http.get(url) as response:
            _check_status(response, url)
            body = await response.content.read(MAX_SUMS_BYTES + 1)
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        raise InstallError(_download_failure(url, e)) from None
    if len(body) > MAX_SUMS_BYTES:
        raise InstallError(f"{url} is not a checksum list (too big)")
    return body.decode("utf-8", "replace")


async def _download(http: aiohttp.ClientSession, url: str, out) -> str:
    """Stream ``url`` into the open (aiofiles) file ``out``; returns the sha256 of what was written."""
    digest = hashlib.sha256()
    try:
        async with http.get(url) as response:
            _check_status(response, url)
            async for chunk in response.content.iter_chunked(CHUNK):
                digest.update(chunk)
                await out.write(chunk)
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        raise InstallError(_download_failure(url, e)) from None
    return digest.hexdigest()


def _download_failure(url: str, error: BaseException) -> str:
    """What went wrong, in words: the host, and whether it was not reached, too slow or cut off."""
    host = urlsplit(url).hostname or url
    if isinstance(error, aiohttp.ClientConnectorError):
        why = f"{host} could not be reached (no network, a firewall, or no DNS for it)"
    elif isinstance(error, asyncio.TimeoutError):
        why = f"{host} did not answer in time"
    else:
        why = f"the connection to {host} failed ({type(error).__name__})"
    return f"cannot download the Databricks CLI: {why}; nothing was installed"


def _check_status(response: aiohttp.ClientResponse, url: str) -> None:
    if response.status != 200:
        raise InstallError(f"cannot download {url}: HTTP {response.status} (check CODA_DATABRICKS_CLI_VERSION)")


def _extract_binary(archive: Path, bin_dir: Path) -> Path:
    """Blocking: copy the archive's ``databricks`` into ``bin_dir`` atomically, executable."""
    target = bin_dir / BINARY
    try:
        with zipfile.ZipFile(archive) as zf:
            member = next((i for i in zf.infolist() if i.filename in (BINARY, f"./{BINARY}")), None)
            if member is None:
                raise InstallError(f"the archive has no {BINARY} binary at its root; nothing was installed")
            fd, tmp_name = tempfile.mkstemp(dir=bin_dir, prefix=f".{BINARY}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out, zf.open(member) as source:
                    while block := source.read(CHUNK):
                        out.write(block)
                os.chmod(tmp_name, 0o755)
                os.replace(tmp_name, target)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
    except zipfile.BadZipFile as e:
        raise InstallError(f"the downloaded archive is not a valid zip ({e}); nothing was installed") from None
    return target
