"""The operator's page in a real browser (Debian's chromium, driven by Playwright).

One real ``batond run`` with an API token serves the whole module (each test uses keys
of its own). Every lever is clicked on the page and its effect asserted twice: on what
the page shows and on the daemon's state through the API: approve, deny and cancel a
run (waiting or running), silence from an incident (matchers prefilled from its rule and
key) and expire the silence, pause and resume, reset an open circuit, close an incident,
run a playbook by hand with a param and re-run it with the same params. Without the
token every lever is disabled and says why; the token is kept for the tab only. The
incident view shows a suppressed decision's reason; the run view a step's rendered
(redacted) arguments and the steps not reached; charts draw % and GiB axes, the
anomaly score and a rule's threshold. Each test saves a screenshot of the page under
its temporary folder (``page.png``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from daemon_proc import DaemonProcess, http, write_config
from support import free_port

pytestmark = pytest.mark.slow

TOKEN = "page-token-for-tests"

RULES = """
rules:
  - name: deploy-requested
    description: A deploy request waits for an operator before it runs
    match: {event: deploy.requested}
    group_by: [host]
    severity: warning
    run: gated-deploy
  - name: long-job
    description: A job long enough to be cancelled while it runs
    match: {event: job.long}
    group_by: [host]
    run: slow-job
  - name: flaky-fix
    description: A fix that always fails; one run per host an hour, then the circuit opens
    match: {event: service.flaky}
    group_by: [host]
    limits: {per_target: {count: 1, per: 1h}}
    run: failing-fix
  - name: report-requested
    match: {event: report.requested}
    run: report
  - name: check-failed
    match: {event: check.failed}
    group_by: [host]
    limits: {blast_radius: false}  # the module's other tests have acted on many hosts
    run: probe-and-fix
  - name: disk-almost-full
    match: {metric: disk_used_percent, role: chart}
    when: value > 90
    group_by: [host]
    run: report
playbooks:
  - name: gated-deploy
    steps:
      - {name: ask, action: approval, with: {text: "deploy?"}, timeout: 5m}
      - {name: deploy, action: exec, with: {argv: [echo, deployed]}, timeout: 10s}
  - name: slow-job
    steps:
      - {name: work, action: exec, with: {argv: [sleep, "300"]}, timeout: 10m}
  - name: failing-fix
    steps:
      - {name: fix, action: exec, with: {argv: ["false"]}, timeout: 10s}
  - name: probe-and-fix
    steps:
      - name: probe
        action: exec
        with:
          argv: [echo, "probing {{ labels.host }}"]
          env: {API_TOKEN: "not-for-the-page"}
        timeout: 10s
      - {name: fix, action: exec, with: {argv: ["false"]}, timeout: 10s}
      - {name: confirm, action: exec, with: {argv: [echo, confirmed]}, timeout: 10s}
  - name: report
    params: {n: 1}
    steps:
      - {name: write, action: exec, with: {argv: [echo, "report {{ params.n }}"]}, timeout: 10s}
"""
# scores the chart test's series (role=chart), not the host's own samples
MODELS = """
models:
  - name: chart
    match: {metric: [disk_used_percent, backup_size_bytes, net_sent_bytes_per_s], role: chart}
    warmup: 10
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    folder = tmp_path_factory.mktemp("web")
    port = free_port()
    (folder / "models").mkdir()
    (folder / "models" / "chart.yaml").write_text(MODELS.lstrip())
    d = DaemonProcess(write_config(folder, port, rules=RULES, token=TOKEN), port)
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()


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
    expect(row).to_contain_text("waiting_approval")
    expect(row).to_contain_text("host=web-7")  # rows say which key they are about
    # the approval gate is drawn as waiting, in the waiting colour of the legend
    gate = row.locator("svg rect[style*='--wait']")
    expect(gate).to_have_count(1)
    expect(gate.locator("title")).to_contain_text("ask (approval) attempt 1: waiting for approval")
    # without the token the page is read-only and says so, on the page and on the button
    expect(page.locator("#readonly-note")).to_contain_text("Read-only")
    approve = row.locator("button[data-act=approve]")
    expect(approve).to_be_disabled()
    expect(approve).to_have_attribute("title", re.compile("API token"))

    enter_token(page)
    row.locator("a", has_text=f"#{run['id']}").click()
    view = page.locator("#view")
    expect(view).to_have_attribute("data-view", f"run/{run['id']}")
    expect(view.locator("[data-step=ask]")).to_contain_text("waiting_approval")
    view.locator("button[data-act=approve]").click()

    expect(view).to_contain_text("resolved")
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
    expect(incident).to_contain_text("host=web-9")
    incident.locator("button[data-act=silence]").click()

    dialog = page.locator("#silence-dialog")
    expect(dialog).to_be_visible()
    # from the incident's rule and key
    expect(page.locator("#silence-matchers")).to_have_value("rule=deploy-requested, host=web-9")
    page.fill("#silence-duration", "45m")
    page.fill("#silence-reason", "web-9 is being rebuilt")
    page.click("#silence-create")
    expect(dialog).to_be_hidden()

    silences = page.locator("#silences tbody")
    expect(silences).to_contain_text("web-9 is being rebuilt")
    expect(silences).to_contain_text("host=web-9")
    stored = daemon.get("/api/v1/silences").json()["silences"]
    mine = [s for s in stored if s["reason"] == "web-9 is being rebuilt"]
    assert len(mine) == 1
    assert mine[0]["matchers"] == [
        {"name": "rule", "op": "=", "value": "deploy-requested"},
        {"name": "host", "op": "=", "value": "web-9"},
    ]
    assert 44 * 60 < mine[0]["ends_at"] - mine[0]["starts_at"] <= 45 * 60

    # and expire it again from its row
    silences.locator(f"tr[data-silence='{mine[0]['id']}'] button[data-act=expire-silence]").click()
    expect(silences).not_to_contain_text("web-9 is being rebuilt")
    expect(page.locator("#toast")).to_contain_text(f"silence #{mine[0]['id']} expired")
    in_force = [s["id"] for s in daemon.get("/api/v1/silences").json()["silences"]]
    assert mine[0]["id"] not in in_force
    # the waiting run is cancelled from the page: nothing is left waiting
    page.locator(f"[data-run-row='{run['id']}'] summary").click()
    page.locator(f"[data-run-row='{run['id']}'] button[data-act=cancel]").click()
    expect(page.locator(f"[data-run-row='{run['id']}']")).to_contain_text("cancelled")


def test_pause_and_resume_from_the_header(daemon: DaemonProcess, page: Page) -> None:
    page.goto(daemon.url + "/")
    enter_token(page)
    page.click("#h-acts button[data-act=pause]")
    expect(page.locator("#h-mode")).to_contain_text("paused")
    assert daemon.get("/api/v1/status").json()["paused"] is True
    page.click("#h-acts button[data-act=resume]")
    expect(page.locator("#h-mode")).not_to_contain_text("paused")
    assert daemon.get("/api/v1/status").json()["paused"] is False


def runs_for(daemon: DaemonProcess, key: str) -> list[dict[str, Any]]:
    """The runs for ``key``, oldest first."""
    runs = daemon.get("/api/v1/runs").json()["runs"]
    return sorted((dict(r) for r in runs if r["key"] == key), key=lambda r: int(r["id"]))


def a_run(daemon: DaemonProcess, key: str, state: str, nth: int = 1) -> dict[str, Any]:
    """The ``nth`` run for ``key`` once it is in ``state``."""

    def find() -> dict[str, Any] | None:
        runs = runs_for(daemon, key)
        return runs[nth - 1] if len(runs) >= nth and runs[nth - 1]["state"] == state else None

    found: dict[str, Any] = daemon.wait_for(find, what=f"run {nth} for {key} {state}")
    return found


def finished(daemon: DaemonProcess, run_id: int) -> dict[str, Any]:
    """Run ``run_id`` once it is done."""

    def done() -> dict[str, Any] | None:
        run: dict[str, Any] = daemon.get(f"/api/v1/runs/{run_id}").json()
        return run if run["state"] == "done" else None

    found: dict[str, Any] = daemon.wait_for(done, what=f"run {run_id} to end")
    return found


def viewed_run(page: Page) -> int:
    """The id of the run the page's view shows."""
    shown = page.locator("#view").get_attribute("data-view") or ""
    assert shown.startswith("run/"), shown
    return int(shown.removeprefix("run/"))


def open_run_view(page: Page, run_id: int) -> Any:
    page.locator(f"[data-run-row='{run_id}'] a", has_text=f"#{run_id}").click()
    view = page.locator("#view")
    expect(view).to_have_attribute("data-view", f"run/{run_id}")
    return view


def test_deny_a_waiting_run(daemon: DaemonProcess, page: Page) -> None:
    daemon.post("/api/v1/events", {"event": "deploy.requested", "host": "web-11"}, token=TOKEN)
    run = waiting_run(daemon, "web-11")
    page.goto(daemon.url + "/")
    enter_token(page)
    view = open_run_view(page, run["id"])
    expect(view.locator("[data-step=ask]")).to_contain_text("waiting_approval")
    view.locator("button[data-act=deny]").click()

    expect(page.locator("#toast")).to_contain_text(f"run #{run['id']} denied")
    expect(view.locator(".kv")).to_contain_text("denied")
    expect(view).to_contain_text("deny by")  # the approval record, in words
    expect(view.locator("button[data-act=approve]")).to_be_disabled()
    done = daemon.get(f"/api/v1/runs/{run['id']}").json()
    assert (done["state"], done["outcome"]) == ("done", "denied")
    assert [a["verdict"] for a in done["approvals"]] == ["deny"]
    assert "deploy" not in [s["name"] for s in done["steps"]]  # the gated step never ran


def test_cancel_a_running_run(daemon: DaemonProcess, page: Page) -> None:
    daemon.post("/api/v1/events", {"event": "job.long", "host": "batch-1"}, token=TOKEN)
    run = a_run(daemon, "host=batch-1", "running")
    page.goto(daemon.url + "/")
    enter_token(page)
    row = page.locator(f"[data-run-row='{run['id']}']")
    expect(row).to_contain_text("running")
    expect(row).to_contain_text("host=batch-1")
    row.locator("button[data-act=cancel]").click()

    expect(page.locator("#toast")).to_contain_text(f"run #{run['id']} cancelled")
    expect(row.locator(".badge").first).to_have_text("cancelled")
    done = finished(daemon, run["id"])
    assert done["outcome"] == "cancelled"
    # the sleep was stopped, not waited for
    assert [s["status"] for s in done["steps"]] == ["cancelled"]
    assert done["steps"][0]["duration_s"] < 60
    open_run_view(page, run["id"])
    expect(page.locator("#view [data-step=work]")).to_contain_text("cancelled")


def incident_of(daemon: DaemonProcess, run: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = daemon.get(f"/api/v1/incidents/{run['incident_id']}").json()
    return found


def open_circuit_keys(daemon: DaemonProcess) -> list[str]:
    return [c["key"] for c in daemon.get("/api/v1/status").json()["open_circuits"]]


def test_reset_an_open_circuit(daemon: DaemonProcess, page: Page) -> None:
    key = "host=db-3"
    flaky = {"event": "service.flaky", "host": "db-3"}
    daemon.post("/api/v1/events", flaky, token=TOKEN)
    first = a_run(daemon, key, "done")
    assert first["outcome"] == "failed"
    # the next input would be the second run in the hour: the circuit opens instead
    daemon.post("/api/v1/events", flaky, token=TOKEN)
    daemon.wait_for(lambda: key in open_circuit_keys(daemon), what="the circuit of db-3 to open")

    page.goto(daemon.url + "/")
    enter_token(page)
    circuit = page.locator("#circuit-list .circuit", has_text=key)
    expect(circuit).to_be_visible()
    incident = page.locator(f"#incidents tr[data-incident='{first['incident_id']}']")
    expect(incident).to_contain_text("no run: circuit_open")  # the incident says why
    circuit.locator("button[data-act=reset-circuit]").click()

    expect(page.locator("#toast")).to_contain_text(f"circuit of {key} reset")
    expect(circuit).to_have_count(0)
    expect(page.locator("#circuits")).to_be_hidden()
    assert key not in open_circuit_keys(daemon)
    # with the circuit closed the fix runs again on the next input
    daemon.post("/api/v1/events", flaky, token=TOKEN)
    again = a_run(daemon, key, "done", nth=2)

    # the incident view shows each decision, the suppressed one with its reason
    page.goto(f"{daemon.url}/#incident/{first['incident_id']}")
    page.reload()  # (a new hash alone would not load the page again)
    expect(page.locator(f"[data-run-row='{again['id']}']")).to_contain_text(key)
    decisions = page.locator("#view [data-decision]")
    expect(decisions).to_have_count(2)
    expect(decisions.nth(0)).to_contain_text("a run was started")
    expect(decisions.nth(1).locator(".badge")).to_have_text("circuit_open")
    expect(decisions.nth(1)).to_contain_text("circuit of flaky-fix host=db-3 open")
    expect(decisions.nth(1)).to_contain_text("decided again")  # its cause


def test_close_an_incident(daemon: DaemonProcess, page: Page) -> None:
    daemon.post("/api/v1/events", {"event": "service.flaky", "host": "db-7"}, token=TOKEN)
    run = a_run(daemon, "host=db-7", "done")
    assert incident_of(daemon, run)["state"] == "open"  # a failed fix holds it open
    page.goto(daemon.url + "/")
    enter_token(page)
    row = page.locator(f"#incidents tr[data-incident='{run['incident_id']}']")
    expect(row).to_contain_text("open")
    row.locator("button[data-act=resolve]").click()

    expect(page.locator("#toast")).to_contain_text(f"incident #{run['incident_id']} closed")
    expect(row.locator(".badge", has_text="resolved")).to_be_visible()
    expect(row.locator("button[data-act=resolve]")).to_be_disabled()
    expect(row.locator("button[data-act=resolve]")).to_have_attribute("title", "already resolved")
    closed = incident_of(daemon, run)
    assert (closed["state"], closed["resolved_by"]) == ("resolved", "operator")


def test_run_a_playbook_by_hand_and_run_it_again(daemon: DaemonProcess, page: Page) -> None:
    page.goto(daemon.url + "/")
    enter_token(page)
    page.locator("#rules tr[data-rule=report-requested] button[data-act=run-playbook]").click()
    dialog = page.locator("#playbook-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#playbook-name")).to_have_text("report")
    params = page.locator("#playbook-params")
    assert json.loads(params.input_value()) == {"n": 1}  # the playbook's declared default
    params.fill('{"n": 7}')
    page.click("#playbook-run")
    expect(dialog).to_be_hidden()

    # the page opens the run it started
    view = page.locator("#view")
    expect(view).to_have_attribute("data-view", re.compile(r"^run/\d+$"))
    first_id = viewed_run(page)
    expect(view.locator("[data-step=write]")).to_contain_text("report 7")
    expect(view.locator(".kv")).to_contain_text('{"n":7}')
    first = finished(daemon, first_id)
    assert (first["playbook"], first["rule"]) == ("report", "run-playbook")
    assert first["params"] == {"n": 7}
    expect(view.locator(".kv")).to_contain_text(first["outcome"])

    view.locator("button[data-act=rerun]").click()
    expect(view).not_to_have_attribute("data-view", f"run/{first_id}")
    second_id = viewed_run(page)
    assert second_id > first_id
    toast = f"re-run of #{first_id} started as run #{second_id}"
    expect(page.locator("#toast")).to_contain_text(toast)
    expect(view.locator("[data-step=write]")).to_contain_text("report 7")
    expect(view.locator(".kv")).to_contain_text('{"n":7}')
    second = finished(daemon, second_id)
    assert (second["playbook"], second["params"]) == ("report", first["params"])
    assert second["steps"][0]["stdout"].strip() == "report 7"


NO_TOKEN = "enter the API token (top right) to act"


def add_silence(daemon: DaemonProcess, matcher: str, reason: str) -> int:
    made = daemon.post(
        "/api/v1/silences", {"matchers": [matcher], "duration": "1h", "reason": reason}, TOKEN
    )
    assert made.status == 201, made.text
    silence_id: int = made.json()["id"]
    return silence_id


def expire_silence(daemon: DaemonProcess, silence_id: int) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    gone = http("DELETE", f"{daemon.url}/api/v1/silences/{silence_id}", headers=auth)
    assert gone.status == 200, gone.text


def test_without_the_token_every_lever_says_why(daemon: DaemonProcess, page: Page) -> None:
    daemon.post("/api/v1/events", {"event": "service.flaky", "host": "db-ro"}, token=TOKEN)
    run = a_run(daemon, "host=db-ro", "done")
    silence_id = add_silence(daemon, "host=nowhere-ro", "kept while the page is read-only")
    page.goto(daemon.url + "/")
    expect(page.locator("#readonly-note")).to_contain_text("Read-only")
    expect(page.locator("#token-state")).to_have_text("")
    incident = f"#incidents tr[data-incident='{run['incident_id']}']"
    levers = [
        page.locator("#h-acts button[data-act=pause]"),
        page.locator("#rules tr[data-rule=report-requested] button[data-act=run-playbook]"),
        page.locator(f"{incident} button[data-act=silence]"),
        page.locator(f"{incident} button[data-act=resolve]"),
        page.locator(f"#silences tr[data-silence='{silence_id}'] button[data-act=expire-silence]"),
        page.locator(f"[data-run-row='{run['id']}'] button[data-act=rerun]"),
    ]
    for button in levers:
        expect(button).to_be_disabled()
        expect(button).to_have_attribute("title", NO_TOKEN)
    # a disabled lever does nothing, even when clicked anyway
    levers[0].click(force=True)
    assert daemon.get("/api/v1/status").json()["paused"] is False
    expect(page.locator("#h-mode")).not_to_contain_text("paused")
    expire_silence(daemon, silence_id)


def test_the_token_is_kept_for_the_tab_only(daemon: DaemonProcess, page: Page) -> None:
    page.goto(daemon.url + "/")
    pause = page.locator("#h-acts button[data-act=pause]")
    expect(pause).to_be_disabled()
    # a wrong token: the daemon refuses it, the page forgets it and says so
    page.fill("#token-box input[name=token]", "not-the-token")
    page.click("#token-box button:has-text('use token')")
    expect(pause).to_be_enabled()
    pause.click()
    expect(page.locator("#readonly-note")).to_contain_text("refused the token")
    expect(page.locator("#toast")).to_contain_text("wrong bearer token")
    expect(pause).to_be_disabled()
    assert daemon.get("/api/v1/status").json()["paused"] is False

    enter_token(page)
    page.reload()
    expect(page.locator("#token-state")).to_have_text("token set for this tab")
    expect(pause).to_be_enabled()
    expect(page.locator("#readonly-note")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('batond.token')") == TOKEN
    assert page.evaluate("localStorage.length") == 0  # nothing outlives the tab

    other = page.context.new_page()  # another tab of the same browser asks again
    try:
        other.goto(daemon.url + "/")
        expect(other.locator("#readonly-note")).to_contain_text("Read-only")
        expect(other.locator("#h-acts button[data-act=pause]")).to_be_disabled()
    finally:
        other.close()

    page.click("#token-forget")
    expect(page.locator("#readonly-note")).to_contain_text("Read-only")
    expect(pause).to_be_disabled()
    assert page.evaluate("sessionStorage.getItem('batond.token')") is None


def test_an_incident_shows_why_a_decision_was_suppressed(daemon: DaemonProcess, page: Page) -> None:
    silence_id = add_silence(daemon, "host=web-quiet", "web-quiet is being moved")
    try:
        daemon.post("/api/v1/events", {"event": "deploy.requested", "host": "web-quiet"}, TOKEN)

        def silenced() -> dict[str, Any] | None:
            for i in daemon.get("/api/v1/incidents").json()["incidents"]:
                if i["key"] == "host=web-quiet" and i["last_result"] == "silenced":
                    return dict(i)
            return None

        incident = daemon.wait_for(silenced, what="the silenced incident of web-quiet")
    finally:
        expire_silence(daemon, silence_id)
    assert runs_for(daemon, "host=web-quiet") == []  # nothing ran
    page.goto(daemon.url + "/")
    row = page.locator(f"#incidents tr[data-incident='{incident['id']}']")
    expect(row).to_contain_text("no run: silenced")
    row.locator("a", has_text=f"#{incident['id']}").click()
    view = page.locator("#view")
    expect(view).to_have_attribute("data-view", f"incident/{incident['id']}")
    decision = view.locator("[data-decision]")
    expect(decision).to_have_count(1)
    expect(decision.locator(".badge")).to_have_text("silenced")
    stored = daemon.get(f"/api/v1/incidents/{incident['id']}").json()["decisions"][0]
    assert stored["suppressed"] == "silenced"
    # which silence, for how long still (whole minutes), and the operator's reason for it
    assert (
        stored["reason"]
        == f"silence #{silence_id} (host=web-quiet) for 1h more: web-quiet is being moved"
    )
    expect(decision).to_contain_text(stored["reason"])


def post_points(daemon: DaemonProcess, metric: str, values: list[float]) -> None:
    now = time.time()
    points = [
        {"metric": metric, "value": v, "host": "chart-1", "role": "chart", "ts": now - 30 * n}
        for n, v in zip(range(len(values) - 1, -1, -1), values, strict=True)
    ]
    assert daemon.post("/api/v1/events", points, token=TOKEN).status == 202


def test_charts_draw_units_and_rule_thresholds(daemon: DaemonProcess, page: Page) -> None:
    post_points(daemon, "disk_used_percent", [40 + 2 * n for n in range(20)])  # 40% .. 78%
    post_points(daemon, "backup_size_bytes", [3 * 2**30 + n * 2**20 for n in range(20)])
    post_points(daemon, "net_sent_bytes_per_s", [2**20 * (2 + n / 10) for n in range(20)])

    def both() -> bool:
        series = daemon.get("/api/v1/series?host=chart-1").json()["series"]
        return sorted((s["metric"], len(s["points"])) for s in series) == [
            ("backup_size_bytes", 20), ("disk_used_percent", 20), ("net_sent_bytes_per_s", 20)
        ]  # fmt: skip

    daemon.wait_for(both, what="both series of chart-1 scored")
    page.goto(daemon.url + "/")
    page.fill("#series-filter [name=host]", "chart-1")
    page.click("#series-filter button")
    disk = page.locator("#charts .chart[data-metric=disk_used_percent]")
    expect(disk.locator(".title")).to_contain_text("disk_used_percent (%)")
    expect(disk.locator(".title")).to_contain_text("now 78%")
    ticks = disk.locator("svg text[data-axis=value]").all_text_contents()
    assert "50%" in ticks, ticks  # the value axis in percent
    scores = disk.locator("svg text[data-axis=score]").all_text_contents()
    assert scores == ["0.0", "0.5", "1.0"], scores  # the score axis
    threshold = disk.locator("svg text[data-threshold=disk-almost-full]")
    expect(threshold).to_have_text("disk-almost-full: > 90%")
    expect(disk.locator("svg line[stroke-dasharray='6 3']")).to_have_count(1)  # its line
    expect(disk.locator("svg polyline[data-line=value]")).to_have_count(1)
    expect(disk.locator("svg polyline[data-line=score]")).to_have_count(1)

    size = page.locator("#charts .chart[data-metric=backup_size_bytes]")
    expect(size.locator(".title")).to_contain_text("backup_size_bytes (bytes)")
    expect(size.locator(".title")).to_contain_text("now 3.02 GiB")  # 3 GiB + 19 MiB
    # readable: every tick in GiB, each with a label of its own (3.005 GiB, not "3 GiB" 4 times)
    ticks = size.locator("svg text[data-axis=value]").all_text_contents()
    assert len(ticks) >= 3 and all(re.fullmatch(r"3\.\d+ GiB", t) for t in ticks), ticks
    assert len(set(ticks)) == len(ticks), ticks
    rate = page.locator("#charts .chart[data-metric=net_sent_bytes_per_s]")
    expect(rate.locator(".title")).to_contain_text("now 3.9 MiB/s")  # a rate, not a size
    ticks = rate.locator("svg text[data-axis=value]").all_text_contents()
    assert "3.0 MiB/s" in ticks, ticks


def test_the_run_view_shows_rendered_args_and_the_steps_not_reached(
    daemon: DaemonProcess, page: Page
) -> None:
    daemon.post("/api/v1/events", {"event": "check.failed", "host": "probed-1"}, token=TOKEN)
    run = finished(daemon, a_run(daemon, "host=probed-1", "done")["id"])
    assert run["outcome"] == "failed" and run["not_reached"] == ["confirm"], run
    page.goto(daemon.url + f"/#run/{run['id']}")
    view = page.locator("#view")
    expect(view).to_have_attribute("data-view", f"run/{run['id']}")
    args = view.locator("[data-step=probe] .step-args")
    expect(args).to_contain_text("probing probed-1")  # rendered, as the step got it
    expect(args).to_contain_text("<redacted>")
    expect(args).not_to_contain_text("not-for-the-page")
    expect(view.locator("[data-step=fix]")).to_contain_text("failed")
    expect(view.locator("tr.not-reached[data-step=confirm]")).to_contain_text("not reached")
