"""End to end in a real headless Chromium: start the app on a loopback port, pick a test user, generate with the
embedded model, watch the text stream into both columns, then see the matched lists and the genre figure; then
stop a long answer while it streams. Then five browser sessions at once on one app, each a different user, all
generating: each shows its own answers, and a new session's page still opens while they run.

Needs Debian's `chromium` (/usr/bin/chromium) and the `playwright` Python package (its own browser download is not
used). The screenshot is left in artifacts/e2e-recommend.png.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dualrec.app.recordings import RecordingStore
from dualrec.data.dataset import load_dataset
from tests.loopback import CHROMIUM, free_port, launch_chromium

ROOT = Path(__file__).resolve().parents[1]
ARTIFACT = ROOT / "artifacts" / "e2e-recommend.png"
WAIT_MS = 300_000  # the embedded model on a busy 2-core machine

pytestmark = [pytest.mark.slow, pytest.mark.llm]  # the app generates with the embedded model


def wait_healthy(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, "the Streamlit server exited"
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no healthy Streamlit server at {url}")


@pytest.fixture
def app_url(ml_dir, tiny_lstm_dir, tmp_path):
    """The app served from this checkout on a free loopback port, with a tiny LSTM trained on the fixture."""
    home = tmp_path / "home"
    shutil.copytree(tiny_lstm_dir, home / "models" / "lstm")
    port = free_port()
    env = os.environ | {"DUALREC_HOME": str(home), "DUALREC_DATA_DIR": str(ml_dir)}
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
    ]
    with open(tmp_path / "streamlit.log", "w") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server)
        yield url
    finally:
        server.terminate()
        server.wait(30)


def column_statuses(page) -> list[str]:
    captions = page.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
    return [c for c in captions if c.startswith(("waiting", "generating", "done in", "finished"))]


def test_generate_in_a_real_browser(app_url, ml_dir):
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    user = int(load_dataset(ml_dir).split_users["test"][1])
    with playwright.sync_playwright() as driver:
        browser = launch_chromium(driver)
        page = browser.new_page(viewport={"width": 1500, "height": 3400})
        page.set_default_timeout(WAIT_MS)
        open_user(page, app_url, user, max_new_tokens=40)
        page.get_by_role("button", name="Generate").click()

        streamed: dict[int, set[str]] = {0: set(), 1: set()}  # per column, the "generating… N tokens" states seen
        deadline = time.monotonic() + WAIT_MS / 1000
        while time.monotonic() < deadline:
            statuses = column_statuses(page)
            for column, status in enumerate(statuses[:2]):
                if status.startswith("generating"):
                    streamed[column].add(status.split(" · ")[0])
            if len(statuses) == 2 and all(s.startswith("done in") for s in statuses):
                break
            page.wait_for_timeout(100)
        assert all(s.startswith("done in") for s in column_statuses(page)), column_statuses(page)
        assert all(streamed.values()), f"each column should show its answer while it streams: {streamed}"
        assert len(streamed[0] | streamed[1]) >= 3, f"token counts should grow while streaming: {streamed}"

        # each column's matched list (or its "no title" note), once the page has drawn both after the answers ended
        answered = page.get_by_text("Matched movies").or_(page.get_by_text("No recognisable movie title"))
        playwright.expect(answered).to_have_count(2, timeout=60_000)
        assert page.locator(".js-plotly-plot").count() >= 2  # the LSTM's top-k and the genre overlap
        page.wait_for_timeout(1500)  # let plotly finish drawing
        ARTIFACT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACT), full_page=True)
        print(f"screenshot: {ARTIFACT}")
        # one genre-overlap chart once the page's last run has ended (a run in flight may still show the stale one)
        playwright.expect(page.get_by_text("Genre profile: history vs LSTM pick")).to_have_count(1)

        tokens = page.get_by_label("Max new tokens")
        tokens.fill("400")  # a long answer, stopped while it streams
        tokens.press("Enter")
        page.wait_for_timeout(1500)
        page.get_by_role("button", name="Generate").click()
        page.get_by_text("generating…").first.wait_for()
        page.locator(".st-key-stop button").click()  # the generation's Stop (the hybrid view has one too)
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=stCaptionContainer]')].filter(c => "
            "/^stop/.test(c.innerText)).length == 2"
        )
        assert all(s.startswith("stop") for s in column_statuses(page)), column_statuses(page)
        browser.close()


SESSIONS = 5


def letters(text: str) -> str:
    """A text's letters only: an answer as recorded and as the page renders its markdown (numbers, marks and spacing
    differ) compare equal."""
    return re.sub(r"[^a-z]+", "", text.lower())


def open_user(page, url: str, user: int, max_new_tokens: int = 24) -> None:
    """A session on the Recommend page with `user`'s history, its LSTM pick shown and short answers set."""
    page.goto(url)
    page.get_by_role("button", name="Generate").wait_for()
    box = page.get_by_label("User id")
    box.fill(str(user))
    box.press("Enter")
    page.get_by_text(f"User {user}:").wait_for()
    page.get_by_text("LSTM top-1").wait_for()
    page.get_by_text("Generation settings").click()
    tokens = page.get_by_label("Max new tokens")
    tokens.fill(str(max_new_tokens))
    tokens.press("Enter")
    page.wait_for_timeout(1500)


def test_five_sessions_generate_at_once_each_with_its_own_answers(app_url, ml_dir, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    users = [int(u) for u in load_dataset(ml_dir).split_users["test"][:SESSIONS]]
    with playwright.sync_playwright() as driver:
        browser = launch_chromium(driver)
        pages = [browser.new_context(viewport={"width": 1500, "height": 3400}).new_page() for _ in users]
        for page, user in zip(pages, users):
            page.set_default_timeout(WAIT_MS)
            open_user(page, app_url, user)
        for page in pages:
            page.get_by_role("button", name="Generate").click()

        late = browser.new_context().new_page()  # a sixth visitor while the five generate: the page still opens
        started = time.monotonic()
        late.goto(app_url)
        late.get_by_text("5 · Genre overlap").wait_for(timeout=WAIT_MS)
        busy = sum(any(s.startswith(("waiting", "generating")) for s in column_statuses(page)) for page in pages)
        print(f"a new session's page drawn in {time.monotonic() - started:.1f} s while {busy} sessions were generating")

        for page in pages:
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-testid=stCaptionContainer]')].filter(c => "
                "/^done in/.test(c.innerText)).length == 2"
            )
        store = RecordingStore(tmp_path / "home" / "recordings")
        recorded = {(letters(r.prompt), r.settings["seed"]): r.answer for r in store.all()}
        prompts = [letters(page.locator('[data-testid="stCode"]').first.inner_text()) for page in pages]
        assert len(set(prompts)) == SESSIONS and len(recorded) == 2 * SESSIONS, "each user's own prompt, answered once a column"
        for page, user, prompt in zip(pages, users, prompts):
            assert page.get_by_text(f"User {user}:").count() == 1
            for seed, label in enumerate("AB"):  # each column shows the answer recorded for its own session's prompt
                shown = letters(page.locator(f".st-key-answer-{label}").inner_text())
                assert shown and shown == letters(recorded[(prompt, seed)]), f"user {user}, column {label}"
        browser.close()
