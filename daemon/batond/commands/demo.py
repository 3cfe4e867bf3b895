"""``batond demo start|kill [NAME]``: the stand-in process the demonstration rules watch.

``./scripts/run-local`` watches ``batond-demo-worker`` (a ``sleep`` that answers
to that name); killing it is the quickest way to see batond act: the host
source sees the exit at once, the rule ``demo-worker-down`` fires and its
playbook starts a new one. The examples use the same command with their own
names (``batond demo kill batond-example-worker``). Processes are found the
way the host source finds them (:func:`batond.intake.procwatch.process_names`),
never by a pattern over command lines.
"""

from __future__ import annotations

import argparse
import os
import subprocess

import psutil

from batond.intake.procwatch import process_names

__all__ = ["DEFAULT_NAME", "find", "kill", "main", "start"]

DEFAULT_NAME = "batond-demo-worker"


def find(name: str) -> list[psutil.Process]:
    """Live processes answering to ``name`` (a zombie is already dead)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        if proc.pid == os.getpid() or proc.info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        if name in process_names(proc.info.get("name") or "", proc.info.get("cmdline")):
            found.append(proc)
    return found


def main(args: argparse.Namespace) -> int:
    """``batond demo ACTION [NAME]``."""
    return start(args) if args.demo_command == "start" else kill(args)


def start(args: argparse.Namespace) -> int:
    name: str = args.name
    running = find(name)
    if running:
        print(f"{name} is already running (pid {', '.join(str(p.pid) for p in running)})")
        return 0
    # a day-long sleep whose argv[0] is the name, in its own session: it outlives this command
    proc = subprocess.Popen(
        [name, "86400"],
        executable="sleep",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    print(f"started {name} (pid {proc.pid})")
    return 0


def kill(args: argparse.Namespace) -> int:
    name: str = args.name
    found = find(name)
    if not found:
        print(f"no process named {name} is running; `batond demo start {name}` starts one")
        return 1
    for proc in found:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    pids = ", ".join(str(p.pid) for p in found)
    print(f"killed {name} (pid {pids}): batond sees the exit at once and its rule starts a new one")
    print("watch it on the page, or: batond runs (with --url for a daemon not on 127.0.0.1:9180)")
    return 0
