"""Silences by rule, severity and playbook with Alertmanager's matchers (issue 11,
observation 6), on a real ``batond run``: ``=``, ``!=``, ``=~``, ``!~``; matchers that
name nothing a loaded rule can produce are refused with a "did you mean"; the end of a
silence decides the incidents it held back again."""

from __future__ import annotations

from pathlib import Path

from daemon_proc import DaemonProcess, write_config
from incident_support import cli, decisions, send
from support import free_port

TOKEN = "silence-t0ken"

RULES = """
rules:
  - name: demo-worker-down
    match: {event: process.exited, name: w}
    resolve: {match: {event: process.started, name: w}}
    run: restart
  - {name: disk-full, match: {event: disk.full}, severity: critical, run: clean}
playbooks:
  - {name: restart, steps: [{name: s, action: wait, with: {duration: 0s}}]}
  - {name: clean, steps: [{name: s, action: wait, with: {duration: 0s}}]}
"""


def _add(d: DaemonProcess, *matchers: str, duration: str = "1h") -> int:
    args = [a for m in matchers for a in ("--match", m)]
    done = cli(d, "silence", "add", *args, "--for", duration, "--reason", "test", "--json")
    assert done.returncode == 0, done
    import json

    return int(json.loads(done.stdout)["id"])


def _refused(d: DaemonProcess, matcher: str) -> str:
    done = cli(d, "silence", "add", "--match", matcher, "--for", "1h", "--reason", "x")
    assert done.returncode == 1, done
    return done.stderr


def _results(d: DaemonProcess, rule: str, host: str) -> list[str]:
    return [x["result"] for x in reversed(decisions(d, rule=rule, key=f"host={host}"))]


def test_silences_match_rule_severity_and_playbook(tmp_path: Path) -> None:
    port = free_port()
    d = DaemonProcess(write_config(tmp_path, port, rules=RULES, token=TOKEN), port)
    try:
        d.wait_ready()
        by_rule = _add(d, "rule=demo-worker-down")
        send(d, TOKEN, {"event": "process.exited", "name": "w", "host": "h1"})
        send(d, TOKEN, {"event": "disk.full", "host": "h1"})
        d.wait_for(lambda: _results(d, "demo-worker-down", "h1") == ["silenced"], what="silenced")
        d.wait_for(lambda: _results(d, "disk-full", "h1") == ["run"], what="not silenced")
        listed = cli(d, "silence", "list")
        assert "rule=demo-worker-down" in listed.stdout, listed
        # its end decides the incident it held back again, with no new input
        assert cli(d, "silence", "expire", str(by_rule)).returncode == 0
        d.wait_for(
            lambda: _results(d, "demo-worker-down", "h1") == ["silenced", "run"], what="re-decided"
        )
        assert "silence" in decisions(d, rule="demo-worker-down")[0]["cause"]

        _add(d, "severity!=critical", "host=~web-.*", duration="2s")
        send(d, TOKEN, {"event": "disk.full", "host": "web-1"})
        send(d, TOKEN, {"event": "process.exited", "name": "w", "host": "web-2"})
        send(d, TOKEN, {"event": "process.exited", "name": "w", "host": "db-1"})
        d.wait_for(lambda: _results(d, "disk-full", "web-1") == ["run"], what="critical runs")
        d.wait_for(lambda: _results(d, "demo-worker-down", "db-1") == ["run"], what="db-1 runs")
        assert _results(d, "demo-worker-down", "web-2") == ["silenced"]
        d.wait_for(  # the silence ends by itself: the held-back incident is decided again
            lambda: _results(d, "demo-worker-down", "web-2") == ["silenced", "run"],
            what="re-decided when the silence ended",
        )

        _add(d, "playbook=~cle.*", "host!~db-.*")
        send(d, TOKEN, {"event": "disk.full", "host": "db-2"}, {"event": "disk.full", "host": "a1"})
        d.wait_for(lambda: _results(d, "disk-full", "a1") == ["silenced"], what="a1 silenced")
        d.wait_for(lambda: _results(d, "disk-full", "db-2") == ["run"], what="db-2 runs")
    finally:
        assert d.stop() == 0, d.log()


def test_matchers_that_match_nothing_are_refused(tmp_path: Path) -> None:
    port = free_port()
    d = DaemonProcess(write_config(tmp_path, port, rules=RULES, token=TOKEN), port)
    try:
        d.wait_ready()
        assert "did you mean 'rule'" in _refused(d, "rul=demo-worker-down")
        assert "did you mean 'demo-worker-down'" in _refused(d, "rule=demo-worker-dwn")
        assert "did you mean 'critical'" in _refused(d, "severity=critcal")
        assert "no loaded playbook" in _refused(d, "playbook=~nothing.*")
        assert "did you mean 'host'" in _refused(d, "hots=web-1")
        assert "regex" in _refused(d, "host=~(a+)+")  # nested repeats: refused
        assert d.get("/api/v1/silences").json()["silences"] == []
        body = {"matchers": {"rule": "disk-ful"}, "duration": "1h", "reason": "x"}
        r = d.post("/api/v1/silences", body, token=TOKEN)
        assert r.status == 400 and "did you mean 'disk-full'" in r.text
    finally:
        assert d.stop() == 0, d.log()
