"""Issue 21 as a person meets it: Chromium through the stand-in Apps front proxy, the real app,
a workspace with personal access tokens off."""

from __future__ import annotations

from apps_front_proxy import apps_front_proxy
from browser_util import PageProblems, chromium, run_in_terminal, terminal_lines, wait_for_line, wait_for_state
from coda_aio.routes.app_keys import OWNER
from conftest import eventually
from test_user_authorization import OWNER_EMAIL, app_fake, app_settings  # noqa: F401 - fixtures


async def open_page(browser, url: str, problems: PageProblems):
    context = await browser.new_context(viewport={"width": 1100, "height": 640})
    page = await context.new_page()
    problems.watch(page)
    await page.goto(url + "/")
    return page


async def test_with_the_users_sign_in_there_is_no_prompt_and_the_status_bar_says_whose(
        app_settings, app_fake, serve):
    url, app = await serve(app_settings())
    await eventually(lambda: app[OWNER].status == "ok", timeout=20)
    async with apps_front_proxy(app_fake, url, OWNER_EMAIL) as front, chromium() as browser:
        problems = PageProblems()
        page = await open_page(browser, front.url, problems)
        await wait_for_state(page, "shell")  # straight to the shell: nothing to paste
        account = page.locator("#status-account")
        await page.wait_for_function(
            "() => document.getElementById('status-account').textContent.includes('your Databricks sign-in')")
        assert await account.inner_text() == f"Signed in as {OWNER_EMAIL} (your Databricks sign-in)"
        await run_in_terminal(page, "echo typed-$((6*7))")  # the WebSocket works through the front proxy
        await wait_for_line(page, "typed-42")
        assert problems.messages == []


async def test_without_user_authorization_or_a_pat_the_prompt_explains_both_ways(app_settings, app_fake, serve):
    url, app = await serve(app_settings())
    await eventually(lambda: app[OWNER].status == "ok", timeout=20)
    async with apps_front_proxy(app_fake, url, OWNER_EMAIL, user_authorization=False) as front, \
            chromium() as browser:
        page = await open_page(browser, front.url, PageProblems())
        await wait_for_state(page, "prompt")
        text = "".join(await terminal_lines(page)).replace(" ", "")
        assert "personalaccesstoken" in text and "userauthorization" in text and "docs/deploy.md" in text
