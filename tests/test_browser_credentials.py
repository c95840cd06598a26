"""The credential flow as a person meets it: Chromium, the real app, the fake workspace."""

from __future__ import annotations

import aiohttp

from browser_util import (
    printed_url,
    ACTIVE_ROWS,
    CSP_RECORDER,
    PageProblems,
    chromium,
    csp_violations,
    open_terminal_page,
    run_in_terminal,
    terminal_lines,
    wait_for_line,
    wait_for_state,
)
from coda_aio.routes.app_keys import SETUP
from coda_aio.credentials.databrickscfg import read_profile
from coda_aio.server import create_app
from coda_aio.agents.setup import SetupRunner, Step
from conftest import USER, serving_app, web_session



async def rendered_text(page) -> str:
    return "\n".join(await terminal_lines(page))


async def test_paste_a_token_get_a_shell_and_get_asked_again_when_it_dies(make_settings, fake):
    pat = fake.issue_pat(USER)
    settings = make_settings(host=fake.url)
    app = create_app(settings)
    # Setup steps that run here, without the network: one works, one fails with a message.
    app[SETUP] = SetupRunner([
        Step("ok", "Install OK-CLI", ["true"]),
        Step("bad", "Install Broken-CLI", ["sh", "-c", "echo registry unreachable >&2; exit 3"]),
    ])
    async with serving_app(app, settings.port) as url, chromium() as browser:
        context = await browser.new_context(viewport={"width": 1100, "height": 640})
        await context.add_init_script(CSP_RECORDER)
        page = await context.new_page()
        problems = PageProblems()
        problems.watch(page)
        await page.goto(printed_url(url))
        await wait_for_state(page, "prompt")
        text = await rendered_text(page)
        assert f"{fake.url}/settings/user/developer/access-tokens" in text.replace("\n", "")

        # A wrong token: the error, then the prompt again.
        await page.locator(".terminal-pane.active .xterm-screen").click()
        await page.keyboard.type("dapi" + "0" * 32)
        await page.keyboard.press("Enter")
        await wait_for_text(page, "refused")
        await wait_for_state(page, "prompt")

        # The real one, pasted: masked on screen, then a working shell.
        await page.keyboard.insert_text(pat)
        await page.keyboard.press("Enter")
        await wait_for_text(page, f"Signed in as {USER}")
        await wait_for_state(page, "shell")
        # What the agent installs did, printed inline before the shell took over.
        await wait_for_text(page, "✓ Install OK-CLI")
        await wait_for_text(page, "✗ Install Broken-CLI: exit code 3: registry unreachable")
        await run_in_terminal(page, "echo ok-$((40+2))")
        await wait_for_line(page, "ok-42")
        assert pat not in await rendered_text(page)
        assert not fake.is_live(pat)  # it was the user's only token: revoked

        # The token is revoked behind coda_aio's back. An agent's next call through the proxy
        # is refused upstream, the rotator confirms the token is dead, the terminal asks again.
        current = read_profile(settings.databrickscfg_path, settings.profile)["token"]
        fake.revoke(current)
        key = (settings.state_dir / "proxy-key").read_text().strip()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{settings.proxy_url}/serving-endpoints/blob?size=1",
                                headers={"Authorization": f"Bearer {key}"}) as r:
                assert r.status == 403
        await wait_for_state(page, "prompt")
        await wait_for_text(page, "stopped working")

        # A fresh token brings the shell back.
        await page.keyboard.insert_text(fake.issue_pat(USER))
        await page.keyboard.press("Enter")
        await wait_for_state(page, "shell")
        assert await csp_violations(page) == []
        await context.close()
        # A 400 from configure-pat is logged by Chrome as a failed load; nothing else may be.
        assert [m for m in problems.messages if "400" not in m] == []


async def wait_for_text(page, text: str) -> None:
    await page.wait_for_function(
        "([s, t]) => document.querySelector(s).textContent.replace(/\\u00a0/g, ' ').includes(t)",
        arg=[ACTIVE_ROWS, text], timeout=10_000,
    )


# Every value body[data-terminal-state] takes, from the first line of the page on.
STATE_RECORDER = """
window.__states = [];
new MutationObserver(() => {
  const state = document.body && document.body.dataset.terminalState;
  if (state && window.__states[window.__states.length - 1] !== state) window.__states.push(state);
}).observe(document, { attributes: true, subtree: true, attributeFilter: ['data-terminal-state'] });
"""


async def test_after_a_restart_the_saved_token_is_checked_before_anyone_is_asked_to_paste(make_settings, fake):
    settings = make_settings(host=fake.url)
    async with serving_app(create_app(settings), settings.port) as url, web_session() as http:
        async with http.post(f"{url}/api/configure-pat", json={"token": fake.issue_pat(USER)}) as r:
            assert r.status == 200, await r.text()

    async def restarted_page(browser, url):
        page = await open_terminal_page(browser, url, PageProblems(), STATE_RECORDER)
        await page.wait_for_function(
            "() => document.getElementById('status-account').textContent === 'Checking the saved token…'")
        return page

    fake.fail("me", 503, times=None)  # the workspace does not answer yet
    async with serving_app(create_app(settings), settings.port) as url, chromium() as browser:
        page = await restarted_page(browser, url)
        fake.clear_faults()
        await page.wait_for_function(
            "(t) => document.getElementById('status-account').textContent === t", arg=f"Signed in as {USER}")
        assert await page.evaluate("window.__states") == ["connecting", "shell"]  # never asked
        await page.context.close()

    # The saved token died meanwhile: once the workspace answers, the terminal asks for one.
    fake.fail("me", 503, times=None)
    async with serving_app(create_app(settings), settings.port) as url, chromium() as browser:
        page = await restarted_page(browser, url)
        assert "prompt" not in await page.evaluate("window.__states")
        fake.revoke(read_profile(settings.databrickscfg_path, settings.profile)["token"])
        fake.clear_faults()
        await wait_for_state(page, "prompt")
        await wait_for_text(page, "stopped working")
        await page.context.close()
