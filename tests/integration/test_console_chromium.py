"""The web console in a real headless Chromium (Debian's package, driven by Playwright; no
browser is downloaded): a node alone with blocks 0 to 9 shows the missing blocks and a chat
error; as two more nodes join, the same page (not reloaded) shows three peers and full
coverage, then streams a chat reply over the three-node route; the swarm's signpost serves
the same page with its own facts and the swarm only.

Screenshots of each state are kept in ``test-artefacts/console/``."""

import shutil
from pathlib import Path

import pytest

from tests.swarm import NODES_READY_S, node, signpost_and_nodes

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (scripts/setup.sh)")

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artefacts" / "console"
MODEL = "openhydra-smollm2-135m"
TIMING = ["--announce-interval", "1", "--record-ttl", "3", "--default-max-tokens", "24"]
# as the machine's own probe starts it: no first-run UI, no calls to Google's hosts
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UPDATE_S = 60_000  # ms for the page to follow the swarm (records every 1 s, snapshots every 1 s)
REPLY_S = 120_000  # ms for a streamed reply through three CPU nodes


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh --test installs it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def screenshot(page, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def chat(page, text: str) -> None:
    page.fill("#chat-input", text)
    page.click("#chat-send")


def record_reply_growth(page) -> None:
    """Remember every length the reply bubble takes and the longest route shown, as they
    happen: a streamed reply grows in several steps, one sent whole in one."""
    page.evaluate("""() => {
        window.replyLengths = [];
        window.longestRoute = 0;
        new MutationObserver(() => {
            const bubbles = document.querySelectorAll('.message.assistant');
            const last = bubbles[bubbles.length - 1];
            if (last && last.textContent) window.replyLengths.push(last.textContent.length);
            for (const item of document.querySelectorAll('#routes li')) {
                window.longestRoute = Math.max(window.longestRoute, item.querySelectorAll('.hop').length);
            }
        }).observe(document.body, {subtree: true, childList: true, characterData: true});
    }""")


def test_console_follows_the_swarm_and_chats(browser, smollm2_checkpoint, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    with signpost_and_nodes(tmp_path, {"first": "0:10"}, *TIMING) as (signpost, boot, nodes):
        first = nodes["first"]
        page.goto(first.url)

        # alone, the node has no route: the console says which blocks are missing
        page.wait_for_selector("#no-route:not([hidden])", timeout=UPDATE_S)
        assert "blocks 10\u201329" in page.inner_text("#no-route")  # an en dash, as printed
        page.wait_for_selector(f"tr[data-peer='{first.peer_id}']", timeout=UPDATE_S)
        assert "(this node)" in page.inner_text(f"tr[data-peer='{first.peer_id}']")
        page.wait_for_function("document.querySelectorAll('#chat-model option').length > 0")
        chat(page, "Hello?")
        page.wait_for_selector("#chat-error:not([hidden])", timeout=REPLY_S)
        assert "cover all 30 blocks" in page.inner_text("#chat-error")  # the node's 503 no_route
        assert page.locator(".message.assistant.failed").count() == 1
        screenshot(page, "1-no-route")

        # two more nodes join; the open page follows without a reload
        others = [node(tmp_path, name, [boot], "--layers", span, *TIMING).start()
                  for name, span in (("second", "10:20"), ("third", "20:30"))]
        try:
            for proc in others:
                proc.ready(timeout=NODES_READY_S)
            page.wait_for_function("document.querySelectorAll('#peers tbody tr').length === 3",
                                   timeout=UPDATE_S)
            page.wait_for_selector(f".model[data-model='{MODEL}'][data-complete='true']", timeout=UPDATE_S)
            page.wait_for_selector("#no-route[hidden]", state="attached", timeout=UPDATE_S)
            assert "3 peers" in page.inner_text("#peer-count")
            assert page.locator(".cell.c0").count() == 0  # every block has a peer
            chosen = "document.querySelector('#chat-model').selectedOptions[0].text"
            page.wait_for_function(f"{chosen} === '{MODEL}'", timeout=UPDATE_S)  # not "(no route)" now
            screenshot(page, "2-full-coverage")

            record_reply_growth(page)
            chat(page, "Name a colour.")
            page.wait_for_function("document.querySelector('#chat-send').textContent === 'Stop'")
            page.wait_for_function("document.querySelector('#chat-send').textContent === 'Send'",
                                   timeout=REPLY_S)
            reply = page.locator(".message.assistant").last
            assert "failed" not in (reply.get_attribute("class") or "")
            assert reply.inner_text().strip(), "the reply is empty"
            lengths = page.evaluate("window.replyLengths")
            assert len(set(lengths)) >= 2, f"the reply arrived whole, not streamed: {lengths}"
            assert page.evaluate("window.longestRoute") == 3, "the live route was never shown"
            assert page.is_hidden("#chat-error")
            screenshot(page, "3-chat-streamed")

            # the signpost's console: its own facts and the swarm, no chat or earnings
            operator = browser.new_page(viewport={"width": 1280, "height": 900})
            operator.goto(signpost.url)
            operator.wait_for_function("document.querySelectorAll('#peers tbody tr').length === 3",
                                       timeout=UPDATE_S)
            operator.wait_for_selector(f".model[data-model='{MODEL}'][data-complete='true']")
            assert operator.inner_text("#self-title") == "This signpost"
            assert operator.is_hidden("#chat") and operator.is_hidden("#earnings")
            screenshot(operator, "4-signpost")
        finally:
            for proc in others:
                proc.stop()
