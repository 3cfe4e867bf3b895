"""The ``batond`` command line: argv parsing and exit codes.

Each command's work lives in its own module, imported only when that
command runs, so ``batond check`` never pays for scikit-learn and
``batond replay`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from batond import __version__

__all__ = ["main"]

# command -> "module:function"; the function takes the parsed Namespace, returns an exit code
_COMMANDS = {
    "run": "batond.runtime.daemon:main",
    "check": "batond.commands.check:main",
    "replay": "batond.commands.replay:main",
    "test": "batond.commands.ruletest:main",
    "backtest": "batond.commands.backtest:main",
    "schema": "batond.commands.schema:main",
    "status": "batond.commands.client:status",
    "incidents": "batond.commands.client:incidents",
    "decisions": "batond.commands.client:decisions",
    "runs": "batond.commands.client:runs",
    "silence": "batond.commands.client:silence",
    "circuit": "batond.commands.client:circuit",
    "fleet": "batond.commands.client:fleet",
    "approve": "batond.commands.client:approve",
    "deny": "batond.commands.client:deny",
    "cancel": "batond.commands.client:cancel",
    "feedback": "batond.commands.client:feedback",
    "pause": "batond.commands.client:pause",
    "resume": "batond.commands.client:resume",
    "reload": "batond.commands.client:reload",
    "demo": "batond.commands.demo:main",
    "trigger": "batond.commands.client:trigger",
    "run-playbook": "batond.commands.client:run_playbook",
}


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        metavar="CONFIG",
        default=None,
        help="configuration file (default /etc/batond/batond.yaml; built-in defaults if absent)",
    )


def _client_args(p: argparse.ArgumentParser, json_flag: bool = True) -> None:
    _config_arg(p)
    p.add_argument("--url", default=os.environ.get("BATOND_URL"), help="daemon URL ($BATOND_URL)")
    p.add_argument(
        "--token-file",
        default=os.environ.get("BATOND_TOKEN_FILE"),
        help="file holding the API token ($BATOND_TOKEN_FILE)",
    )
    if json_flag:
        p.add_argument("--json", action="store_true", help="machine-readable JSON output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batond", description="Adaptive monitoring and auto-remediation daemon."
    )
    parser.add_argument("--version", action="version", version=f"batond {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _local_commands(sub)
    _journal_commands(sub)
    _operator_commands(sub)
    return parser


def _local_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The daemon itself, and the commands that work on files without one."""
    p = sub.add_parser("run", help="run the daemon in the foreground")
    _config_arg(p)
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log level (default: log.level of the config, else info)",
    )

    _check_command(sub)
    _replay_command(sub)

    p = sub.add_parser("test", help="run rule test files: inputs in, expected decisions out")
    p.add_argument("files", nargs="+", metavar="FILE")

    p = sub.add_parser("backtest", help="score NAB-format CSV series with the anomaly model")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--out", required=True, metavar="DIR")
    _config_arg(p)
    p.add_argument("--model", metavar="NAME", help="a model of the config's models:")
    p.add_argument(
        "--detector",
        choices=("context", "host"),
        default="context",
        help="host: score SMD-format machine folders (train/test halves) with the host model",
    )
    p.add_argument(
        "--step",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="--detector host: seconds between rows (timestamps count rows; SMD: 60)",
    )

    sub.add_parser("schema", help="print the JSON Schema of rule and playbook files")

    p = sub.add_parser("demo", help="the stand-in process the demonstration rules watch")
    dsub = p.add_subparsers(dest="demo_command", metavar="ACTION", required=True)
    for action, text in (
        ("start", "start it (a sleep that answers to NAME)"),
        ("kill", "kill it: batond should start a new one within seconds"),
    ):
        dp = dsub.add_parser(action, help=text)
        dp.add_argument("name", nargs="?", default="batond-demo-worker", metavar="NAME",
                        help="the process name (default batond-demo-worker)")  # fmt: skip


def _check_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="validate config, rules, playbooks and models")
    _config_arg(p)
    p.add_argument(
        "paths", nargs="*", metavar="PATH", help="check these files or folders on their own"
    )
    p.add_argument(
        "--explain",
        metavar="RULE",
        help="show the limits that apply to RULE (its own, or the governor's) and its key",
    )
    p.add_argument(
        "--unit",
        metavar="FILE",
        help="warn about writes this systemd unit (and its drop-ins) makes read-only "
        "(default: the installed batond.service, if any)",
    )


def _replay_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="feed recorded events through the rules; execute nothing")
    p.add_argument("events", nargs="*", metavar="EVENTS.jsonl")
    _config_arg(p)
    p.add_argument("--rules", nargs="+", metavar="PATH", help="use these rule files instead")
    p.add_argument("--json", action="store_true", help="one JSON object per decision")
    p.add_argument(
        "--recorded", action="store_true", help="read the daemon's recording in state_dir/record/"
    )
    p.add_argument("--since", metavar="DURATION", help="only inputs of the last DURATION")
    p.add_argument(
        "--diff",
        nargs=2,
        metavar=("OLD_RULES", "NEW_RULES"),
        help="run both rule sets over the inputs; print what would decide differently",
    )
    p.add_argument(
        "--window", metavar="DURATION", help="--diff: how far apart a pair may be (default 1h)"
    )
    p.add_argument(
        "--examples", type=int, default=3, metavar="N", help="--diff: examples per rule (3)"
    )


def _journal_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Clients of a running daemon that read its state, and silences and circuits."""
    _client_args(sub.add_parser("status", help="daemon status"))
    p = sub.add_parser(
        "incidents",
        help="incident history; `incidents ID` explains one; `incidents resolve ID` closes it",
    )
    p.add_argument("what", nargs="*", metavar="ID | resolve ID")
    _client_args(p)
    p.add_argument("--limit", type=int, default=None)

    p = sub.add_parser("decisions", help="decisions, each with its result and reason")
    p.add_argument("--rule", help="only this rule's")
    p.add_argument("--key", help="only this incident key's")
    p.add_argument("--result", help="run, or a suppression reason (circuit_open, ...)")
    p.add_argument("--since", help="epoch seconds, or a duration ago (30m)")
    p.add_argument("--limit", type=int, default=None)
    _client_args(p)

    p = sub.add_parser("runs", help="run history, or one run's step timeline")
    p.add_argument("id", nargs="?", type=int, metavar="ID")
    _client_args(p)
    p.add_argument("--limit", type=int, default=100)

    p = sub.add_parser("silence", help="silences and maintenance windows")
    ssub = p.add_subparsers(dest="silence_command", metavar="ACTION", required=True)
    sp = ssub.add_parser("add", help="add a silence")
    sp.add_argument("--match", action="append", required=True, metavar="K=V")
    sp.add_argument("--for", dest="duration", required=True, metavar="DURATION")
    sp.add_argument("--reason", required=True, metavar="TEXT")
    _client_args(sp)
    _client_args(ssub.add_parser("list", help="list silences"))
    sp = ssub.add_parser("expire", help="end a silence now")
    sp.add_argument("id", type=int, metavar="ID")
    _client_args(sp)

    p = sub.add_parser("circuit", help="circuits of targets whose runs keep failing")
    csub = p.add_subparsers(dest="circuit_command", metavar="ACTION", required=True)
    _client_args(csub.add_parser("list", help="list open circuits"))
    cp = csub.add_parser(
        "reset", help="close a key's circuits: held-back incidents are decided again"
    )
    cp.add_argument("target", metavar="KEY", help="the incident key as listed")
    cp.add_argument("--rule", help="only this rule's circuit (default: every rule's for KEY)")
    _client_args(cp)

    p = sub.add_parser("fleet", help="a central instance's view of the fleet")
    fsub = p.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    _client_args(fsub.add_parser("status", help="who owns which partition; the members"))


def _operator_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Clients of a running daemon that act on runs, incidents and the whole daemon."""
    for name, text in (
        ("approve", "approve a run waiting at an approval step"),
        ("deny", "deny a run waiting at an approval step"),
        ("cancel", "cancel a run"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("run_id", type=int, metavar="RUN_ID")
        _client_args(p)

    p = sub.add_parser("feedback", help="operator feedback on an incident")
    p.add_argument("incident_id", type=int, metavar="INCIDENT_ID")
    p.add_argument("feedback", choices=["false_positive"])
    _client_args(p)

    p = sub.add_parser("trigger", help="run a schedule now (through the governor)")
    p.add_argument("schedule", metavar="SCHEDULE")
    _client_args(p)
    p = sub.add_parser("run-playbook", help="run a playbook now (through the governor)")
    p.add_argument("playbook", metavar="NAME")
    p.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE",
        help="a parameter (repeatable); VALUE is read as JSON when it parses, else text",
    )  # fmt: skip
    _client_args(p)

    for name, text in (
        ("pause", "global kill switch: decide and record, execute nothing"),
        ("resume", "end a pause"),
        ("reload", "reload rules, playbooks and models"),
    ):
        _client_args(sub.add_parser(name, help=text))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func_name = _COMMANDS[args.command].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        code: int = func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `batond replay ... | head`
        sys.stderr.close()
        return 0
    return code
