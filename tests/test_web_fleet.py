"""The page's Fleet section in a real browser (Debian's chromium, driven by Playwright).

Two real central ``batond run`` instances of one fleet (a real Mosquitto, the machine's
PostgreSQL in a private database): the page of instance A shows both members live and a
partition map whose owners are those of ``GET /api/v1/fleet``; a run A made says on its
row that A ran it; after SIGKILL of instance B the page shows B stale and every partition
owned by A; agents in the answer are listed, a silent one marked stale. On a plain batond
(not a central instance) the section stays hidden. Each test saves a screenshot under its
temporary folder (``page.png``; the failover test also ``page-before-kill.png``).
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from daemon_proc import DaemonProcess, write_config
from mqtt_broker import Mosquitto
from support import free_port, pg_database, wait_until
from test_fleet_central import PARTITIONS, Fleet, balanced, fleet_view, host_in, publish_batch

pytestmark = pytest.mark.slow

FAST = "  heartbeat: 500ms\n  lease: 2s\n"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with pg_database() as database, Mosquitto(tmp_path / "broker") as broker:
        f = Fleet(tmp_path, broker, database, timing=FAST)
        try:
            yield f
        finally:
            f.stop_all()


def expect_owners(page: Page, owners: dict[int, str]) -> None:
    """Every cell of the partition map names the owner ``owners`` gives it."""
    cells = page.locator("#fleet-map [data-partition]")
    expect(cells).to_have_count(PARTITIONS)
    for p in range(PARTITIONS):
        expect(cells.nth(p)).to_have_attribute("data-partition", str(p))
        expect(cells.nth(p)).to_have_attribute("data-owner", owners[p])


def test_the_page_shows_the_fleet_and_its_failover(
    fleet: Fleet, page: Page, tmp_path: Path
) -> None:
    split = fleet.split("ca", "cb")
    a, b = fleet.procs["ca"], fleet.procs["cb"]
    owners = {p: n for n, s in split.items() for p in s}

    def agreed() -> dict[str, Any] | None:  # A's view as of a heartbeat after the split
        view = fleet_view(a, 2)
        return view if view and {int(p): o for p, o in view["owners"].items()} == owners else None

    a.wait_for(agreed, 30, "A's GET /api/v1/fleet to say what PostgreSQL says")
    assert set(owners.values()) == {"ca", "cb"}

    page.goto(a.url + "/")
    section = page.locator("#fleet")
    expect(section).to_be_visible()
    expect(section).to_have_attribute("data-fleet", "central")
    expect(section.locator("[data-fleet-self]")).to_have_text("ca")
    expect(section.locator("[data-fleet-state]")).to_have_text("connected")
    for name in ("ca", "cb"):
        row = section.locator(f"[data-member={name}]")
        expect(row).to_have_attribute("data-live", "true")
        expect(row).to_contain_text("live")
        expect(row).to_contain_text(" ago")  # its last seen
    expect_owners(page, owners)
    mine = section.locator("#fleet-map .pcell.mine")  # A's own partitions are marked
    expect(mine).to_have_count(len(split["ca"]))
    expect(section.locator("#fleet-map .unowned")).to_have_count(0)
    expect(page.locator("#fleet-map-note")).to_have_text("every partition owned")

    # the run's row says which instance ran it (runs.instance, in the run's JSON)
    publish_batch(fleet.broker, host_in(min(split["ca"])), 97.0)
    run = a.wait_for(lambda: next(iter(a.get("/api/v1/runs").json()["runs"]), None), 30, "a run")
    assert run["instance"] == "ca"
    expect(page.locator(f"[data-run-row='{run['id']}'] [data-instance=ca]")).to_be_visible()

    page.screenshot(path=str(tmp_path / "page-before-kill.png"), full_page=True)

    # SIGKILL B: its session ends with it, A takes every partition; the page follows
    b.signal(signal.SIGKILL)
    b.proc.wait()
    wait_until(lambda: balanced(fleet, {"ca"}), 30, "A to own every partition")
    gone = section.locator("[data-member=cb]")
    expect(gone).to_have_attribute("data-live", "false")
    expect(gone).to_contain_text("stale")
    expect_owners(page, dict.fromkeys(range(PARTITIONS), "ca"))
    expect(mine).to_have_count(PARTITIONS)
    expect(page.locator("#fleet-map-note")).to_have_text("every partition owned")
    after = a.get("/api/v1/fleet").json()  # the page said what the API says
    assert set(after["owners"].values()) == {"ca"} and after["unowned"] == []
    assert {m["instance"]: m["live"] for m in after["members"]} == {"ca": True, "cb": False}

    # agents are drawn when the answer lists them: A's real answer with two added, one
    # fresh and one silent for ten batch intervals (the agents table is another change's),
    # and an unowned partition (in a real fleet only for the moment of a takeover)
    def with_agents(route: Route) -> None:
        answer = route.fetch().json()
        now = time.time()
        web = {"host": "web-1", "partition": 3, "last_seen": now, "seq": 41}
        db = {"host": "db-1", "partition": 5, "last_seen": now - 100, "seq": 7}
        answer["agents"] = [{**web, "labels": {"role": "web"}}, {**db, "labels": {}}]
        answer["agent_count"] = 3
        del answer["owners"]["4"]
        answer["unowned"] = [4]
        route.fulfill(json=answer)

    page.route("**/api/v1/fleet", with_agents)
    agents = page.locator("#fleet-agents")
    expect(agents.locator("[data-agent=web-1]")).to_have_attribute("data-stale", "false")
    expect(agents.locator("[data-agent=web-1]")).to_contain_text("role=web")
    expect(agents.locator("[data-agent=web-1]")).to_contain_text("ca")  # its partition's owner
    expect(agents.locator("[data-agent=db-1]")).to_have_attribute("data-stale", "true")
    expect(agents.locator("[data-agent=db-1]")).to_contain_text("stale")
    expect(page.locator("#fleet-agents-note")).to_have_text(
        "the 2 most recently seen of 3, 1 of these stale"
    )
    unowned = page.locator("#fleet-map [data-partition='4']")
    expect(unowned).to_have_class(re.compile(r"\bunowned\b"))
    expect(unowned).to_have_attribute("data-owner", "")
    expect(page.locator("#fleet-map .unowned")).to_have_count(1)
    expect(page.locator("#fleet-map-note")).to_have_text("1 unowned: 4")


def test_no_fleet_section_on_a_plain_batond(tmp_path: Path, page: Page) -> None:
    port = free_port()
    plain = DaemonProcess(write_config(tmp_path, port), port)
    try:
        plain.wait_ready()
        assert plain.get("/api/v1/fleet").status == 404
        page.goto(plain.url + "/")
        section = page.locator("#fleet")
        # awaited: the section is hidden because the fleet was asked for and answered 404
        expect(section).to_have_attribute("data-fleet", "none")
        expect(section).to_be_hidden()
        # a 404 is no failed request: the page counts none
        expect(page.locator("#refreshed")).to_have_text(re.compile(r"^updated "))
    finally:
        plain.stop()
