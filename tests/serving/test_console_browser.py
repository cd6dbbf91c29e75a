"""The ops console in a real headless Chromium (Debian's `chromium`, driven by Playwright): the decisions people make.

An ops lead signs in, reads a proposal with its backtest charts, approves it, and sees the active
ruleset version change; a data scientist sees the same page with no way to approve, and a forged
form post from their session is refused. A screenshot of the proposal page is kept as an artifact.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from serving.app import create_app
from tests.conftest import bearer
from tests.serving.console_fixtures import console_runtime, file_lane_proposals

CHROMIUM = os.environ.get("RISKROUTE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("RISKROUTE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
NO_CHROMIUM = "the browser test needs Debian's chromium (apt-get install chromium; .ci/run installs it)"

if CHROMIUM is None and os.environ.get("CI"):
    # In CI the browser is provided; its absence is a failure of the set-up, never a reason to skip.
    raise RuntimeError(NO_CHROMIUM)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def live(tmp_path, small_history_dir):
    """The service on a real socket (uvicorn in a thread), over a SQLite database with two pending proposals."""
    from tests.conftest import migrated_sqlite

    database = migrated_sqlite(folder=tmp_path)
    runtime = console_runtime(database=database, tmp_path=tmp_path)
    ids = file_lane_proposals(database=database, history_dir=small_history_dir)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime=runtime), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    tokens = {role: bearer(database, role=role)["Authorization"][7:] for role in ("ops_lead", "data_scientist")}
    yield {"url": f"http://127.0.0.1:{port}", "ids": ids, "tokens": tokens, "runtime": runtime}
    server.should_exit = True
    thread.join(timeout=10)
    database.dispose()


@pytest.fixture()
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


def _sign_in(page, *, url: str, token: str) -> None:
    page.goto(f"{url}/console")
    page.fill("#token", token)
    page.click("button[type=submit]")


def test_an_ops_lead_approves_a_proposal_and_sees_the_active_version_change(live, browser):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    _sign_in(page, url=live["url"], token=live["tokens"]["ops_lead"])
    assert page.get_by_test_id("active-version").inner_text() == "1"
    target = live["ids"][0]
    page.click(f"a[href='/console/proposals/{target}'] >> nth=0")
    assert page.locator("svg.chart").count() == 2
    assert page.get_by_test_id("status").inner_text() == "pending"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-proposal.png"), full_page=True)

    page.fill("#approve-reason", "The lane has been late for two weeks; the backtest holds cost within budget.")
    page.click("[data-testid=approve-form] button[type=submit]")
    assert "is now active" in page.get_by_test_id("done").inner_text()
    assert page.get_by_test_id("status").inner_text() == "applied"
    assert page.get_by_test_id("active-version").inner_text() == "2"
    assert live["runtime"].ruleset_version == 2

    page.click("text=Rulesets")
    assert page.get_by_test_id("active-version").inner_text() == "2"
    assert page.locator("[data-testid=version-2]").count() == 1
    page.click("text=Audit")
    assert "The chain verifies" in page.get_by_test_id("chain").inner_text()


def test_a_data_scientist_cannot_approve(live, browser):
    page = browser.new_page()
    _sign_in(page, url=live["url"], token=live["tokens"]["data_scientist"])
    target = live["ids"][1]
    page.goto(f"{live['url']}/console/proposals/{target}")
    assert "only an ops lead can approve" in page.get_by_test_id("cannot-decide").inner_text()
    assert page.locator("[data-testid=approve-form]").count() == 0
    # A hand-made form post from this session (with its own CSRF token) is refused too.
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    status = page.evaluate(
        """async ([url, csrf]) => {
            const body = new URLSearchParams({csrf, reason: "mine", content_hash: "0".repeat(64)});
            const answer = await fetch(url, {method: "POST", body, redirect: "manual"});
            return answer.status;
        }""",
        [f"{live['url']}/console/proposals/{target}/approve", csrf],
    )
    assert status == 403
    page.reload()
    assert page.get_by_test_id("status").inner_text() == "pending"
