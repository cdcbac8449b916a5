"""The run viewer in real Chromium (Debian's ``chromium``, driven by Playwright through
``executable_path``; no browser is downloaded): the live tree, errors in red, filters,
a run's complete record, the time from a token's production to its drawing, and a
server with a token (the page takes it from its address's fragment, or asks for it, and
it is in no URL the browser requests or keeps). Every page runs under the server's
Content-Security-Policy, which it must not break.

Marked ``browser``: ``.ci/run`` runs these as a step of their own, with
``TROUPE_BROWSER_REQUIRED=1``. Elsewhere, where Chromium or Playwright is missing, they
skip, saying what to install; in that step they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio

from actors import Agent, ScriptedChatModel, ScriptedTurn, tool
from actors._demo import make_cat_agent

from .sse_client import serving

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("TROUPE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
REPORT = os.environ.get("TROUPE_VIEWER_REPORT")
"""Where to write the latency figures as JSON (the README quotes them)."""

ARTIFACTS = Path(os.environ.get("TROUPE_ARTIFACTS", ".artifacts")) / "viewer"
"""Where the playground's tests keep their screenshots (``.artifacts/`` is gitignored)."""

SHOWN = 60_000
"""Milliseconds the page may take to show what the server sent: a bound, not a speed
(10 s was too short on a loaded machine)."""


def _missing(what: str) -> None:
    if os.environ.get("TROUPE_BROWSER_REQUIRED"):
        pytest.fail(f"{what} is missing, and the browser step needs it: .ci/run installs it")
    pytest.skip(f"{what} is missing: apt-get install chromium; pip install playwright")


WORDS = (
    "the",
    "cat",
    "is",
    "under",
    "the",
    "bed",
    "with",
    "socks",
    ",",
    "shoes",
    "and",
    "dust",
    "bunnies",
    ".",
)


def _paced(tokens: int, delay: float, name: str) -> ScriptedChatModel:
    text = " ".join(WORDS[i % len(WORDS)] for i in range(tokens))
    return ScriptedChatModel([ScriptedTurn(text)], token_delay=delay, name=name)


@tool
async def add(a: int, b: int = 2, scale: dict[str, float] | None = None) -> str:
    """Add two whole numbers."""
    return str((a + b) * (1 if scale is None else scale.get("by", 1)))


@tool
async def now() -> str:
    """What time it is (no arguments)."""
    return "noon"


PERFORMERS: dict[str, Any] = {
    "add": add,
    "now": now,
    "cat": make_cat_agent(),
    "nested": make_cat_agent(nested=True),
    "broken": Agent(ScriptedChatModel([ScriptedTurn("half", error="the model fell over")])),
    "paced": _paced(300, 0.01, "Paced"),  # 100 tokens a second
    "long": _paced(10_000, 0.0, "Long"),
    "small": _paced(20, 0.002, "Small"),
}


TOKEN = "s3cret/+ &=#?%"
"""A token with every character a URL gives a meaning to."""
# (A test's own page.wait_for_function takes a function, "() => ...": an expression is
# run with eval, which the policy refuses, rightly.)
WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


def _serve(**options: Any) -> str:
    """The app on 127.0.0.1, in a thread of its own (the browser is driven from this one):
    its address."""
    started: list[str] = []
    ready = threading.Event()

    async def main() -> None:
        async with serving(PERFORMERS, **{"history": 500, **options}) as served:
            started.append(served.base_url)
            ready.set()
            await trio.sleep_forever()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(30), "the server did not start"
    # The server's trio run ends with the process (a daemon thread): hypercorn stops on
    # a signal, which this thread cannot send to the other one.
    return started[0]


@pytest.fixture(scope="module")
def server() -> str:
    return _serve()


@pytest.fixture(scope="module")
def token_server() -> str:
    return _serve(token=TOKEN)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        _missing("Chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def _new_page(browser: Any) -> tuple[Any, Any, list[str]]:
    """A page in a context of its own (a tab's storage of its own), watching for
    errors and for what the Content-Security-Policy refuses."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(WATCH_CSP)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on(
        "console",
        lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return context, opened, errors


def _closed(context: Any, opened: Any, errors: list[str]) -> None:
    refused = opened.evaluate("window.__csp")
    context.close()
    assert not errors, f"the page raised: {errors}"
    assert refused == [], f"the Content-Security-Policy refused: {refused}"


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    context, opened, errors = _new_page(browser)
    opened.goto(server + "/")
    opened.wait_for_selector("#connection.live", timeout=SHOWN)
    yield opened
    _closed(context, opened, errors)


def _run(
    server: str, performer: str, payload: Any = "where is the cat?", token: str | None = None
) -> dict[str, Any]:
    response = httpx.post(
        f"{server}/runs/wait",
        json={"performer": performer, "input": payload},
        headers={"authorization": f"Bearer {token}"} if token else {},
        timeout=60,
    )
    return {"status": response.status_code, "body": response.json()}


def _start(server: str, performer: str, payload: Any = "q") -> str:
    response = httpx.post(
        f"{server}/runs", json={"performer": performer, "input": payload}, timeout=30
    )
    assert response.status_code == 202, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def _names_under(page: Any, run_id: str) -> list[str]:
    names: list[str] = page.eval_on_selector_all(
        f'.node[data-id="{run_id}"] > .children .name', "els => els.map(e => e.textContent)"
    )
    return names


def test_the_tree_shows_a_nested_run_live(page: Any, server: str, tmp_path: Path) -> None:
    result = _run(server, "nested")
    assert result["status"] == 200
    page.wait_for_selector("#tree > .node.status-ok", timeout=SHOWN)
    root = page.locator("#tree > .node").first
    assert root.locator("> .head .name").inner_text() == "Agent"
    tree_names = page.eval_on_selector_all(".node .name", "els => els.map(e => e.textContent)")
    assert "where_cat_is_hiding" in tree_names and "get_items" in tree_names
    # the model called inside get_items is drawn under get_items
    get_items = page.locator('.node.kind-tool:has(> .head .name:text-is("get_items"))')
    assert get_items.locator("> .children .node .name").inner_text() == "Get Items LLM"
    # the streamed answer is there, and usage on model runs
    answer = result["body"]["output"]["output"]
    texts = page.eval_on_selector_all(
        ".node.kind-chat_model .text", "e => e.map(x => x.textContent)"
    )
    assert any(answer in text for text in texts)
    assert page.locator(".node.kind-chat_model .usage").first.inner_text().endswith("out")
    assert page.locator("#root-list li.selected.status-ok").count() == 1
    page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)
    if os.environ.get("TROUPE_SCREENSHOT"):
        page.screenshot(path=os.environ["TROUPE_SCREENSHOT"])


def test_an_error_run_is_red_with_its_message(page: Any, server: str) -> None:
    result = _run(server, "broken")
    assert result["status"] == 200 and result["body"]["status"] == "error"
    page.wait_for_selector("#tree > .node.status-error", timeout=SHOWN)
    name = page.locator("#tree > .node.status-error > .head .name")
    assert name.evaluate("e => getComputedStyle(e).color") == "rgb(198, 40, 40)"
    assert "the model fell over" in page.locator("#tree .error").first.inner_text()
    assert page.locator("#root-list li.status-error").count() >= 1


def test_filters_and_the_complete_record(page: Any, server: str) -> None:
    _run(server, "cat")
    page.wait_for_selector("#tree > .node.status-ok", timeout=SHOWN)
    page.fill("#filter-name", "get_items")
    page.wait_for_selector(".node.kind-tool.hidden", state="attached")
    visible = page.eval_on_selector_all(
        ".node:not(.hidden):not(.filtered-out) > .head .name", "e => e.map(x => x.textContent)"
    )
    assert visible == ["get_items"]
    page.fill("#filter-name", "")
    page.select_option("#filter-kind", "chat_model")
    visible = page.eval_on_selector_all(
        ".node:not(.hidden):not(.filtered-out) > .head .name", "e => e.map(x => x.textContent)"
    )
    assert set(visible) == {"ScriptedChatModel"} and len(visible) == 3
    page.select_option("#filter-kind", "")
    page.locator(".node.kind-tool > .head").first.click()
    page.wait_for_function(
        "() => document.getElementById('details-json').textContent.startsWith('{')"
    )
    assert page.locator("#details-view .rec-facts").is_visible()  # the readable view first
    page.click("#show-raw")
    record = json.loads(page.locator("#details-json").inner_text())
    assert record["start"]["event"] == "on_tool_start"
    assert record["end"]["event"] == "on_tool_end" and record["end"]["status"] == "ok"
    assert record["start"]["run_id"] == record["end"]["run_id"]


def test_tokens_reach_the_page_in_time_at_100_per_second(page: Any, server: str) -> None:
    page.evaluate("window.__troupe.latencies.length = 0")
    _run(server, "paced")
    page.wait_for_function(
        "() => document.querySelector('#tree > .node.status-ok') !== null", timeout=20_000
    )
    text = page.locator("#tree > .node .text").first.inner_text()
    assert text == " ".join(WORDS[i % len(WORDS)] for i in range(300))  # every token, in order
    latencies = page.evaluate("window.__troupe.latencies")
    assert len(latencies) >= 250  # each token drawn (a frame may draw several)
    p50 = statistics.median(latencies) * 1000
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    print(f"\ntoken production -> on the page at 100 tokens/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    if REPORT:
        Path(REPORT).write_text(json.dumps({"p50_ms": p50, "p99_ms": p99, "n": len(latencies)}))


def test_big_runs_stay_smooth(page: Any, server: str) -> None:
    # a long answer streams while 100 runs go on at once; the page counts its frames
    page.evaluate(
        """() => {
            window.__frames = [];
            let last = performance.now();
            const tick = (now) => {
                window.__frames.push(now - last);
                last = now;
                if (window.__frames.length < 100000) requestAnimationFrame(tick);
            };
            requestAnimationFrame(tick);
        }"""
    )
    long_id = _start(server, "long")
    page.locator(f'#root-list li[data-id="{long_id}"]').click()
    ids = [_start(server, "small") for _ in range(100)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = page.evaluate(
            "ids => ids.filter(id => "
            "(window.__troupe.state.rootInfo.get(id) || {}).status === 'ok').length",
            [*ids, long_id],
        )
        if done == len(ids) + 1:
            break
        time.sleep(0.2)
    assert done == len(ids) + 1, f"{done} of {len(ids) + 1} runs shown as ended"
    page.wait_for_selector(f'#tree > .node[data-id="{long_id}"].status-ok', timeout=SHOWN)
    button = page.locator("#tree .node.kind-chat_model .more")
    assert "show all" in button.inner_text()  # the long text is cut, with a way to expand
    chars = page.evaluate(
        "id => [...window.__troupe.state.runs.values()]"
        ".find(r => r.root === id && r.kind === 'chat_model').textChars",
        long_id,
    )
    assert chars == len(" ".join(WORDS[i % len(WORDS)] for i in range(10_000)))
    button.click()
    page.wait_for_function(
        "n => document.querySelector('#tree .node.kind-chat_model .text').textContent.length >= n",
        arg=chars,
    )
    frames = page.evaluate("window.__frames")
    slow = sorted(frames)[int(len(frames) * 0.99)]
    print(f"\nframes while 101 runs streamed: {len(frames)}, p99 gap {slow:.1f} ms")
    assert page.locator("#root-list li").count() >= 101


# -- a server with a token ----------------------------------------------------------------


def _requests(opened: Any) -> list[Any]:
    requests: list[Any] = []
    opened.on("request", lambda request: requests.append(request))
    return requests


def _no_token_in(requests: list[Any], given_at: int = 0) -> None:
    """The token is in no URL the page requested, and in the header of every request
    for data from the ``given_at``-th on."""
    for request in requests:
        url = request.url
        assert TOKEN not in url and quote(TOKEN, safe="") not in url, url
        assert "token" not in url, url
    data = [r for r in requests[given_at:] if "/viewer/runs" in r.url or "/viewer/events" in r.url]
    assert data, "the page read no data"
    for request in data:
        assert request.all_headers().get("authorization") == f"Bearer {TOKEN}", request.url


def test_a_token_in_the_fragment_is_in_no_url(browser: Any, token_server: str) -> None:
    context, opened, errors = _new_page(browser)
    requests = _requests(opened)
    opened.goto(f"{token_server}/#token={quote(TOKEN, safe='')}")
    opened.wait_for_selector("#connection.live", timeout=SHOWN)
    # the address no longer holds it, nor does the tab's history entry
    assert opened.evaluate("location.href") == f"{token_server}/"
    result = _run(token_server, "cat", token=TOKEN)
    assert result["status"] == 200
    run_id = result["body"]["run_id"]
    opened.wait_for_selector(f'#root-list li[data-id="{run_id}"]', timeout=SHOWN)
    opened.wait_for_selector("#tree > .node.status-ok", timeout=SHOWN)
    # the page's own files came without it (the server serves them to anyone)
    files = {r.url.removeprefix(token_server) for r in requests}
    assert {"/viewer/viewer.css", "/viewer/viewer.js"} <= files
    # away and back: the entry comes back without the token, and the tab still has it
    opened.goto("about:blank")
    opened.go_back()
    assert opened.url == f"{token_server}/"
    opened.wait_for_selector("#connection.live", timeout=SHOWN)
    opened.wait_for_selector(f'#root-list li[data-id="{run_id}"]', timeout=SHOWN)
    assert opened.locator("#token-form").is_hidden()
    _no_token_in(requests)
    # a run started from the form carries the token in its header, not its address
    run_id = _start_from_form(opened, "cat", "where is the cat, with a token?")
    opened.wait_for_selector(f'#tree > .node[data-id="{run_id}"].status-ok', timeout=SHOWN)
    [sent] = [r for r in requests if r.method == "POST"]
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    _no_token_in(requests)
    _closed(context, opened, errors)


def test_the_page_asks_for_the_token_it_lacks(browser: Any, token_server: str) -> None:
    context, opened, errors = _new_page(browser)
    requests = _requests(opened)
    opened.goto(f"{token_server}/")
    opened.wait_for_selector("#token-form:not([hidden])", timeout=SHOWN)
    assert opened.locator("#connection").inner_text() == "needs a token"
    opened.fill("#token-input", "wrong")
    opened.press("#token-input", "Enter")
    opened.wait_for_function(
        "() => document.getElementById('token-said').textContent.includes('refused')"
    )
    assert opened.locator("#token-form").is_visible()
    given_at = len(requests)
    opened.fill("#token-input", TOKEN)
    opened.press("#token-input", "Enter")
    opened.wait_for_selector("#connection.live", timeout=SHOWN)
    result = _run(token_server, "nested", token=TOKEN)
    opened.wait_for_selector(f'#root-list li[data-id="{result["body"]["run_id"]}"]', timeout=SHOWN)
    assert opened.evaluate("location.href") == f"{token_server}/"
    assert opened.locator("#token-form").is_hidden()
    _no_token_in(requests, given_at)
    _closed(context, opened, errors)


# -- the playground ---------------------------------------------------------------------


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _posts(opened: Any) -> list[Any]:
    posts: list[Any] = []
    opened.on("request", lambda r: posts.append(r) if r.method == "POST" else None)
    return posts


def test_a_run_started_from_the_form_streams_into_tree_list_and_timeline(
    page: Any, server: str
) -> None:
    posts = _posts(page)
    page.wait_for_selector('#performer option[value="nested"]', state="attached", timeout=SHOWN)
    page.select_option("#performer", "nested")
    # an agent gets a chat box
    page.fill("#chat-input", "where is the cat, from the form?")
    _shot(page, "1-form")
    page.press("#chat-input", "Enter")
    page.wait_for_function(
        "() => document.getElementById('form-status').textContent.startsWith('started')",
        timeout=SHOWN,
    )
    run_id = page.locator("#form-status").inner_text().removeprefix("started ")
    assert len(posts) == 1
    sent = posts[0]
    assert sent.url.endswith("/runs") and sent.headers["content-type"] == "application/json"
    assert json.loads(sent.post_data) == {
        "performer": "nested",
        "input": {"input": "where is the cat, from the form?"},
        "detached": True,
    }
    # it is selected, and streams into the tree
    page.wait_for_selector(f'#tree > .node[data-id="{run_id}"]', timeout=SHOWN)
    page.wait_for_selector(f'#tree > .node[data-id="{run_id}"].status-ok', timeout=SHOWN)
    assert "Get Items LLM" in _names_under(page, run_id)
    # the list: status, duration, what was asked; searchable
    item = page.locator(f'#root-list li[data-id="{run_id}"]')
    assert "selected" in (item.get_attribute("class") or "")
    assert "status-ok" in (item.get_attribute("class") or "")
    assert item.locator(".preview").first.inner_text() == "where is the cat, from the form?"
    assert item.locator(".dur").inner_text().endswith(("ms", " s"))
    page.fill("#search", "from the form")
    page.wait_for_function("() => document.querySelectorAll('#root-list li').length === 1")
    assert page.locator("#root-list li").get_attribute("data-id") == run_id
    page.fill("#search", "no run says this")
    page.wait_for_selector("#no-match:not([hidden])")
    page.fill("#search", "")
    # the root's totals
    summary = page.locator("#root-summary")
    assert summary.locator(".stat-status b").inner_text() == "ok"
    tokens = summary.locator(".stat-tokens b").inner_text()
    assert int(tokens.split(" ")[0].replace(",", "")) > 0
    assert summary.locator(".stat-model-calls b").inner_text() == "4"
    # a model node: its prompt (folded) and the tool calls it made
    model = page.locator(f'#tree > .node[data-id="{run_id}"] > .children > .node.kind-chat_model')
    assert "where_cat_is_hiding(" in model.first.locator("> .body .calls").inner_text()
    model.first.locator("> .body .prompt > summary").click()
    page.wait_for_selector(".prompt[open] .message.role-user")
    assert "from the form" in model.first.locator(".prompt .message").first.inner_text()
    _shot(page, "2-tree")
    # the timeline: a row a run, bars within the root's span
    page.click("#tab-timeline")
    page.wait_for_selector("#timeline .tl-row[data-id]", timeout=SHOWN)
    rows = page.locator("#timeline .tl-row[data-id]")
    assert rows.count() == page.locator(f'#tree .node[data-id="{run_id}"] .node').count() + 1
    widths = page.eval_on_selector_all(
        "#timeline .tl-bar", "bars => bars.map(b => b.getBoundingClientRect().width)"
    )
    assert all(w > 0 for w in widths)
    root_bar = page.locator("#timeline .tl-row[data-id] .tl-bar").first.bounding_box()
    track = page.locator("#timeline .tl-row[data-id] .tl-track").first.bounding_box()
    assert root_bar is not None and track is not None
    assert root_bar["width"] >= track["width"] * 0.98  # the root spans the whole time
    _shot(page, "3-timeline")
    # the record: readable, local times, raw JSON one click away
    rows.nth(1).click()
    page.wait_for_selector("#details-view .rec-facts", timeout=SHOWN)
    facts = page.locator("#details-view .rec-facts").inner_text()
    assert "started" in facts and "duration" in facts
    assert not any(c.isdigit() and len(c) >= 10 for c in facts.split())  # no epoch floats
    _shot(page, "4-record")
    page.click("#show-raw")
    record = json.loads(page.locator("#details-json").inner_text())
    assert record["start"]["kind"] == "chat_model"
    page.click("#tab-tree")


def test_the_form_refuses_bad_input_before_sending(page: Any, server: str) -> None:
    posts = _posts(page)
    page.wait_for_selector('#performer option[value="add"]', state="attached", timeout=SHOWN)
    page.select_option("#performer", "add")
    # a tool: a field a parameter, its default filled in
    assert page.input_value("#field-b") == "2"
    page.fill("#field-a", "three")
    page.click("#start")
    error = page.locator("#form-error")
    assert error.is_visible() and error.inner_text() == 'input.a: "three" is not a number'
    page.fill("#field-a", "1.5")
    page.click("#start")
    assert error.inner_text() == "input.a: expected integer, got number"
    page.fill("#field-a", "3")
    page.fill("#field-scale", "{by: 2}")
    page.click("#start")
    assert error.inner_text().startswith("input.scale is not JSON: ")
    page.fill("#field-scale", '{"by": "two"}')
    page.click("#start")
    assert error.inner_text() == "input.scale.by: expected number, got string"
    _shot(page, "5-bad-input")
    assert posts == []  # none of these was sent
    # raw JSON: a parse error says so
    page.check("#raw-mode")
    page.fill("#raw-input", '{"a": 1,}')
    page.click("#start")
    assert error.inner_text().startswith("input is not JSON: ")
    page.fill("#raw-input", '{"a": 1, "c": 2}')
    page.click("#start")
    assert error.inner_text() == "input.c: not a field this performer takes"
    assert posts == []
    # good input goes; the run's answer is in the tree
    page.fill("#raw-input", '{"a": 40}')
    page.click("#start")
    page.wait_for_function(
        "() => document.getElementById('form-status').textContent.startsWith('started')",
        timeout=SHOWN,
    )
    assert error.is_hidden()
    run_id = page.locator("#form-status").inner_text().removeprefix("started ")
    page.wait_for_selector(f'#tree > .node[data-id="{run_id}"].status-ok', timeout=SHOWN)
    page.uncheck("#raw-mode")
    # a tool without arguments: a button
    page.select_option("#performer", "now")
    assert page.locator("#fields").inner_text() == "This performer takes no arguments."
    page.click("#start")
    page.wait_for_function(
        "() => document.getElementById('form-status').textContent.startsWith('started')",
        timeout=SHOWN,
    )
    assert json.loads(posts[-1].post_data)["input"] == {}


VALIDATED = [
    # (schema, value, errors)
    ({"type": "string"}, "x", []),
    ({"type": "string"}, 1, ["input: expected string, got integer"]),
    ({"type": "number"}, 1, []),
    ({"type": ["string", "null"]}, None, []),
    ({"enum": ["a", 1]}, 2, ['input: must be one of "a", 1']),
    (
        {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
        {},
        ["input.a: required"],
    ),
    (
        {"type": "object", "additionalProperties": {"type": "integer"}},
        {"x": 1, "y": "2"},
        ["input.y: expected integer, got string"],
    ),
    (
        {"type": "array", "items": {"type": "boolean"}},
        [True, 0],
        ["input[1]: expected boolean, got integer"],
    ),
    (
        {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "minItems": 2},
        ["a"],
        ["input: at least 2 items"],
    ),
    (
        {"anyOf": [{"type": "string"}, {"type": "array"}]},
        3,
        ["input: expected string or array, got integer"],
    ),
    ({}, {"anything": [1]}, []),
]


def test_the_form_s_validator_knows_the_shapes_of_input_schemas(page: Any) -> None:
    page.wait_for_selector('#performer option[value="cat"]', state="attached", timeout=SHOWN)
    for schema, value, errors in VALIDATED:
        said = page.evaluate("([schema, value]) => validate(schema, value)", [schema, value])
        assert said == errors, (schema, value)
    # an agent's own schema: a string, {"input"}, or {"messages"}
    agent = page.evaluate(
        "() => window.__troupe.state.performers.find(p => p.name === 'cat').input_schema"
    )
    assert page.evaluate("s => validate(s, 'hi')", agent) == []
    said = page.evaluate("s => validate(s, {input: 5})", agent)
    assert said == ["input.input: expected string, got integer"]


def test_a_value_is_shown_as_the_run_made_it(page: Any) -> None:
    # A protocol object's tag is left out; a plain dict with a "$type" key of its own
    # comes escaped (schema 7: {"$type": "$dict", "value": {...}}) and is shown as that
    # dict, its "$type" kept, at any depth.
    page.wait_for_selector('#performer option[value="cat"]', state="attached", timeout=SHOWN)
    shown = [
        {"$type": "UserMessage", "content": "hi"},
        {"$type": "$dict", "value": {"$type": "UserMessage", "content": "hi"}},
        {"out": [{"$type": "$dict", "value": {"$type": 5, "m": {"$type": "AgentOutput"}}}]},
        "text",
    ]
    said = [
        json.loads(text) if i < 3 else text
        for i, text in enumerate(page.evaluate("values => values.map(pretty)", shown))
    ]
    assert said == [
        {"content": "hi"},
        {"$type": "UserMessage", "content": "hi"},
        {"out": [{"$type": 5, "m": {}}]},
        "text",
    ]


def test_the_server_s_refusal_is_shown(page: Any, server: str) -> None:
    page.wait_for_selector('#performer option[value="cat"]', state="attached", timeout=SHOWN)
    page.select_option("#performer", "cat")
    page.check("#raw-mode")
    # the schema allows an empty list of messages; the agent does not
    page.fill("#raw-input", '{"messages": []}')
    page.click("#start")
    error = page.locator("#form-error")
    page.wait_for_function(
        "() => document.getElementById('form-error').textContent.includes('refused')",
        timeout=SHOWN,
    )
    said = error.inner_text()
    assert said.startswith("the server refused the run (422): ") and said.endswith("(input)")
    assert "the last of 'messages' must be the user's question" in said
    _shot(page, "6-server-refusal")


def _start_from_form(page: Any, performer: str, text: str) -> str:
    page.wait_for_selector(
        f'#performer option[value="{performer}"]', state="attached", timeout=SHOWN
    )
    page.select_option("#performer", performer)
    page.fill("#chat-input", text)
    before = page.locator("#form-status").inner_text()
    page.click("#start")
    page.wait_for_function(
        "was => { const said = document.getElementById('form-status').textContent;"
        " return said.startsWith('started ') && said !== was; }",
        arg=before,
        timeout=SHOWN,
    )
    run_id: str = page.locator("#form-status").inner_text().removeprefix("started ")
    return run_id


def test_a_model_run_from_the_form_streams_and_can_be_cancelled(page: Any, server: str) -> None:
    posts = _posts(page)
    run_id = _start_from_form(page, "paced", "say 300 words")  # 3 s of tokens
    assert json.loads(posts[0].post_data)["input"] == "say 300 words"  # a model takes text
    root = f'#tree > .node[data-id="{run_id}"]'
    page.wait_for_function(
        "sel => (document.querySelector(sel + ' .text')?.textContent.length ?? 0) > 20",
        arg=root,
        timeout=SHOWN,
    )
    assert page.locator(f"{root}.status-running").count() == 1
    page.click("#cancel-run")
    page.wait_for_selector(f"{root}.status-cancelled", timeout=SHOWN)
    assert page.locator("#cancel-run").is_hidden()
    assert page.locator("#root-summary .stat-status b").inner_text() == "cancelled"
    assert page.locator(f'#root-list li[data-id="{run_id}"] .mark').inner_text() == "■"
    _shot(page, "8-cancelled")


def test_the_chat_box_continues_a_conversation(page: Any, server: str) -> None:
    posts = _posts(page)
    first = _start_from_form(page, "cat", "where is the cat?")
    page.wait_for_selector(f'#tree > .node[data-id="{first}"].status-ok', timeout=SHOWN)
    answer = page.evaluate("id => window.__troupe.state.runs.get(id).output.output", first)
    assert (
        page.locator("#conversation").inner_text().startswith("continuing a conversation of 1 turn")
    )
    second = _start_from_form(page, "cat", "and the dog?")
    assert json.loads(posts[1].post_data)["input"] == {
        "input": "and the dog?",
        "chat_history": [
            {"role": "user", "content": "where is the cat?"},
            {"role": "assistant", "content": answer},
        ],
    }
    page.wait_for_selector(f'#tree > .node[data-id="{second}"].status-ok', timeout=SHOWN)
    prompt = page.locator(f'#tree > .node[data-id="{second}"] .node.kind-chat_model .prompt')
    prompt.first.locator("summary").click()
    page.wait_for_selector(f'#tree > .node[data-id="{second}"] .prompt[open] .message')
    roles = prompt.first.locator(".message .role").all_inner_texts()
    assert [r.lower() for r in roles[:3]] == ["user", "assistant", "user"]
    _shot(page, "9-conversation")
    page.click("#new-conversation")
    assert page.locator("#conversation").inner_text().startswith("a new conversation")
    _start_from_form(page, "cat", "start again")
    assert json.loads(posts[2].post_data)["input"] == {"input": "start again"}


def test_an_error_run_started_from_the_form_is_marked_in_the_list(page: Any, server: str) -> None:
    run_id = _start_from_form(page, "broken", "fall over, please")
    item = page.locator(f'#root-list li[data-id="{run_id}"].status-error')
    item.wait_for(timeout=SHOWN)
    assert item.locator(".mark").inner_text() == "✕"
    assert "the model fell over" in item.locator(".preview.error").inner_text()
    page.fill("#search", "fell over")
    page.wait_for_function(
        "id => [...document.querySelectorAll('#root-list li')].every(li => "
        "li.classList.contains('status-error'))",
        arg=run_id,
    )
    _shot(page, "7-error-in-list")


def test_the_threads_of_a_server_with_a_store(
    browser: Any, server: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    stored = _serve(store=f"sqlite:///{tmp_path_factory.mktemp('store')}/runs.db")
    for question in ("where is the cat?", "and then?"):
        response = httpx.post(
            f"{stored}/runs/wait",
            json={"performer": "cat", "input": question, "thread_id": "kitchen talk"},
            timeout=60,
        )
        assert response.json()["status"] == "ok", response.text
    context, opened, errors = _new_page(browser)
    opened.goto(stored + "/")
    opened.wait_for_selector('#thread-list button[data-id="kitchen talk"]', timeout=SHOWN)
    opened.click('#thread-list button[data-id="kitchen talk"]')
    opened.wait_for_selector("#details-view .message", timeout=SHOWN)
    title = opened.text_content("#details-title")
    said = opened.eval_on_selector_all(
        "#details-view .message.role-user .content", "els => els.map(e => e.textContent)"
    )
    runs = opened.eval_on_selector_all("#details-view .thread-runs li", "els => els.length")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    opened.screenshot(path=str(ARTIFACTS / "thread.png"))
    _closed(context, opened, errors)
    assert title == "Thread kitchen talk"
    assert said == ["where is the cat?", "and then?"]
    assert runs == 2
    # a server without a store shows no threads
    context, opened, errors = _new_page(browser)
    opened.goto(server + "/")
    opened.wait_for_selector("#connection.live", timeout=SHOWN)
    assert opened.is_hidden("#threads")
    _closed(context, opened, errors)


def test_a_click_in_the_list_while_it_is_drawn_again_selects_the_run(
    page: Any, server: str
) -> None:
    """The list of runs is drawn again every second while a run goes on (its
    duration), and on every run's end: it was made anew each time, so a click whose
    press and release came either side of a redraw (a loaded machine, a slow hand)
    pressed one element and released on another, and the browser gave no click. The
    page went on following the newest run (test_big_runs_stay_smooth then waited 60 s
    for a tree the page never showed). The list's items are kept, and changed in place."""
    first = _start(server, "long")
    page.wait_for_selector(f'#root-list li[data-id="{first}"]', timeout=SHOWN)
    box = page.locator(f'#root-list li[data-id="{first}"]').bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    # the list drawn again between the press and the release (as its timer does)
    page.evaluate(
        """() => new Promise((done) => {
            const search = document.getElementById("search");
            search.dispatchEvent(new Event("input"));
            requestAnimationFrame(() => requestAnimationFrame(done));
        })"""
    )
    page.mouse.up()
    assert page.evaluate("window.__troupe.state.follow") is False
    assert page.evaluate("window.__troupe.state.selected") == first
    later = _start(server, "small")  # no longer followed
    page.wait_for_selector(f'#root-list li[data-id="{later}"]', timeout=SHOWN)
    assert page.evaluate("window.__troupe.state.selected") == first


def test_a_page_left_open_keeps_what_the_board_keeps(browser: Any) -> None:
    """A page open on a busy server for days kept every run it was ever sent (its tree,
    text, list item and marks), so it grew without bound, and its timer walked all of
    them every 250 ms. It keeps what the server's board keeps (the board's history of
    root runs, and a tenth more before it forgets), never a run still going nor the one
    selected."""
    server = _serve(history=10)
    context, opened, errors = _new_page(browser)
    opened.goto(server + "/")
    opened.wait_for_selector("#connection.live", timeout=SHOWN)
    first = _run(server, "nested")["body"]
    assert first["status"] == "ok", first
    first_id = first["run_id"]
    opened.wait_for_selector(f'#root-list li[data-id="{first_id}"]', timeout=SHOWN)
    opened.locator(f'#root-list li[data-id="{first_id}"]').click()
    assert opened.evaluate("window.__troupe.state.selected") == first_id
    for n in range(59):
        assert (
            _run(server, "nested" if n % 2 else "add", {"a": n} if n % 2 == 0 else "q")["status"]
            == 200
        )
    going = _start(server, "long")
    opened.wait_for_function(
        "(id) => window.__troupe.state.rootInfo.has(id)", arg=going, timeout=SHOWN
    )
    state = opened.evaluate(
        """() => {
            const s = window.__troupe.state;
            const roots = new Set(s.roots);
            return {
                roots: s.roots.length,
                infos: s.rootInfo.size,
                runs: s.runs.size,
                orphans: [...s.runs.values()].filter((r) => !roots.has(r.root)).length,
                items: document.querySelectorAll("#root-list li").length,
                newest: s.roots[0],
                kept: roots.has(s.selected),
            };
        }"""
    )
    _closed(context, opened, errors)
    assert state["newest"] == going
    assert state["kept"], "the selected run was forgotten"
    assert state["roots"] == state["infos"] <= 20, state
    assert state["items"] <= 20, state
    assert state["orphans"] == 0, state
    assert state["runs"] < 20 * 8, state  # a nested cat agent's tree is a few runs
