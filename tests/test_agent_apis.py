"""Each API shape the agents use, with the real client SDKs, through the proxy to the stand-in.

The clients are configured from the files coda_aio writes for the agents (base URL and
local key), so a path that a config points at and the workspace does not serve fails here:
Anthropic Messages (Claude Code), the OpenAI Responses API (Codex), chat completions
(OpenCode) and Gemini generateContent / streamGenerateContent (Gemini CLI), each as JSON
and as a stream.
"""

from __future__ import annotations

import json
import tomllib

import anthropic
import openai
import pytest

from coda_aio.agents.configs import AgentModels
from coda_aio.routes.app_keys import PROXY, TOKENS
from coda_aio.terminal.environment import coda_env
from coda_aio.testing.fake_workspace import reply_text
from conftest import USER, eventually


@pytest.fixture
async def configured(make_settings, serve, http, fake):
    """The app after a paste: (settings, app) with every agent config written."""
    fake.sse_events = 4
    settings = make_settings(host=fake.url)
    url, app = await serve(settings)
    async with http.post(f"{url}/api/configure-pat", json={"token": fake.issue_pat(USER)}) as r:
        assert r.status == 200, await r.text()
    await eventually(lambda: (settings.state_dir / "gemini" / ".gemini" / ".env").exists())
    return settings, app


def claude_settings(settings) -> dict:
    return json.loads((settings.state_dir / "claude" / "settings.json").read_text())["env"]


def codex_provider(settings) -> tuple[dict, str]:
    config = tomllib.loads((settings.state_dir / "codex" / "config.toml").read_text())
    return config["model_providers"][config["model_provider"]], config["model"]


def opencode_options(settings) -> tuple[dict, str]:
    config = json.loads((settings.state_dir / "opencode" / "opencode.json").read_text())
    return config["provider"]["databricks"]["options"], config["model"].split("/", 1)[1]


async def test_anthropic_messages_json_and_stream(configured, fake):
    settings, app = configured
    env = claude_settings(settings)
    name, _, value = env["ANTHROPIC_CUSTOM_HEADERS"].partition(":")
    client = anthropic.AsyncAnthropic(base_url=env["ANTHROPIC_BASE_URL"], auth_token=env["ANTHROPIC_AUTH_TOKEN"],
                                      default_headers={name.strip(): value.strip()}, max_retries=0)
    model = env["ANTHROPIC_MODEL"]
    async with client:
        message = await client.messages.create(model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}])
        assert message.content[0].text == reply_text(model) and message.stop_reason == "end_turn"
        async with client.messages.stream(model=model, max_tokens=50,
                                          messages=[{"role": "user", "content": "hi"}]) as stream:
            deltas = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
    assert len(deltas) == 4 and "".join(deltas) == reply_text(model)
    assert final.content[0].text == reply_text(model)
    assert_through_proxy(fake, app, "/serving-endpoints/anthropic/v1/messages")
    assert fake.served[-1].headers.get("x-databricks-use-coding-agent-mode") == "true"


async def test_openai_responses_json_and_stream(configured, fake):
    """Codex's wire API: the Responses API at <base_url>/responses."""
    settings, app = configured
    provider, model = codex_provider(settings)
    assert provider["wire_api"] == "responses" and model == AgentModels().codex
    client = openai.AsyncOpenAI(base_url=provider["base_url"], api_key=provider["experimental_bearer_token"],
                                max_retries=0)
    async with client:
        response = await client.responses.create(model=model, input="hi", instructions="be brief")
        assert response.output_text == reply_text(model) and response.status == "completed"
        assert response.usage.output_tokens > 0
        stream = await client.responses.create(model=model, input=[{"role": "user", "content": "hi"}], stream=True)
        events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == 4 and "".join(deltas) == reply_text(model)
    assert events[-1].response.output_text == reply_text(model)
    assert_through_proxy(fake, app, "/serving-endpoints/responses")


async def test_openai_chat_completions_json_and_stream(configured, fake):
    """OpenCode's wire API: chat completions at <baseURL>/chat/completions."""
    settings, app = configured
    options, model = opencode_options(settings)
    client = openai.AsyncOpenAI(base_url=options["baseURL"], api_key=options["apiKey"], max_retries=0)
    async with client:
        reply = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == reply_text(model)
        stream = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                                      stream=True)
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply_text(model) and chunks[-1].choices[0].finish_reason == "stop"
    assert_through_proxy(fake, app, "/serving-endpoints/chat/completions")


async def test_gemini_generate_content_json_and_stream(configured, fake, http):
    """Gemini CLI's wire API, configured as a coda terminal configures it."""
    settings, app = configured
    env = coda_env(settings)
    base, key, model = env["GOOGLE_GEMINI_BASE_URL"], env["GEMINI_API_KEY"], env["GEMINI_MODEL"]
    assert env["GEMINI_API_KEY_AUTH_MECHANISM"] == "bearer" and key == app[PROXY].key
    headers = {"Authorization": f"Bearer {key}"}
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    async with http.post(f"{base}/v1beta/models/{model}:generateContent", json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        reply = await r.json()
    assert reply["candidates"][0]["content"]["parts"][0]["text"] == reply_text(model)
    async with http.post(f"{base}/v1beta/models/{model}:streamGenerateContent?alt=sse", json=body,
                         headers=headers) as r:
        assert r.status == 200 and r.content_type == "text/event-stream"
        events = [json.loads(line[len(b"data: "):]) async for line in r.content if line.startswith(b"data: ")]
    assert "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events) == reply_text(model)
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert_through_proxy(fake, app, f"/serving-endpoints/google/v1beta/models/{model}:streamGenerateContent")


async def test_revoked_or_expired_token_is_refused_in_each_api_shape(make_settings, fake, http):
    """The serving paths check the token like every other workspace API."""
    pat = fake.issue_pat(USER)
    calls = [
        ("/serving-endpoints/responses", {"model": "m", "input": "hi"}),
        ("/serving-endpoints/chat/completions", {"model": "m", "messages": []}),
        ("/serving-endpoints/anthropic/v1/messages", {"model": "m", "max_tokens": 5, "messages": []}),
        ("/serving-endpoints/google/v1beta/models/m:generateContent", {"contents": []}),
    ]
    for path, body in calls:
        async with http.post(f"{fake.url}{path}", json=body) as r:
            assert r.status == 401, path
        async with http.post(f"{fake.url}{path}", json=body, headers={"Authorization": f"Bearer {pat}"}) as r:
            assert r.status == 200, (path, await r.text())
    fake.revoke(pat)
    for path, body in calls:
        async with http.post(f"{fake.url}{path}", json=body, headers={"Authorization": f"Bearer {pat}"}) as r:
            assert r.status == 403 and (await r.json())["message"] == "Invalid access token.", path


async def test_responses_api_rejects_bad_requests_in_its_own_format(fake, http):
    headers = {"Authorization": f"Bearer {fake.issue_pat(USER)}"}
    for body in ({"input": "hi"}, {"model": "m"}, {"model": "m", "input": 5}):
        async with http.post(f"{fake.url}/serving-endpoints/responses", json=body, headers=headers) as r:
            assert r.status == 400 and (await r.json())["error_code"] == "BAD_REQUEST", body
    async with http.post(f"{fake.url}/serving-endpoints/responses", data=b"{nope", headers=headers) as r:
        assert r.status == 400


def assert_through_proxy(fake, app, path: str) -> None:
    """The workspace saw the call with coda's current token (the proxy swapped the local key)."""
    last = fake.served[-1]
    assert last.path == path
    assert last.token == app[TOKENS].token and last.token != app[PROXY].key and last.user == USER
