"""The orchestration examples (rules/examples/*) through the real ``batond run`` against
their stand-in worlds (the try/ folders' world.json on rules/examples/standin.py): the
order and the content of the calls each system received."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daemon_proc import DaemonProcess, write_config
from standin_proc import StandIn
from support import free_port, wait_until

EXAMPLES = Path(__file__).resolve().parent.parent / "rules" / "examples"
ORCHESTRATION = [
    "order-fulfilment",
    "employee-onboarding",
    "traffic-surge",
    "software-update",
    "nightly-backup",
]
WORLD_URL = "http://127.0.0.1:8700"  # where the examples expect their stand-in world


@pytest.mark.parametrize("name", ORCHESTRATION)
def test_batond_check_accepts_the_example(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "batond", "check", str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in done.stdout
    assert (EXAMPLES / name / "README.md").exists()
    assert (EXAMPLES / name / "try" / "world.json").exists()


@dataclass
class Example:
    daemon: DaemonProcess
    world: StandIn
    folder: Path

    def calls(self) -> list[tuple[str, Any]]:
        return [(c["path"], c["json"]) for c in self.world.calls()]

    def post(self, body: dict[str, Any]) -> None:
        assert self.daemon.post("/api/v1/events", body).status == 202

    def ended_runs(self, n: int) -> list[tuple[str, str]]:
        """(playbook, outcome) of the first ``n`` ended runs, oldest first."""

        def ended() -> list[dict[str, Any]]:
            runs = self.daemon.get("/api/v1/runs").json()["runs"]
            done = [r for r in runs if r["outcome"]]
            return done if len(done) >= n else []

        runs = wait_until(ended, within=30, what=f"{n} ended runs")
        return [(r["playbook"], r["outcome"]) for r in sorted(runs, key=lambda r: r["id"])]

    def steps(self, playbook: str) -> list[dict[str, Any]]:
        runs = self.daemon.get("/api/v1/runs").json()["runs"]
        run = next(r for r in runs if r["playbook"] == playbook)
        found: list[dict[str, Any]] = self.daemon.get(f"/api/v1/runs/{run['id']}").json()["steps"]
        return found


@pytest.fixture
def example(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Example]:
    name: str = request.param
    world = StandIn(EXAMPLES / name / "try" / "world.json", tmp_path)
    rules = (EXAMPLES / name / "rules.yaml").read_text()
    rules = rules.replace(WORLD_URL, world.url).replace("/tmp/batond-example", str(tmp_path))
    port = free_port()
    daemon = DaemonProcess(write_config(tmp_path, port, rules=rules), port)
    try:
        daemon.wait_ready()
        yield Example(daemon, world, tmp_path)
    finally:
        daemon.stop()
        world.close()


def event(name: str, file: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((EXAMPLES / name / "try" / file).read_text())
    return found


@pytest.mark.parametrize("example", ["order-fulfilment"], indirect=True)
def test_order_fulfilment_compensates_in_reverse_and_falls_back_to_an_invoice(
    example: Example,
) -> None:
    example.post(event("order-fulfilment", "order.json"))
    assert example.ended_runs(2) == [("fulfil", "failed"), ("fulfil-by-invoice", "resolved")]
    items = [{"sku": "mug", "qty": 2}, {"sku": "tea", "qty": 1}]
    order = "O-1001"
    charge = {"order": order, "amount": 59.9, "method": "card"}
    assert example.calls() == [
        ("/inventory/reserve", {"order": order, "items": items}),
        ("/crm/customers/verify", {"customer": "C-42"}),
        ("/shipping/shipments", {"order": order, "reservation": "R-1", "address": "1 Main St"}),
        ("/payment/charge", charge),
        ("/payment/charge", charge),  # retried once
        ("/shipping/cancel", {"shipment": "S-1"}),  # compensation, in reverse order
        ("/inventory/release", {"reservation": "R-1"}),
        ("/inventory/reserve", {"order": order, "items": items}),  # the alternative
        ("/crm/invoices", {"order": order, "customer": "C-42", "amount": 59.9, "total_items": 3}),
        ("/shipping/shipments", {"order": order, "reservation": "R-2"}),
    ]


@pytest.mark.parametrize("example", ["employee-onboarding"], indirect=True)
def test_onboarding_carries_the_account_id_through_branches_and_each_item(
    example: Example,
) -> None:
    example.post(event("employee-onboarding", "hired.json"))
    assert example.ended_runs(1) == [("onboard", "resolved")]
    account = {"account": "U-100"}
    welcome = (
        "welcome Ann Lee (U-100, ann.lee@example.com): groups dev, oncall; orders IT-1, IT-2, IT-3"
    )
    assert example.calls() == [
        ("/directory/accounts", {"employee": "E-7", "name": "Ann Lee"}),
        ("/mail/mailboxes", {**account, "address": "ann.lee@example.com"}),
        ("/git/users", {**account, "teams": ["dev"]}),  # the engineer's branch
        ("/facilities/badges", {**account, "site": "berlin"}),  # at the office
        ("/it/orders", {**account, "item": "laptop"}),
        ("/it/orders", {**account, "item": "monitor"}),
        ("/it/orders", {**account, "item": "headset"}),
        ("/chat/notify", {"text": welcome}),
    ]
    remote = {"event": "employee.hired", "employee": "E-8", "name": "Bo Chan", "role": "sales"}
    example.post({**remote, "location": "remote", "hardware": ["laptop"]})
    example.ended_runs(2)
    assert [path for path, _ in example.calls()[8:]] == [
        "/directory/accounts", "/mail/mailboxes",
        "/crm/users",  # the sales branch
        "/network/vpn",  # remote: no badge
        "/it/orders", "/chat/notify",
    ]  # fmt: skip
