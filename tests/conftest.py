"""Suite-wide rules, and fixtures several test files share.

The crash-safety test (SIGKILL the real daemon mid-playbook, count every run)
may never be skipped: a skip of it, for whatever reason, is reported as a
failure. It was once skipped in silence for a whole restructuring.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from journal_backends import BACKENDS, JournalFactory
from mqtt_broker import Mosquitto
from support import pg_database

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

NEVER_SKIPPED = ("test_crash_safety.py",)
CHROMIUM = "/usr/bin/chromium"  # Debian's; scripts/bootstrap test installs it (no download)
#: How long a browser test awaits a page state (5 s, the default, is short on 2 cores).
WAIT_MS = 30_000


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.path.name in NEVER_SKIPPED:  # an xfail is a skip too
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid} may never be skipped (it was: {report.longrepr})"


@pytest.fixture(params=BACKENDS)
def journal_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JournalFactory]:
    """The test's journal on SQLite, then on PostgreSQL (tests/journal_backends.py)."""
    state_dir = tmp_path / "state"
    if request.param == "sqlite":
        yield JournalFactory("sqlite", state_dir, None)
        return
    with pg_database() as url:  # a private database for the test, dropped after it
        yield JournalFactory("postgresql", state_dir, url)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A private PostgreSQL database for the test module, dropped after it."""
    with pg_database() as url:
        yield url


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private Mosquitto on a free loopback port, for the test."""
    with Mosquitto(tmp_path / "broker") as b:
        yield b


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium through Playwright, for the page tests of a module."""
    from playwright.sync_api import expect, sync_playwright  # only where a page is tested

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[Page]:
    """A fresh tab; its screenshot is saved as ``page.png`` in the test's folder, and an
    error thrown by the page's script fails the test."""
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
