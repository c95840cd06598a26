"""Files in and out of terminals (issue 12), against the real app on loopback.

In: ``POST /api/uploads?name=NAME`` saves into ``~/uploads``; in Chromium a pasted or dropped
file is uploaded and its path typed at the prompt (the bytes the shell receives are captured by
``cat`` on a raw terminal, as in test_browser_input). Out: ``coda-download FILE`` typed in a real
bash makes the browser download FILE once; a replayed scrollback downloads nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shlex
import stat
import struct
import zlib
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Page

from browser_util import (
    SENTINEL,
    captured_after_sentinel,
    open_terminal_page,
    PageProblems,
    run_in_terminal,
    start_capture,
    wait_for_line,
    wait_for_state,
    wait_replayed,
)
from conftest import WEB_KEY, eventually, serving, web_session
from terminal_client import open_terminal, run_command
from test_app_mode import AS_OTHER, AS_OWNER, app_fake, app_settings, wait_for_owner  # noqa: F401 (fixtures)
from coda_aio.file_transfer import download_spool
from coda_aio.file_transfer.command import DOWNLOAD_TTL_SECONDS
from coda_aio.routes.files import MAX_UPLOAD_BYTES

in_browser = pytest.mark.asyncio(loop_scope="module")

FOREIGN = {"Origin": "http://evil.example"}
OSC = re.compile(rb"\x1b\]7717;download;([0-9a-f]{32})\x07")


def png(width: int = 3, height: int = 2) -> bytes:
    """A real (tiny, grey) PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + bytes([128] * width) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def upload(http: aiohttp.ClientSession, url: str, name: str, data, **kwargs) -> aiohttp.ClientResponse:
    async with http.post(f"{url}/api/uploads", params={"name": name}, data=data, **kwargs) as r:
        await r.read()
        return r


# --- files in, over HTTP ------------------------------------------------------------------


async def test_an_upload_lands_in_uploads_private_and_a_taken_name_is_made_unique(make_settings, serve, http, home):
    url, _app = await serve(make_settings())
    image = png()
    async with http.post(f"{url}/api/uploads", params={"name": "shot.png"}, data=image) as r:
        assert r.status == 201, await r.text()
        body = await r.json()
    uploads = home / "uploads"
    assert body == {"path": str(uploads / "shot.png"), "name": "shot.png", "size": len(image)}
    assert (uploads / "shot.png").read_bytes() == image
    assert mode(uploads / "shot.png") == 0o600 and mode(uploads) == 0o700
    # The same name again, twice: the first file is kept as it was, the new ones get free names.
    for expected, data in (("shot-1.png", b"second"), ("shot-2.png", b"third")):
        async with http.post(f"{url}/api/uploads", params={"name": "shot.png"}, data=data) as r:
            assert r.status == 201 and (await r.json())["name"] == expected
        assert (uploads / expected).read_bytes() == data
    async with http.post(f"{url}/api/uploads", params={"name": "logs.tar.gz"}, data=b"1") as r:
        assert (await r.json())["name"] == "logs.tar.gz"
    async with http.post(f"{url}/api/uploads", params={"name": "logs.tar.gz"}, data=b"2") as r:
        assert (await r.json())["name"] == "logs-1.tar.gz"
    assert (uploads / "shot.png").read_bytes() == image
    # Empty files are files too; nothing but the published files is left in the folder.
    async with http.post(f"{url}/api/uploads", params={"name": "empty"}, data=b"") as r:
        assert r.status == 201 and (uploads / "empty").read_bytes() == b""
    assert sorted(p.name for p in uploads.iterdir()) == [
        "empty", "logs-1.tar.gz", "logs.tar.gz", "shot-1.png", "shot-2.png", "shot.png"]


@pytest.mark.parametrize(
    ("sent", "saved"),
    [
        ("../../.bashrc", "_.._.bashrc"),
        ("/etc/passwd", "_etc_passwd"),
        ("..\\..\\win.ini", "_.._win.ini"),
        ("..", "upload"),
        (".hidden", "hidden"),
        ("red\x1b[31m\nline.txt", "red_[31m_line.txt"),
        ("gnp\u202e.sh", "gnp_.sh"),  # a right-to-left override would make it read "hs.png"
        ("résumé (final) 😀.pdf", "résumé (final) 😀.pdf"),
        ("e\u0301te\u0301.txt", "été.txt"),  # NFC: one form of each accented letter
    ],
)
async def test_names_are_cleaned_never_escape_uploads_and_keep_unicode(make_settings, serve, http, home, sent, saved):
    url, _app = await serve(make_settings())
    before = set(home.iterdir())
    async with http.post(f"{url}/api/uploads", params={"name": sent}, data=b"x") as r:
        assert r.status == 201, await r.text()
        assert (await r.json())["name"] == saved
    assert [p.name for p in (home / "uploads").iterdir()] == [saved]
    assert set(home.iterdir()) - before == {home / "uploads"}


async def test_an_upload_without_a_name_is_a_400(make_settings, serve, http, home):
    url, _app = await serve(make_settings())
    for params in ({}, {"name": ""}, {"name": "  "}):
        async with http.post(f"{url}/api/uploads", params=params, data=b"x") as r:
            assert r.status == 400 and "name=" in (await r.json())["error"]
    assert not (home / "uploads").exists()


async def test_the_page_learns_the_upload_limit_and_download_sequence_from_the_server(make_settings, serve, http):
    """One place for each: the server's constants, served; the page's scripts repeat neither."""
    url, _app = await serve(make_settings())
    async with http.get(f"{url}/api/file-transfer") as r:
        assert r.status == 200
        assert await r.json() == {"max_upload_bytes": MAX_UPLOAD_BYTES, "download_osc": download_spool.DOWNLOAD_OSC}
    web = Path(__file__).resolve().parents[1] / "web"
    for script in web.glob("*.js"):
        text = script.read_text()
        assert str(download_spool.DOWNLOAD_OSC) not in text, script
        assert "32 * 1024 * 1024" not in text and str(MAX_UPLOAD_BYTES) not in text, script


async def test_above_32_mib_is_a_413_that_keeps_nothing_and_loses_nothing(make_settings, serve, http, home):
    url, _app = await serve(make_settings())
    uploads = home / "uploads"
    async with http.post(f"{url}/api/uploads", params={"name": "big.bin"}, data=b"kept") as r:
        assert r.status == 201

    async def stream(total: int, chunk: int = 1024 * 1024):
        sent = 0
        while sent < total:
            yield b"\xab" * min(chunk, total - sent)
            sent += chunk

    # Streamed without a length (chunked): the server counts and stops at the cap.
    async with http.post(f"{url}/api/uploads", params={"name": "big.bin"}, data=stream(MAX_UPLOAD_BYTES + 1)) as r:
        assert r.status == 413 and r.content_type == "application/json"
        assert "32 MiB" in (await r.json())["error"]
    # With a declared length: refused before a byte is read.
    async with http.post(f"{url}/api/uploads", params={"name": "big.bin"}, data=stream(MAX_UPLOAD_BYTES + 1),
                         headers={"Content-Length": str(MAX_UPLOAD_BYTES + 1)}) as r:
        assert r.status == 413 and "32 MiB" in (await r.json())["error"]
    # Exactly at the cap is fine.
    async with http.post(f"{url}/api/uploads", params={"name": "max.bin"}, data=stream(MAX_UPLOAD_BYTES)) as r:
        assert r.status == 201 and (await r.json())["size"] == MAX_UPLOAD_BYTES
    assert sorted(p.name for p in uploads.iterdir()) == ["big.bin", "max.bin"]
    assert (uploads / "big.bin").read_bytes() == b"kept"


async def test_an_upload_cut_off_midway_leaves_no_file(make_settings, serve, home):
    settings = make_settings()
    url, _app = await serve(settings)
    reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
    writer.write(
        b"POST /api/uploads?name=cut.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {WEB_KEY}\r\nContent-Length: 1000000\r\n\r\n".encode()
        + b"x" * 300_000
    )
    await writer.drain()
    uploads = home / "uploads"
    await eventually(lambda: uploads.exists() and any(uploads.iterdir()))  # the temp file, mid-upload
    writer.close()
    await eventually(lambda: not any(uploads.iterdir()))


async def test_the_parts_of_uploads_a_crash_cut_short_are_swept_at_start(make_settings, serve, home):
    """SIGKILL skips every cleanup: the temp file of an upload under way stays. The next start
    removes such parts, and nothing else in ~/uploads."""
    uploads = home / "uploads"
    uploads.mkdir(mode=0o700)
    part = uploads / ".upload-k3j2h1_x.part"  # as save_upload names its temp file
    part.write_bytes(b"x" * 300_000)
    kept = [uploads / ".upload-notes.txt", uploads / "photo.part", uploads / "report.pdf"]
    for path in kept:
        path.write_bytes(b"mine")
    await serve(make_settings())
    assert not part.exists()
    assert all(path.read_bytes() == b"mine" for path in kept)


async def test_the_upload_route_is_behind_the_key_and_the_origin_check(make_settings, serve, http, home):
    url, _app = await serve(make_settings())
    async with aiohttp.ClientSession() as stranger:
        r = await upload(stranger, url, "x.txt", b"x")
        assert r.status == 401
    r = await upload(http, url, "x.txt", b"x", headers=FOREIGN)
    assert r.status == 403
    assert not (home / "uploads").exists()
    async with aiohttp.ClientSession() as script:  # scripts use the Bearer header
        r = await upload(script, url, "x.txt", b"x", headers={"Authorization": f"Bearer {WEB_KEY}"})
        assert r.status == 201


async def test_in_app_mode_only_the_owner_moves_files(app_settings, serve, http, home):  # noqa: F811
    url, app = await serve(app_settings())
    await wait_for_owner(app)
    for headers in (AS_OTHER, {}):
        assert (await upload(http, url, "x.txt", b"x", headers=headers)).status == 403
        async with http.get(f"{url}/api/downloads/{'0' * 32}", headers=headers) as r:
            assert r.status == 403
    assert (await upload(http, url, "x.txt", b"x", headers=AS_OWNER)).status == 201


# --- files out, through a real bash -----------------------------------------------------


async def offer(http, url, session_id, command: str) -> tuple[list[str], str]:
    """Runs ``command`` (coda-download ...) in the session: the ids in its output (after those
    of the replayed scrollback), and the output."""
    out = await run_command(http, url, session_id, command)
    return [m.decode() for m in OSC.findall(out.encode(errors="surrogateescape"))], out


async def test_coda_download_serves_a_file_once_then_never_again(make_settings, serve, http, home):
    settings = make_settings()
    url, _app = await serve(settings)
    data = bytes(range(256)) * 300
    (home / "report 2024.bin").write_bytes(data)
    sid = await open_terminal(http, url)
    [download_id], out = await offer(http, url, sid, "cd ~ && coda-download 'report 2024.bin'")
    assert "sending report 2024.bin" in out
    spool = home / ".coda" / "downloads"
    assert mode(spool) == 0o700 and mode(spool / download_id) == 0o600
    recorded = json.loads((spool / download_id).read_text())
    assert recorded["path"] == str(home / "report 2024.bin")
    info = (home / "report 2024.bin").stat()
    assert recorded["identity"] == [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns]

    # A page on another site cannot spend the link.
    async with http.get(f"{url}/api/downloads/{download_id}", headers=FOREIGN) as r:
        assert r.status == 403
    async with aiohttp.ClientSession() as stranger:
        async with stranger.get(f"{url}/api/downloads/{download_id}") as r:
            assert r.status == 401
    async with http.get(f"{url}/api/downloads/{download_id}") as r:
        assert r.status == 200 and await r.read() == data
        assert r.headers["Content-Disposition"] == (
            "attachment; filename=\"report 2024.bin\"; filename*=UTF-8''report%202024.bin")
        assert r.headers["Content-Type"] == "application/octet-stream"
    async with http.get(f"{url}/api/downloads/{download_id}") as r:
        assert r.status == 404 and "already used or has expired" in (await r.json())["error"]
    assert list(spool.iterdir()) == []
    for bad in ("0" * 32, "nothex", "0" * 31, "%2e%2e"):
        async with http.get(f"{url}/api/downloads/{bad}") as r:
            assert r.status == 404 and "error" in await r.json()

    # A link expires unused.
    ids, _ = await offer(http, url, sid, "coda-download ~/'report 2024.bin'")
    old_id = ids[-1]  # the earlier one is in the replayed scrollback too
    past = (spool / old_id).stat().st_mtime - DOWNLOAD_TTL_SECONDS - 1
    os.utime(spool / old_id, (past, past))
    async with http.get(f"{url}/api/downloads/{old_id}") as r:
        assert r.status == 404
    # What was offered but became a directory or a pipe is refused, with a reason.
    for target, reason in (("was-a-file", "is a directory"), ("pipe", "not a regular file")):
        (home / target).write_bytes(b"offered")
        entry = download_spool.register(spool, str(home / target), target,
                                        download_spool.Identity.of((home / target).stat()))
        (home / target).unlink()
        if target == "pipe":
            os.mkfifo(home / target)
        else:
            (home / target).mkdir()
        async with http.get(f"{url}/api/downloads/{entry}") as r:
            assert r.status == 409 and reason in (await r.json())["error"]


async def test_a_file_swapped_after_coda_download_is_not_served(make_settings, serve, http, home):
    """Issue 24: the path was opened again at the fetch, so a file in a folder others can write
    to, replaced meanwhile by a symbolic link to ~/.databrickscfg, was served in its place (and
    saved in the owner's browser under the old name)."""
    url, _app = await serve(make_settings())
    secret = "dapi-the-owners-current-token-0123456789"
    (home / ".databrickscfg").write_text(f"[coda]\nhost = https://ws.example\ntoken = {secret}\n")
    shared = home / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: anyone may add and, for their own entries, replace names
    sid = await open_terminal(http, url)

    async def offered(name: str, content: bytes = b"quarterly numbers\n") -> str:
        (shared / name).write_bytes(content)
        ids, out = await offer(http, url, sid, f"coda-download {shlex.quote(str(shared / name))}")
        assert f"sending {Path(name).name}" in out
        return ids[-1]  # earlier ids come back in the replayed scrollback

    async def refused(download_id: str, reason: str) -> None:
        async with http.get(f"{url}/api/downloads/{download_id}") as r:
            body = await r.read()
            assert r.status == 409 and reason in json.loads(body)["error"], body
            assert secret.encode() not in body

    # The file becomes a link to the owner's credentials.
    link_id = await offered("report.txt")
    (shared / "report.txt").unlink()
    (shared / "report.txt").symlink_to(home / ".databrickscfg")
    await refused(link_id, "became a symbolic link")
    # Another file renamed over it, and a folder on the way turned into a link elsewhere.
    other_id = await offered("notes.txt")
    (shared / "decoy").write_bytes(b"quarterly numbers\n")
    os.replace(shared / "decoy", shared / "notes.txt")
    await refused(other_id, "was replaced by another file")
    (shared / "sub").mkdir()
    sub_id = await offered("sub/.databrickscfg", b"[coda]\n")
    (shared / "sub").rename(shared / "sub-old")
    (shared / "sub").symlink_to(home)
    await refused(sub_id, "was replaced by another file")
    # The same file written to after it was named: not what was offered either.
    grown_id = await offered("log.txt")
    with open(shared / "log.txt", "ab") as f:
        f.write(b"one more line\n")
    await refused(grown_id, "changed after coda-download named it")
    # A file left alone is served as usual.
    kept_id = await offered("kept.txt", b"kept\n")
    async with http.get(f"{url}/api/downloads/{kept_id}") as r:
        assert r.status == 200 and await r.read() == b"kept\n"


async def test_coda_download_refuses_directories_and_missing_files_and_needs_no_secret(make_settings, serve, http,
                                                                                      home):
    url, app = await serve(make_settings())
    (home / "folder").mkdir()
    sid = await open_terminal(http, url)
    ids, out = await offer(http, url, sid, "coda-download ~/folder ~/nope.txt; echo rc=$?")
    assert ids == [] and "rc=1" in out
    assert "folder is a directory" in out and "tar czf" in out
    assert "nope.txt: no such file" in out
    ids, out = await offer(http, url, sid, "coda-download; echo rc=$?")
    assert ids == [] and "usage: coda-download FILE" in out and "rc=2" in out
    assert not any((home / ".coda" / "downloads").iterdir())
    # The command lives in coda's own bin, first on the PATH, and holds no key.
    _, out = await offer(http, url, sid, "command -v coda-download")
    script = home / ".coda" / "bin" / "coda-download"
    assert str(script) in out and mode(script) == 0o700
    assert WEB_KEY not in script.read_text()


# --- in Chromium --------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module")
async def served(make_settings):
    async with serving(make_settings()) as (url, app):
        yield url, app


async def page_message(page: Page, text: str, kind: str = "good") -> None:
    """Waits for the page message; success is framed as success, not as an error."""
    await page.wait_for_function(
        "([text, kind]) => { const el = document.getElementById('page-message');"
        " return !el.hidden && el.textContent.includes(text) && el.dataset.kind === kind; }",
        arg=[text, kind],
    )


PASTE = """([b64, name, type]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type }));
  const target = document.querySelector('.terminal-pane.active .xterm-helper-textarea');
  target.dispatchEvent(new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true }));
}"""

DROP = """([b64, name]) => {
  const data = new DataTransfer();
  data.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name));
  const target = document.querySelector('.terminal-pane.active .xterm-screen');
  for (const type of ['dragenter', 'dragover', 'drop']) {
    target.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
  }
}"""


QUOTED_NAME = "it's a file.txt"


@in_browser
async def test_a_pasted_image_and_dropped_files_are_uploaded_and_their_paths_typed_without_enter(
        browser, served, home, tmp_path):
    url, _app = served
    problems = PageProblems()
    page = await open_terminal_page(browser, url, problems)
    capture = tmp_path / "capture"
    await start_capture(page, capture)
    uploads = home / "uploads"

    image = png(5, 4)
    await page.evaluate(PASTE, [base64.b64encode(image).decode(), "image.png", "image/png"])
    await page_message(page, f"Uploaded to {uploads / 'image.png'}.")
    other = bytes(range(256))
    await page.evaluate(DROP, [base64.b64encode(other).decode(), "image.png"])
    await page_message(page, f"Uploaded to {uploads / 'image-1.png'}.")
    await page.evaluate(DROP, [base64.b64encode(b"q").decode(), QUOTED_NAME])
    await page_message(page, f"Uploaded to {uploads / QUOTED_NAME}.")

    # Typed as a paste at the prompt, shell-quoted, each followed by a space: never an Enter.
    typed = "".join(f"{shlex.quote(str(uploads / name))} " for name in ("image.png", "image-1.png", QUOTED_NAME))
    assert await captured_after_sentinel(page, capture) == typed + SENTINEL
    assert (uploads / "image.png").read_bytes() == image and (uploads / "image-1.png").read_bytes() == other
    assert all(mode(p) == 0o600 for p in uploads.iterdir()) and mode(uploads) == 0o700
    assert problems.messages == []
    await page.context.close()


@in_browser
async def test_coda_download_in_a_terminal_downloads_the_bytes_once_and_a_reload_downloads_nothing(
        browser, served, home, tmp_path):
    url, _app = served
    data = bytes(range(256)) * 64
    (home / "données ü.bin").write_bytes(data)
    (home / "second.bin").write_bytes(b"second")
    problems = PageProblems()
    page = await open_terminal_page(browser, url, problems)
    fetched: list[str] = []
    page.on("request", lambda request: "/api/downloads/" in request.url and fetched.append(request.url))

    async with page.expect_download() as info:
        await run_in_terminal(page, "coda-download ~/donn*")
    download = await info.value
    assert download.suggested_filename == "données ü.bin"
    assert Path(await download.path()).read_bytes() == data
    await page_message(page, "Downloaded données ü.bin.")
    assert len(fetched) == 1
    async with web_session() as http:  # the one-time link is gone
        async with http.get(fetched[0]) as r:
            assert r.status == 404

    # The sequence is in the scrollback that a reload replays; only live output downloads.
    await page.reload()
    await wait_for_state(page, "shell")
    await wait_replayed(page)
    async with page.expect_download() as info:
        await run_in_terminal(page, "coda-download ~/second.bin")
    assert (await info.value).suggested_filename == "second.bin"
    assert len(fetched) == 2, fetched
    assert problems.messages == []
    await page.context.close()


@in_browser
async def test_only_the_tab_the_person_uses_fetches_a_download_when_two_show_the_session(browser, served, home):
    url, _app = served
    (home / "one.bin").write_bytes(b"one")
    (home / "two.bin").write_bytes(b"two")
    first = await open_terminal_page(browser, url, PageProblems())
    second = await open_terminal_page(browser, url, PageProblems())  # the same session
    await wait_replayed(second)
    fetched: dict[str, list[str]] = {"first": [], "second": []}
    for name, page in (("first", first), ("second", second)):
        page.on("request", lambda request, name=name: "/api/downloads/" in request.url and fetched[name].append(request.url))

    # Typed in the first: it downloads; the second, which sees the same output, fetches nothing.
    await first.bring_to_front()
    async with first.expect_download() as info:
        await run_in_terminal(first, "coda-download ~/one.bin; echo first-done")
    assert Path(await (await info.value).path()).read_bytes() == b"one"
    await wait_for_line(second, "first-done")
    # And the other way round, once the person has moved to the second.
    await second.bring_to_front()
    async with second.expect_download() as info:
        await run_in_terminal(second, "coda-download ~/two.bin; echo second-done")
    assert Path(await (await info.value).path()).read_bytes() == b"two"
    await wait_for_line(first, "second-done")
    await page_message(first, "Downloaded one.bin.")  # the first's message, not a failure
    assert (len(fetched["first"]), len(fetched["second"])) == (1, 1), fetched
    for page in (first, second):
        await page.context.close()
