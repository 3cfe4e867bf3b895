"""The operator's page in a real browser (Debian's chromium, driven by Playwright).

Against a real ``batond run`` with an API token: the page starts read-only and
says why; an event opens an incident whose run waits at an approval step; the
operator enters the token once, approves the run with a click, and the page
shows the run resolved with its steps; a silence is created from the incident
(matchers prefilled from its key) and shows up in the silences panel. A
screenshot of the page is saved under the test's temporary folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from daemon_proc import DaemonProcess, write_config
from support import free_port

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"  # Debian's; scripts/bootstrap test installs it (no download)
TOKEN = "page-token-for-tests"
WAIT_MS = 30_000

RULES = """
rules:
  - name: deploy-requested
    description: A deploy request waits for an operator before it runs
    match: {event: deploy.requested}
    group_by: [host]
    severity: warning
    run: gated-deploy
playbooks:
  - name: gated-deploy
    steps:
      - {name: ask, action: approval, with: {text: "deploy?"}, timeout: 5m}
      - {name: deploy, action: exec, with: {argv: [echo, deployed]}, timeout: 10s}
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    folder = tmp_path_factory.mktemp("web")
    port = free_port()
    d = DaemonProcess(write_config(folder, port, rules=RULES, token=TOKEN), port)
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
    finally:
        pg.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        context.close()
    assert errors == [], errors  # the page's script threw


def waiting_run(daemon: DaemonProcess, host: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for run in daemon.get("/api/v1/runs").json()["runs"]:
            if run["key"] == f"host={host}" and run["state"] == "waiting_approval":
                return dict(run)
        return None

    found: dict[str, Any] = daemon.wait_for(find, what=f"a run for {host} waiting for approval")
    return found


def enter_token(page: Page) -> None:
    page.fill("#token-box input[name=token]", TOKEN)
    page.click("#token-box button:has-text('use token')")
    expect(page.locator("#token-state")).to_have_text("token set for this tab")


def test_approve_a_waiting_run_with_a_click(
    daemon: DaemonProcess, page: Page, tmp_path: Path
) -> None:
    daemon.post("/api/v1/events", {"event": "deploy.requested", "host": "web-7"}, token=TOKEN)
    run = waiting_run(daemon, "web-7")
    page.goto(daemon.url + "/")
    row = page.locator(f"[data-run-row='{run['id']}']")
    expect(row).to_contain_text("waiting_approval", timeout=WAIT_MS)
    expect(row).to_contain_text("host=web-7")  # rows say which key they are about
    # without the token the page is read-only and says so, on the page and on the button
    expect(page.locator("#readonly-note")).to_contain_text("Read-only")
    approve = row.locator("button[data-act=approve]")
    expect(approve).to_be_disabled()
    expect(approve).to_have_attribute("title", re.compile("API token"))

    enter_token(page)
    row.locator("a", has_text=f"#{run['id']}").click()
    view = page.locator("#view")
    expect(view).to_have_attribute("data-view", f"run/{run['id']}", timeout=WAIT_MS)
    expect(view.locator("[data-step=ask]")).to_contain_text("waiting_approval")
    view.locator("button[data-act=approve]").click()

    expect(view).to_contain_text("resolved", timeout=WAIT_MS)
    expect(view.locator("[data-step=deploy]")).to_contain_text("deployed")  # stored stdout
    expect(view).to_contain_text("approve")
    expect(page.locator("#toast")).to_contain_text(f"run #{run['id']} approved")
    done = daemon.get(f"/api/v1/runs/{run['id']}").json()
    assert (done["state"], done["outcome"]) == ("done", "resolved")
    assert [a["verdict"] for a in done["approvals"]] == ["approve"]
    # the token was kept for the tab: a reload of the page does not ask again
    page.reload()
    expect(page.locator("#token-state")).to_have_text("token set for this tab")


def test_silence_from_an_incident(daemon: DaemonProcess, page: Page) -> None:
    daemon.post("/api/v1/events", {"event": "deploy.requested", "host": "web-9"}, token=TOKEN)
    run = waiting_run(daemon, "web-9")
    page.goto(daemon.url + "/")
    enter_token(page)
    incident = page.locator(f"#incidents tr[data-incident='{run['incident_id']}']")
    expect(incident).to_contain_text("host=web-9", timeout=WAIT_MS)
    incident.locator("button[data-act=silence]").click()

    dialog = page.locator("#silence-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#silence-matchers")).to_have_value("host=web-9")  # from the key
    page.fill("#silence-duration", "45m")
    page.fill("#silence-reason", "web-9 is being rebuilt")
    page.click("#silence-create")
    expect(dialog).to_be_hidden()

    silences = page.locator("#silences tbody")
    expect(silences).to_contain_text("web-9 is being rebuilt", timeout=WAIT_MS)
    expect(silences).to_contain_text("host=web-9")
    stored = daemon.get("/api/v1/silences").json()["silences"]
    mine = [s for s in stored if s["reason"] == "web-9 is being rebuilt"]
    assert len(mine) == 1
    assert mine[0]["matchers"] == [{"name": "host", "op": "=", "value": "web-9"}]
    assert 44 * 60 < mine[0]["ends_at"] - mine[0]["starts_at"] <= 45 * 60

    # and expire it again from its row
    silences.locator(f"tr[data-silence='{mine[0]['id']}'] button[data-act=expire-silence]").click()
    expect(silences).not_to_contain_text("web-9 is being rebuilt", timeout=WAIT_MS)
    # the waiting run is cancelled from the page: nothing is left waiting
    page.locator(f"[data-run-row='{run['id']}'] summary").click()
    page.locator(f"[data-run-row='{run['id']}'] button[data-act=cancel]").click()
    expect(page.locator(f"[data-run-row='{run['id']}']")).to_contain_text(
        "cancelled", timeout=WAIT_MS
    )


def test_pause_and_resume_from_the_header(daemon: DaemonProcess, page: Page) -> None:
    page.goto(daemon.url + "/")
    enter_token(page)
    page.click("#h-acts button[data-act=pause]")
    expect(page.locator("#h-mode")).to_contain_text("paused", timeout=WAIT_MS)
    assert daemon.get("/api/v1/status").json()["paused"] is True
    page.click("#h-acts button[data-act=resume]")
    expect(page.locator("#h-mode")).not_to_contain_text("paused", timeout=WAIT_MS)
    assert daemon.get("/api/v1/status").json()["paused"] is False
