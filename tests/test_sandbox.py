"""``batond check`` warns about steps that write where the systemd unit makes it read-only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path, PurePosixPath

from batond.load.rulefiles import load_rules
from batond.load.sandbox import read_unit, sandbox_warnings, written_paths

REPO = Path(__file__).resolve().parent.parent
SHIPPED_UNIT = REPO / "systemd" / "batond.service"

PLAYBOOK = """\
playbooks:
  - name: fix
    steps:
      - name: copy-conf
        action: exec
        with: {argv: [cp, /var/lib/batond/nginx.conf, /etc/nginx/nginx.conf]}
      - name: log
        action: exec
        with: {argv: [sh, -c, "echo fixed >> /var/log/nginx/batond.log"]}
      - name: templated
        action: exec
        with: {argv: [cp, /a, "/etc/{{ labels.service }}.conf"]}
    on_failure:
      - name: state
        action: exec
        with: {argv: [touch, /var/lib/batond/failed]}
"""


def _unit(folder: Path, dropin: str = "") -> Path:
    """The shipped unit in ``folder``, with a drop-in holding ``dropin`` if given."""
    folder.mkdir(parents=True, exist_ok=True)
    unit = folder / "batond.service"
    unit.write_text(SHIPPED_UNIT.read_text())
    if dropin:
        (folder / "batond.service.d").mkdir()
        (folder / "batond.service.d" / "paths.conf").write_text(f"[Service]\n{dropin}\n")
    return unit


def test_the_shipped_unit_leaves_only_its_state_directory_and_private_tmp_writable(
    tmp_path: Path,
) -> None:
    sandbox = read_unit(_unit(tmp_path))
    why = sandbox.why_read_only
    assert why(PurePosixPath("/etc/nginx/nginx.conf")) == "ProtectSystem=strict"
    assert why(PurePosixPath("/root/x")) == "ProtectHome=read-only"
    for writable in ("/var/lib/batond/journal.db", "/tmp/x", "/dev/null"):
        assert why(PurePosixPath(writable)) is None, writable


def test_a_drop_in_opens_paths_and_a_read_only_path_inside_wins(tmp_path: Path) -> None:
    unit = _unit(tmp_path, "ReadWritePaths=/etc/nginx -/srv\nReadOnlyPaths=/etc/nginx/keys")
    why = read_unit(unit).why_read_only
    assert why(PurePosixPath("/etc/nginx/nginx.conf")) is None
    assert why(PurePosixPath("/srv/data")) is None
    assert why(PurePosixPath("/etc/nginx/keys/k")) == "ReadOnlyPaths=/etc/nginx/keys"
    assert why(PurePosixPath("/etc/hosts")) == "ProtectSystem=strict"


def test_an_empty_assignment_resets_the_list(tmp_path: Path) -> None:
    unit = _unit(tmp_path, "ReadWritePaths=/etc/nginx\nReadWritePaths=")
    assert read_unit(unit).why_read_only(PurePosixPath("/etc/nginx/x")) == "ProtectSystem=strict"


def test_warnings_name_the_step_the_path_and_the_setting(tmp_path: Path) -> None:
    (tmp_path / "pb.yaml").write_text(PLAYBOOK)
    ruleset = load_rules([tmp_path / "pb.yaml"])
    steps = {s.name: s for s in ruleset.playbooks["fix"].steps}
    assert written_paths(steps["templated"]) == []  # beyond what a load-time check can tell
    warnings = sandbox_warnings(ruleset.playbooks, read_unit(_unit(tmp_path / "u")))
    assert [(w.line, str(w.message).split(" writes ")[1].split(",")[0]) for w in warnings] == [
        (4, "/etc/nginx/nginx.conf"),
        (7, "/var/log/nginx/batond.log"),
    ]
    assert "ProtectSystem=strict" in warnings[0].message
    assert "add ReadWritePaths=/etc/nginx to a drop-in" in warnings[0].message


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batond", "check", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_check_prints_the_warnings_and_still_passes(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    pb = tmp_path / "rules" / "pb.yaml"
    pb.write_text(PLAYBOOK)
    unit = _unit(tmp_path / "shipped")
    done = _check("--unit", str(unit), str(tmp_path / "rules"))
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{pb}:4:15: warning: step 'copy-conf' of playbook 'fix' writes")
    assert lines[1].startswith(f"{pb}:7:15: warning: step 'log'")
    assert lines[2].startswith("ok: ")
    opened = _unit(tmp_path / "opened", "ReadWritePaths=/etc/nginx /var/log/nginx")
    assert _check("--unit", str(opened), str(tmp_path / "rules")).stdout.startswith("ok: ")


def test_a_state_dir_the_unit_makes_read_only_is_warned_about(tmp_path: Path) -> None:
    config = tmp_path / "batond.yaml"
    config.write_text("state_dir: /opt/batond\nrules: []\nmodels: []\n")
    done = _check("-c", str(config), "--unit", str(_unit(tmp_path / "u")))
    assert done.returncode == 0, done.stdout
    assert f"{config}:1:1: warning: state_dir /opt/batond is read-only" in done.stdout


def test_an_unreadable_unit_is_an_error(tmp_path: Path) -> None:
    done = _check("--unit", str(tmp_path / "nope.service"), str(REPO / "rules"))
    assert done.returncode == 1
    assert done.stdout.startswith(f"{tmp_path / 'nope.service'}:1:1: cannot read the unit")


def test_the_shipped_rules_write_nothing_the_shipped_unit_forbids() -> None:
    done = _check("--unit", str(SHIPPED_UNIT), str(REPO / "rules"))
    assert done.returncode == 0 and "warning" not in done.stdout, done.stdout
