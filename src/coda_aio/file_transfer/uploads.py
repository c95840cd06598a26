"""Saving one uploaded file into ``~/uploads``, streamed to disk off the event loop.

The bytes go to a temp file in the uploads folder (0600 from its first byte, through
``aiofiles``, whose thread pool keeps disk writes off the event loop), fsynced, then published
under a free name in one atomic step. A refused, cut or failed upload leaves no file behind;
an existing file is never overwritten.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import AsyncIterable

import aiofiles
import aiofiles.os
import aiofiles.tempfile

from coda_aio.files import discard, sync_folder
from coda_aio.file_transfer.names import candidates

# Past this many taken names something else is wrong (a full folder of one name): give up.
MAX_NAME_TRIES = 10_000
# What an upload is written as until it is published (the name of save_upload's temp file).
PART_PREFIX, PART_SUFFIX = ".upload-", ".part"


def sweep_leftovers(folder: Path) -> int:
    """Removes the temp files of uploads cut short by a crash (a SIGKILL skips every cleanup);
    run at startup, before any upload can be under way. Returns how many there were."""
    try:
        leftovers = [path for path in folder.glob(f"{PART_PREFIX}*{PART_SUFFIX}") if path.is_file()]
    except OSError:
        return 0
    for path in leftovers:
        discard(path)
    return len(leftovers)


class UploadTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the upload is larger than {limit // (1024 * 1024)} MiB")
        self.limit = limit


async def save_upload(folder: Path, name: str, chunks: AsyncIterable[bytes], max_bytes: int) -> tuple[Path, int]:
    """Writes ``chunks`` to a new file in ``folder`` named ``name`` (or ``name-1``...), at most
    ``max_bytes`` (UploadTooLarge beyond, nothing kept); returns its path and size."""
    await aiofiles.os.makedirs(folder, mode=0o700, exist_ok=True)
    # mkstemp underneath: created 0600, with a name no one else can have chosen.
    async with aiofiles.tempfile.NamedTemporaryFile(dir=folder, prefix=PART_PREFIX, suffix=PART_SUFFIX, delete=False) as f:
        tmp = Path(f.name)
        try:
            size = 0
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise UploadTooLarge(max_bytes)
                await f.write(chunk)
            await f.flush()
            await asyncio.to_thread(os.fsync, f.fileno())
        except BaseException:
            # Synchronous on purpose: it must happen even when the handler is being cancelled.
            discard(tmp)
            raise
    try:
        path = await _publish(tmp, folder, name)
    finally:
        discard(tmp)
    await asyncio.to_thread(sync_folder, folder)
    return path, size


async def _publish(tmp: Path, folder: Path, name: str) -> Path:
    """The temp file under the first free candidate name, atomically and never over another file.

    A hard link is the atomic no-clobber rename: it fails if the name was taken, even by a file
    created a moment ago. Where links are not supported, os.replace after a check is the fallback.
    """
    for _, candidate in zip(range(MAX_NAME_TRIES), candidates(name)):
        target = folder / candidate
        try:
            await aiofiles.os.link(tmp, target)
            return target
        except FileExistsError:
            continue
        except OSError:
            if await asyncio.to_thread(os.path.lexists, target):
                continue
            await aiofiles.os.replace(tmp, target)
            return target
    raise FileExistsError(f"no free name like {name!r} in {folder}")
