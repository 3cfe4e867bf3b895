"""The exec action: argv only, bounded output tails, timeouts that kill the process group."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from batond.remedy.actions.core import TAIL_BYTES
from batond.remedy.actions.execute import run_argv
from runner_support import ARGV_JSON, Harness, decision, load_playbooks, read_pids, wait_gone
from support import until

INJECTIONS = [
    "; rm -rf /tmp/batond-should-not-exist",
    "$(id)",
    "`id`",
    "two words",
    "line1\nline2",
    "a'b\"c",
    "&& touch /tmp/pwned",
    "",
]


async def test_event_data_reaches_the_child_as_single_literal_argv_elements(tmp_path: Path) -> None:
    # one templated argument per injection attempt, plus one interpolated into a literal
    program = ", ".join(json.dumps(a) for a in ARGV_JSON)
    fields = ", ".join(f'"{{{{ event.f{i} }}}}"' for i in range(len(INJECTIONS)))
    pbs = load_playbooks(f"""\
playbooks:
  - name: echo-argv
    steps:
      - name: show
        action: exec
        with: {{argv: [{program}, {fields}, "prefix-{{{{ event.f0 }}}}"]}}
""")
    h = Harness(tmp_path, pbs)
    try:
        raw = {"event": "x", **{f"f{i}": v for i, v in enumerate(INJECTIONS)}}
        assert h.runner.start(decision("echo-argv", raw=raw))
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "succeeded"
        run = await h.run(ended.run_id)
        printed = json.loads(run["steps"][0]["stdout"])
        assert printed == [*INJECTIONS, "prefix-" + INJECTIONS[0]]
        assert not _exists("/tmp/pwned")
    finally:
        await h.close()


def _exists(path: str) -> bool:
    return os.path.exists(path)


async def test_output_tails_are_bounded_and_exit_codes_kept() -> None:
    code = (
        "import sys; sys.stdout.write('x' * 100000 + 'END'); sys.stderr.write('oops'); sys.exit(3)"
    )
    result = await run_argv([sys.executable, "-c", code])
    assert not result.ok and result.exit_code == 3
    assert len(result.stdout) == TAIL_BYTES and result.stdout.endswith("xEND")
    assert result.stderr == "oops"
    assert result.detail == "exit code 3"


async def test_env_and_cwd(tmp_path: Path) -> None:
    code = "import os; print(os.getcwd()); print(os.environ['BATOND_T'])"
    result = await run_argv(
        [sys.executable, "-c", code], env={"BATOND_T": "v 1"}, cwd=str(tmp_path)
    )
    assert result.ok
    assert result.stdout.splitlines() == [str(tmp_path), "v 1"]


async def test_missing_program_is_a_failed_step_not_a_crash() -> None:
    result = await run_argv(["/nonexistent/batond-prog", "x"])
    assert not result.ok and result.exit_code is None
    assert "cannot run '/nonexistent/batond-prog'" in result.detail


async def test_a_daemonising_child_holding_the_pipe_does_not_hold_the_step(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    code = textwrap.dedent(f"""
        import subprocess, sys
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pidfile)!r}, "w").write(str(p.pid))
        print("started")
    """)
    try:
        async with asyncio.timeout(20):  # would be 60 s if the step waited for EOF
            result = await run_argv([sys.executable, "-c", code])
        assert result.ok and result.stdout == "started\n"
        (bg,) = read_pids(pidfile)
        assert not await wait_gone([bg], within=0.2)  # a normal exit kills nothing
    finally:
        for pid in read_pids(pidfile):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


@pytest.mark.parametrize("ignore_term", [False, True])
async def test_timeout_kills_the_whole_process_group(tmp_path: Path, ignore_term: bool) -> None:
    pidfile = tmp_path / "pids"
    code = textwrap.dedent(f"""
        import os, signal, subprocess, sys, time
        if {ignore_term}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
        with open({str(pidfile)!r}, "w") as f:
            f.write(f"{{os.getpid()}} {{child.pid}}")
        time.sleep(300)
    """)
    task = asyncio.ensure_future(run_argv([sys.executable, "-c", code], grace=0.3))
    await until(lambda: len(read_pids(pidfile)) >= 2, 30, "both pids in the pidfile")
    task.cancel()  # what a step timeout does
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_gone(read_pids(pidfile))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(
    "where",
    [
        {"argv": [sys.executable, "-c", "pass", "a\x00b"]},
        {"argv": [sys.executable, "-c", "pass"], "cwd": "/tmp\x00/x"},
        {"argv": [sys.executable, "-c", "pass"], "env": {"K": "v\x00w"}},
        {"argv": [sys.executable, "-c", "pass"], "env": {"K\x00": "v"}},
    ],
    ids=["argv", "cwd", "env-value", "env-name"],
)
async def test_a_nul_byte_from_event_data_fails_the_step_and_leaks_no_fd(
    where: dict[str, object],
) -> None:
    argv = where["argv"]
    assert isinstance(argv, list)
    before = _open_fds()
    for _ in range(5):
        result = await run_argv(argv, cwd=where.get("cwd"), env=where.get("env"))  # type: ignore[arg-type]
        assert not result.ok
        assert "NUL byte" in result.detail
    assert _open_fds() == before
