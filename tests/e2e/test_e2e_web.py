"""The web UI in a real browser (Playwright driving Debian's Chromium) on the
real stack: the server with the vLLM CPU engine, a Celery worker on the
embedded broker, Qdrant local mode, as ``make run`` starts them.

The journey: sign in, upload a document, watch its job finish, ask about it,
see the answer stream, open the citation and its highlighted passage, give a
thumbs-down with a correction, find it as an admin in the traces browser and
the review queue; a user of another group then does not see the document's
content. Every main view passes axe-core (no serious or critical violation)
at desktop and phone width; HTML in answers and passages shows as text; the
pages load nothing from outside this server and break no CSP rule.
Screenshots of each step go to tests/e2e/artifacts/ (ignored by git); with
SIROCCO_UPDATE_DOCS_IMG=1 the chat with an open source also refreshes
docs/img/chat-with-source.png (the README's picture).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.e2e.conftest import REPO, Server, running_stack
from tests.support import need_module, unavailable

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
AXE = REPO / "web" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = REPO / "tests" / "e2e" / "artifacts"
DOCS_IMG = REPO / "docs" / "img" / "chat-with-source.png"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1360, "height": 860}

HARBOR = """# Harbor project

The Harbor project moves the warehouse scanners to the new network.

## Codes

The Harbor project code is HB-2231. Put this code on every purchase order.
"""
QUESTION = "What is the Harbor project code?"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    need_module("playwright.sync_api")
    if not CHROMIUM.exists():
        unavailable("chromium is not installed at /usr/bin/chromium (apt-get install chromium; "
                    "make test does)")
    if not (REPO / "web" / "dist" / "index.html").exists() or not AXE.exists():
        unavailable("the web UI is not built: run `make web`")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running_stack(tmp_path_factory.mktemp("e2e-web"), worker=True) as server:
        yield server


@pytest.fixture(scope="module")
def keys(stack: Server) -> dict[str, str]:
    return {"ana": stack.new_key("--user", "ana", "--groups", "eng"),
            "bob": stack.new_key("--user", "bob", "--groups", "sales"),
            "root": stack.new_key("--user", "root", "--admin")}


@pytest.fixture(scope="module")
def browser(stack: Server) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--headless", "--no-sandbox"])
        yield browser
        browser.close()


class Watched:
    """A page whose CSP violations, script errors and requests to other hosts
    are recorded, to be asserted empty at the end."""

    def __init__(self, browser: Any, base: str, viewport: dict[str, int],
                 headers: dict[str, str] | None = None) -> None:
        self.context = browser.new_context(viewport=viewport, extra_http_headers=headers or {},
                                           permissions=["clipboard-read", "clipboard-write"])
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.base = base
        self.problems: list[str] = []
        self.external: list[str] = []
        host = urlparse(base).netloc

        def route(r: Any) -> None:
            if urlparse(r.request.url).netloc not in (host, ""):
                self.external.append(r.request.url)
                r.abort()
            else:
                r.continue_()

        self.context.route("**/*", route)
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(m.text))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))

    def shot(self, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=False)
        return path

    def axe(self, view: str) -> None:
        """No serious or critical axe-core violation on the page as it is now."""
        if not self.page.evaluate("() => typeof window.axe !== 'undefined'"):
            self.page.evaluate(AXE.read_text())  # through DevTools: the page's CSP stays on
        found = self.page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
            ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
            " nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))")
        bad = [v for v in found if v["impact"] in ("serious", "critical")]
        assert bad == [], f"axe on {view}: {json.dumps(bad, indent=1)}"

    def check_clean(self) -> None:
        csp = [p for p in self.problems if "Content Security Policy" in p]
        assert csp == [], csp
        assert [p for p in self.problems if p.startswith("page error")] == []
        assert self.external == [], f"requests outside this server: {self.external}"

    def close(self) -> None:
        self.context.close()


def sign_in(w: Watched, key: str, user: str) -> None:
    page = w.page
    page.goto(w.base + "/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_test_id("who").get_by_text(user, exact=True).wait_for()


def sign_out(w: Watched) -> None:
    w.page.get_by_role("button", name="Sign out").click()
    w.page.get_by_label("API key").wait_for()
    assert w.page.evaluate("() => sessionStorage.length") == 0


def ask(w: Watched, question: str, *, streamed: bool = True) -> Any:
    """Ask in the chat view (Enter sends); returns the new answer's locator once
    it is done, after checking that it streamed: the Stop button showed while
    text arrived (``streamed=False`` for an answer a test stubs in at once)."""
    page = w.page
    before = page.get_by_test_id("answer").count()
    box = page.get_by_label("Your question")
    box.fill(question)
    box.press("Enter")
    if streamed:
        page.get_by_role("button", name="Stop").wait_for(state="visible")
    answer = page.get_by_test_id("answer").nth(before)
    page.get_by_role("button", name="Send").wait_for(state="visible", timeout=180_000)
    assert answer.locator(".md").inner_text().strip(), "an empty answer"
    return answer


def test_journey_upload_ask_cite_correct_review(stack: Server, keys: dict[str, str],
                                                browser: Any, tmp_path: Path) -> None:
    w = Watched(browser, stack.base_url, DESKTOP)
    page = w.page
    page.goto(stack.base_url + "/")
    page.get_by_label("API key").wait_for()
    w.axe("sign-in")
    w.shot("01-sign-in")
    # A wrong key is refused in words, and not kept.
    page.get_by_label("API key").fill("sk-sirocco-not-a-key")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").get_by_text("invalid API key").wait_for()
    sign_in(w, keys["ana"], "ana")
    assert page.get_by_test_id("who").inner_text().count("eng") == 1
    stored = page.evaluate("() => Object.values(sessionStorage)")
    assert stored == [keys["ana"]]
    w.axe("chat (empty)")
    w.shot("02-chat-empty")

    # Upload to the user's groups and watch the job finish.
    page.get_by_role("link", name="Documents").click()
    doc = tmp_path / "harbor.md"
    doc.write_text(HARBOR)
    page.locator("#files").set_input_files(str(doc))
    page.get_by_text("harbor.md").wait_for()
    assert page.get_by_label("My groups").is_checked()
    page.get_by_role("button", name=re.compile("^Upload 1 file")).click()
    job = page.get_by_test_id("job").first
    job.wait_for()
    w.shot("03-upload-job-running")
    page.locator('[data-testid="job"][data-state="done"]').wait_for(timeout=240_000)
    assert "ready" in job.inner_text() and "100%" in job.inner_text()
    page.get_by_role("button", name="Refresh").click()
    page.get_by_role("cell", name="Harbor project").wait_for()
    w.axe("documents")
    w.shot("04-upload-job-done")

    # Ask about it: the answer streams, its citation opens the passage.
    page.get_by_role("link", name="Chat").click()
    answer = ask(w, QUESTION)
    chip = answer.get_by_role("button", name=re.compile(r"Open source \d+: Harbor project"))
    chip.first.click()
    passage = page.get_by_test_id("passage")
    passage.wait_for()
    passage.get_by_text("HB-2231").first.wait_for()
    assert "harbor.md" in passage.inner_text()
    # The supporting span (or, for an inferred citation, the located one) is
    # highlighted, and the citation says which it is.
    assert passage.locator("mark").count() >= 1
    assert passage.locator("mark").first.inner_text().strip()
    label = chip.first.get_attribute("aria-label") or ""
    kind = re.search(r"\((supported|not supported|inferred)\)$", label)
    assert kind, label
    assert passage.locator(".why").inner_text().startswith(kind.group(1))
    w.axe("chat with an open source")
    path = w.shot("05-chat-with-source")
    if os.environ.get("SIROCCO_UPDATE_DOCS_IMG"):
        DOCS_IMG.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG)

    # Thumbs down with a reason and a correction.
    answer.get_by_role("button", name="Not helpful").click()
    answer.get_by_label("What was wrong? (optional)").select_option("Wrong source cited")
    answer.get_by_label("Correct this answer").check()
    correction = "The Harbor project code is HB-2231 (see the Codes section)."
    answer.get_by_label("The answer as it should be").fill(correction)
    answer.get_by_role("button", name="Send feedback").click()
    answer.get_by_text("your correction goes to the reviewers").wait_for()
    w.shot("06-feedback")

    # Follow-up in the same conversation, then rename it.
    ask(w, "Where do I put that code?")
    conv = page.get_by_role("complementary", name="Conversations")
    conv.get_by_role("button", name=re.compile("^Rename")).first.click()
    conv.get_by_label("New title").fill("Harbor codes")
    conv.get_by_role("button", name="Save").click()
    conv.get_by_role("button", name="Harbor codes", exact=True).wait_for()
    w.check_clean()
    sign_out(w)

    # The admin finds the thumbs-down in the traces browser, and the correction
    # in the review queue.
    sign_in(w, keys["root"], "root")
    page.get_by_role("link", name="Traces").click()
    page.get_by_label("Feedback").select_option("-1")
    page.get_by_role("button", name="Filter").click()
    rows = page.get_by_test_id("traces").locator("tbody tr")
    # The unfiltered list shows first and the filtered one replaces it: wait for
    # the table to settle on the one thumbs-down trace (expect retries).
    from playwright.sync_api import expect
    expect(rows).to_have_count(1, timeout=15_000)
    rows.filter(has_text=QUESTION).first.wait_for()
    rows.first.get_by_role("button", name=QUESTION).click()
    trace = page.get_by_test_id("trace")
    trace.get_by_text(correction).wait_for()
    assert trace.get_by_role("heading", name="Retrieval").is_visible()
    assert trace.locator("meter").count() >= 1  # timing spans
    w.axe("traces")
    w.shot("07-admin-trace")
    page.get_by_role("link", name="Review").click()
    page.get_by_text(correction).wait_for()
    w.axe("review")
    w.shot("08-review-queue")
    w.check_clean()
    sign_out(w)

    # Bob (group sales) sees neither the document nor its content.
    sign_in(w, keys["bob"], "bob")
    answer = ask(w, QUESTION)
    assert "HB-2231" not in answer.inner_text()
    assert answer.get_by_role("button", name=re.compile("Harbor project")).count() == 0
    page.get_by_role("link", name="Documents").click()
    page.get_by_role("heading", name="Documents you can search").wait_for()
    page.get_by_role("cell", name="Zephyr").first.wait_for()
    assert page.get_by_role("cell", name="Harbor project").count() == 0
    w.shot("09-other-group")
    w.check_clean()
    w.close()


VIEWS = ["Chat", "Documents", "Traces", "Review", "Export", "Jobs", "API keys"]


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_every_main_view_passes_axe(stack: Server, keys: dict[str, str], browser: Any,
                                    size: str) -> None:
    w = Watched(browser, stack.base_url, DESKTOP if size == "desktop" else PHONE)
    sign_in(w, keys["root"], "root")
    for view in VIEWS:
        w.page.get_by_role("link", name=view, exact=True).click()
        w.page.get_by_role("heading", level=1).first.wait_for()
        w.page.wait_for_load_state("networkidle")
        w.axe(f"{view} ({size})")
        w.shot(f"view-{size}-{view.lower().replace(' ', '-')}")
    if size == "phone":
        # The chat at phone width: nothing wider than the screen.
        w.page.get_by_role("link", name="Chat", exact=True).click()
        answer = ask(w, "What is the Zephyr project code?")
        answer.get_by_role("button", name=re.compile(r"^Open source \d+")).first.click()
        w.page.get_by_test_id("passage").get_by_text("ZX-4471").first.wait_for()
        assert w.page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
        w.axe("chat with sources (phone)")
        w.shot("10-phone-chat")
    w.check_clean()
    w.close()


def test_html_in_answers_and_passages_is_shown_as_text(stack: Server, keys: dict[str, str],
                                                       browser: Any) -> None:
    """The model or a document may contain HTML: it must never run or render.
    The answer is stubbed (the small model cannot be made to write HTML or call
    a side-effect tool on demand); the API side of both is unit-tested."""
    evil = '<script>window.__owned = 1</script><img src=x onerror="window.__owned = 2">'
    chunk = "0c1f5e8a-6b2d-5f3e-9a7c-1d2e3f4a5b6c"
    citation = {"n": 1, "chunk_id": chunk, "doc_id": "d1", "title": "Evil <b>doc</b>",
                "source": "evil.md", "page": None, "start_char": 0, "end_char": len(evil),
                "snippet": evil, "score": 0.9, "chunk_ids": [chunk], "inferred": False,
                "supported": True, "support": 1.0, "snippet_start": 0, "snippet_end": 8,
                "claims": []}
    pending = {"id": "call1", "name": "create_ticket", "pending_id": "p1",
               "arguments": json.dumps({"title": "Printer <img src=x onerror=alert(1)>"})}
    frames = [{"type": "delta", "text": f"Here: {evil} **bold** [1]"},
              {"type": "tool_pending", "tool_calls": [pending], "trace_id": None},
              {"type": "done", "citations": [citation], "sources": [citation],
               "trace_id": None, "conversation_id": "c1"}]
    decided = {"id": "p1", "trace_id": None, "name": "create_ticket",
               "arguments": pending["arguments"], "status": "done",
               "result": json.dumps({"ticket": "IT-1042"}),
               "created_at": "2026-12-05T10:00:00Z", "decided_at": "2026-12-05T10:00:09Z"}
    approvals: list[Any] = []
    body = "".join(f"data: {json.dumps(f)}\n\n" for f in frames) + "data: [DONE]\n\n"
    passage = {"doc_id": "d1", "title": "Evil <b>doc</b>", "source": "evil.md", "page": None,
               "start_char": 0, "end_char": len(evil), "text": evil, "headings": [],
               "parts": [{"chunk_id": chunk, "offset": 0, "start_char": 0,
                          "end_char": len(evil), "page": None}]}
    w = Watched(browser, stack.base_url, DESKTOP)
    sign_in(w, keys["ana"], "ana")
    w.page.route("**/api/chat", lambda r: r.fulfill(
        status=200, body=body, headers={"content-type": "text/event-stream"}))
    w.page.route("**/api/tool-calls/p1", lambda r: (approvals.append(r.request.post_data_json),
                                                   r.fulfill(status=200, body=json.dumps(decided),
                                                             content_type="application/json")))
    w.page.route("**/api/documents/d1/passage*", lambda r: r.fulfill(
        status=200, body=json.dumps(passage), headers={"content-type": "application/json"}))
    answer = ask(w, "Show me something dangerous", streamed=False)
    text = answer.locator(".md").inner_text()
    assert "<script>window.__owned = 1</script>" in text and "onerror=" in text
    assert answer.locator(".md strong").inner_text() == "bold"  # markdown still renders
    assert answer.locator(".md script, .md img").count() == 0
    answer.locator("a.cite").first.click()
    shown = w.page.get_by_test_id("passage")
    shown.get_by_text("onerror=").first.wait_for()
    assert shown.locator("script, img, b").count() == 0
    assert "Evil <b>doc</b>" in shown.inner_text()
    assert shown.locator("mark").first.inner_text() == "<script>"
    # The pending tool call: a card to confirm, its arguments shown as text.
    card = answer.get_by_role("region", name="Confirm create_ticket")
    assert "onerror=alert(1)" in card.inner_text() and card.locator("img").count() == 0
    w.shot("11-html-as-text")
    card.get_by_role("button", name="Confirm").click()
    card.get_by_text("Status: done").wait_for()
    assert "IT-1042" in card.inner_text() and approvals == [{"approve": True}]
    assert w.page.evaluate("() => window.__owned") is None
    w.check_clean()
    w.close()


def test_api_docs_load_offline(stack: Server, keys: dict[str, str], browser: Any) -> None:
    """/docs renders Swagger UI from this server alone (the key in a header, as a
    proxy or browser extension would send it)."""
    w = Watched(browser, stack.base_url, DESKTOP,
                headers={"Authorization": f"Bearer {keys['root']}"})
    w.page.goto(stack.base_url + "/docs")
    w.page.get_by_role("heading", name=re.compile("Sirocco")).first.wait_for()
    w.page.get_by_text("/api/documents/{doc_id}/passage").first.wait_for()
    w.shot("12-api-docs")
    assert w.external == []
    assert [p for p in w.problems if "Content Security Policy" in p] == []
    w.close()
