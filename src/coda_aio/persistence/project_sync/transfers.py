"""Moving objects: a fixed pool of workers, and a budget of bytes in flight.

However many parts a sync or a restore has (a hostile manifest may announce thousands), at
most ``WORKERS`` calls run at once, from that many tasks, and the parts they hold in memory
add up to at most ``BYTES_IN_FLIGHT``: a part is read from disk only once its bytes fit.

An object is a file on disk here (a bundle, a spooled copy of a working-tree file) and parts
in the workspace; each part is checked on the way down, the whole by its SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Awaitable, Callable, Iterable, TypeVar

from coda_aio.background import cancel_and_wait
from coda_aio.credentials.workspace import WorkspaceError
from coda_aio.persistence.project_sync.layout import Layout
from coda_aio.persistence.project_sync.manifest import PART_BYTES, ObjectRef
from coda_aio.persistence.project_sync.workspace_files import WorkspaceFiles

T = TypeVar("T")
WORKERS = 4
BYTES_IN_FLIGHT = 3 * PART_BYTES
HASH_CHUNK = 1024 * 1024


class CorruptObject(WorkspaceError):
    """An object whose bytes are not the ones its manifest names."""


class ByteBudget:
    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._changed = asyncio.Condition()

    async def take(self, amount: int) -> int:
        amount = min(max(amount, 1), self.limit)
        async with self._changed:
            await self._changed.wait_for(lambda: self.used + amount <= self.limit)
            self.used += amount
            self.peak = max(self.peak, self.used)
        return amount

    async def give(self, amount: int) -> None:
        async with self._changed:
            self.used -= amount
            self._changed.notify_all()


class Pool:
    def __init__(self, workers: int = WORKERS, bytes_in_flight: int = BYTES_IN_FLIGHT):
        self.workers = workers
        self.budget = ByteBudget(bytes_in_flight)

    async def run(self, jobs: Iterable[tuple[int, Callable[[], Awaitable[T]]]]) -> list[T]:
        """Each job is (bytes it will hold, what to call); results in order; the first error wins."""
        queue = iter(enumerate(jobs))
        results: dict[int, T] = {}

        async def worker() -> None:
            for index, (cost, call) in queue:
                taken = await self.budget.take(cost)
                try:
                    results[index] = await call()
                finally:
                    await self.budget.give(taken)

        tasks = [asyncio.create_task(worker()) for _ in range(self.workers)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            await cancel_and_wait(*tasks)
            raise
        return [results[i] for i in sorted(results)]


def file_digest(path: Path) -> tuple[str, str, int]:
    """SHA-256 and git blob id of a file, read in chunks."""
    size = path.stat().st_size
    sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            sha256.update(chunk)
            sha1.update(chunk)
    return sha256.hexdigest(), sha1.hexdigest(), size


async def upload(files: WorkspaceFiles, layout: Layout, pool: Pool, ref: ObjectRef, source: Path,
                 skip_parts: set[int] = frozenset()) -> None:
    """Send ``source`` as the parts of ``ref`` (a part already there is the same bytes: skipped)."""

    def job(k: int) -> Callable[[], Awaitable[None]]:
        async def send() -> None:
            data = await asyncio.to_thread(_read_part, source, k)
            await files.put(layout.absolute(ref.part_path(k)), data)
        return send

    await pool.run((ref.part_length(k), job(k)) for k in range(ref.parts) if k not in skip_parts)


async def download(files: WorkspaceFiles, layout: Layout, pool: Pool, ref: ObjectRef, target: Path,
                   mode: int = 0o600) -> None:
    """Fetch the parts of ``ref`` into ``target`` and check them; CorruptObject when they are wrong.
    Bytes go straight from the socket into the file: a download holds one chunk, whatever
    its size, so only the number of calls at once is bounded (a one-part object is fetched
    by its caller's worker, several parts by the pool)."""
    fd = await asyncio.to_thread(os.open, target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        def job(k: int) -> Callable[[], Awaitable[None]]:
            expected, offset = ref.part_length(k), ref.part_offset(k)

            async def fetch() -> None:
                written = 0

                def sink(chunk: bytes) -> None:
                    nonlocal written
                    if written + len(chunk) > expected:
                        raise CorruptObject(f"{ref.part_path(k)} is longer than its manifest says.")
                    os.pwrite(fd, chunk, offset + written)
                    written += len(chunk)

                await files.get(layout.absolute(ref.part_path(k)), sink, expected)
                if written != expected:
                    raise CorruptObject(f"{ref.part_path(k)} is {written} bytes, not the {expected} its manifest says.")
            return fetch

        if ref.parts == 1:
            await job(0)()
        else:
            await pool.run((0, job(k)) for k in range(ref.parts))
    finally:
        await asyncio.to_thread(os.close, fd)
    if ref.sha256 is not None:
        sha256, _, _ = await asyncio.to_thread(file_digest, target)
        if sha256 != ref.sha256:
            raise CorruptObject(f"{ref.path} does not hold the bytes its manifest names (SHA-256 differs).")


def _read_part(source: Path, k: int) -> bytes:
    with source.open("rb") as f:
        f.seek(k * PART_BYTES)
        return f.read(PART_BYTES)
