"""Ways to read a PTY that a program floods, each passing the bytes on over a socket to another
process (as the server passes them to a browser), beside a loop that only reads, in the same
run (issue 22 §6: is there a faster way for the server to read its terminals?).

    .venv/bin/python bench/bench_pty_read.py [--rounds 7]

- "read only": a blocking read loop that drops the bytes (bench_vs_others.py's raw PTY).
- "read, send": the same loop, sending every 64 KiB to the other process.
- "loop, one read": asyncio add_reader, one read per wake-up, sending every 64 KiB.
- "loop, drained": as coda_aio's pty_bridge reads: on a wake-up, read again while reads come
  back full (the PTY hands out at most 4 KiB a read), up to 64 KiB.
- "thread": a thread blocked in read() hands the bytes to the event loop, which sends them.
Figures: MB/s of a 15 MB cat, and each way's share of "read only" in the same round.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_terminal import raw_pty_cat, read_pty  # noqa: E402

FILE_BYTES = 15 * 1000 * 1000
FRAME = 64 * 1024
FULL_READ = 2048  # as pty_bridge.BULK_READ


def start_cat(path: Path) -> tuple[int, subprocess.Popen]:
    master, slave = os.openpty()
    process = subprocess.Popen(["cat", str(path)], stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    return master, process


def start_sink() -> tuple[socket.socket, int]:
    """Another process that reads everything sent to it (the browser's place)."""
    mine, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        mine.close()
        while theirs.recv(1 << 20):
            pass
        os._exit(0)
    theirs.close()
    return mine, pid


def read_and_send(path: Path) -> float:
    sink, sink_pid = start_sink()
    master, cat = start_cat(path)
    start, total, frame = time.perf_counter(), 0, bytearray()
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: cat has exited and the PTY is drained
            break
        if not data:
            break
        total += len(data)
        frame += data
        if len(frame) >= FRAME:
            sink.sendall(frame)
            frame.clear()
    sink.sendall(frame)
    sink.shutdown(socket.SHUT_WR)
    os.waitpid(sink_pid, 0)
    elapsed = time.perf_counter() - start
    cat.wait()
    os.close(master)
    sink.close()
    return total / elapsed / 1e6


async def loop_reader(path: Path, drain: bool) -> float:
    loop = asyncio.get_running_loop()
    sink, sink_pid = start_sink()
    _, writer = await asyncio.open_connection(sock=sink)
    master, cat = start_cat(path)
    os.set_blocking(master, False)
    start, total, frame, done = time.perf_counter(), 0, bytearray(), loop.create_future()

    def on_readable() -> None:
        nonlocal total
        data = read_pty(master)
        if data is None:
            return
        if not data:
            loop.remove_reader(master)
            writer.write(bytes(frame))
            done.set_result(None)
            return
        frame.extend(data)
        total += len(data)
        last = len(data)
        while drain and last >= FULL_READ and len(frame) < FRAME:
            more = read_pty(master)
            if not more:  # nothing more now, or the end, which the next wake-up sees
                break
            frame.extend(more)
            total += len(more)
            last = len(more)
        if len(frame) >= FRAME or last < FULL_READ:
            writer.write(bytes(frame))
            frame.clear()

    loop.add_reader(master, on_readable)
    return await finish(done, writer, sink_pid, start, total_of=lambda: total, cat=cat, master=master)


async def thread_reader(path: Path) -> float:
    loop = asyncio.get_running_loop()
    sink, sink_pid = start_sink()
    _, writer = await asyncio.open_connection(sock=sink)
    master, cat = start_cat(path)
    lock = threading.Lock()
    handed, scheduled, ended, total = bytearray(), False, False, 0
    start, done = time.perf_counter(), loop.create_future()

    def take() -> None:
        nonlocal scheduled
        with lock:
            data, scheduled, end = bytes(handed), False, ended
            handed.clear()
        if data:
            writer.write(data)
        if end and not done.done():
            done.set_result(None)

    def read() -> None:
        nonlocal scheduled, ended, total
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b""
            with lock:
                handed.extend(data)
                total += len(data)
                ended = not data
                if not scheduled:
                    scheduled = True
                    loop.call_soon_threadsafe(take)
            if not data:
                return

    reader = threading.Thread(target=read)
    reader.start()
    rate = await finish(done, writer, sink_pid, start, total_of=lambda: total, cat=cat, master=None)
    reader.join()
    os.close(master)
    return rate


async def finish(done, writer, sink_pid: int, start: float, *, total_of, cat, master) -> float:
    await done
    writer.write_eof()
    await writer.drain()
    await asyncio.get_running_loop().run_in_executor(None, os.waitpid, sink_pid, 0)
    elapsed = time.perf_counter() - start
    cat.wait()
    if master is not None:
        os.close(master)
    writer.close()
    return total_of() / elapsed / 1e6


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-pty-read-") as tmp:
        data = Path(tmp) / "15mb.txt"
        data.write_bytes(base64.encodebytes(os.urandom(FILE_BYTES * 3 // 4))[:FILE_BYTES])
        ways = {
            "read only": lambda: raw(data),
            "read, send": lambda: asyncio.to_thread(read_and_send, data),
            "loop, one read": lambda: loop_reader(data, drain=False),
            "loop, drained": lambda: loop_reader(data, drain=True),
            "thread": lambda: thread_reader(data),
        }
        rates: dict[str, list[float]] = {name: [] for name in ways}
        cpu = dict.fromkeys(ways, 0.0)  # this process's CPU time (every thread; not cat's, not the sink's)
        for _ in range(rounds):
            for name, way in ways.items():
                before = time.process_time()
                rates[name].append(await way())
                cpu[name] += time.process_time() - before
    megabytes = rounds * FILE_BYTES / 1e6
    print(f"\ncat of {FILE_BYTES / 1e6:.0f} MB, {rounds} interleaved rounds: MB/s median, share of 'read only'"
          " (median of rounds), the reader's CPU per MB, [each round's MB/s]")
    for name, values in rates.items():
        share = statistics.median(v / r for v, r in zip(values, rates["read only"]))
        each = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {name:15} {statistics.median(values):6.1f}  {share:4.0%}  {cpu[name] * 1000 / megabytes:5.1f} ms/MB   [{each}]")


async def raw(path: Path) -> float:
    elapsed, total = raw_pty_cat(path)
    return total / elapsed / 1e6


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    asyncio.run(main(parser.parse_args().rounds))
