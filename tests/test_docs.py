"""The docs keep up with the code: every route, command, option, metric and config key.

Each list is read from the code itself (the aiohttp app as the daemon builds it, the
argparse parser, the metrics registry, the config loader probed key by key), so a new
endpoint, command, metric or ``batond.yaml`` key fails here until its page names it.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from batond.commands.cli import build_parser
from batond.commands.schema import rule_file_schema
from batond.errors import ConfigError
from batond.intake.bus import Bus
from batond.intake.http import add_input_routes
from batond.load.config import load_config
from batond.load.rulefiles import load_rules
from batond.load.yamlfile import MappingNode, Node, Reader, SequenceNode
from batond.metrics import Metrics
from batond.runtime.api import Control, build_app

DOCS = Path(__file__).resolve().parent.parent / "docs"


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


# -- the HTTP API ---------------------------------------------------------------------
def routes() -> set[str]:
    """``METHOD /path`` of every route of the daemon's app, input routes included."""
    metrics = Metrics(CollectorRegistry())
    bus = Bus(metrics)
    app = build_app(
        cast(Control, object()),  # routes are only registered, never called
        metrics,
        token=None,
        max_body=1 << 20,
        add_input_routes=lambda a: add_input_routes(a, bus, metrics),
    )
    out = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp's twin of every GET
            continue
        out.add(f"{route.method} {route.resource.canonical}")  # type: ignore[union-attr]
    return out


def test_every_route_is_in_api_md() -> None:
    found = routes()
    assert {"GET /api/v1/status", "POST /api/v1/events", "DELETE /api/v1/silences/{id}"} <= found
    text = page("api.md")
    missing = sorted(r for r in found if f"`{r}`" not in text)
    assert not missing, f"routes not described in docs/api.md: {missing}"


# -- the command line -------------------------------------------------------------------
def commands(
    parser: argparse.ArgumentParser, prefix: str = "batond"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``batond NAME [SUBNAME]`` and its parser, for every (sub)command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from commands(sub, f"{prefix} {name}")


def test_every_command_and_option_is_in_cli_md() -> None:
    found = dict(commands(build_parser()))
    assert {"batond run", "batond silence add", "batond circuit reset"} <= set(found)
    text = page("cli.md")
    # named in backquotes, or at the start of a usage line
    missing = [n for n in found if not re.search(rf"(^|`){re.escape(n)}( |`|$)", text, re.M)]
    assert not missing, f"commands not described in docs/cli.md: {missing}"
    options = {
        option
        for sub in found.values()
        for action in sub._actions
        for option in action.option_strings
        if option not in ("-h", "--help")
    }
    assert {"--config", "--json", "--rules", "--match"} <= options
    missing = sorted(o for o in options if f"`{o}" not in text and f" {o} " not in text)
    assert not missing, f"options not described in docs/cli.md: {missing}"


# -- metrics ----------------------------------------------------------------------------
_SUFFIX = {"counter": "_total"}


def declared_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Exposed name -> (type, label names) of every metric ``Metrics`` registers."""
    metrics = Metrics(CollectorRegistry())
    out = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            kind: str = value._type  # type: ignore[attr-defined]
            name = value._name + _SUFFIX.get(kind, "")  # type: ignore[attr-defined]
            out[name] = (kind, tuple(value._labelnames))  # type: ignore[attr-defined]
    return out


def test_every_metric_is_in_metrics_md() -> None:
    found = declared_metrics()
    assert found["batond_decisions_total"] == ("counter", ("rule", "result"))
    rows = {
        m.group(1): line
        for line in page("metrics.md").splitlines()
        if (m := re.match(r"\| `(batond_\w+)` \|", line))
    }
    problems = []
    for name, (kind, labels) in sorted(found.items()):
        row = rows.get(name)
        if row is None:
            problems.append(f"{name}: no row")
            continue
        cells = [c.strip() for c in row.strip("|").split("|")]
        if cells[1] != kind:
            problems.append(f"{name}: type {cells[1]!r}, the code says {kind!r}")
        documented = set(re.findall(r"`(\w+)`", cells[2]))
        if documented != set(labels):
            problems.append(f"{name}: labels {sorted(documented)}, the code says {list(labels)}")
    extra = sorted(set(rows) - set(found))
    assert not problems and not extra, f"docs/metrics.md: {problems}, not in the code: {extra}"


# -- batond.yaml --------------------------------------------------------------------------
Path_ = tuple[str | int, ...]


def _positions(node: Node, path: Path_, out: dict[tuple[int, int], Path_]) -> None:
    out[(node.start_mark.line, node.start_mark.column)] = path
    if isinstance(node, MappingNode):
        for key, value in node.value:
            _positions(value, (*path, str(key.value)), out)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            _positions(item, (*path, i), out)


def _at(doc: Any, path: Path_) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _dotted(path: Path_) -> str:
    """``("mqtt", "subscribe", 0, "topic")`` -> ``mqtt.subscribe[].topic``."""
    return ".".join("[]" if isinstance(p, int) else p for p in path).replace(".[]", "[]")


def probe_keys(
    load: Callable[[Path], object],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    seed: dict[str, Any] | None = None,
) -> set[str]:
    """Every key the loader ``load`` accepts in a file, dotted (``mqtt.subscribe[].topic``).

    Found by probing: load a file, note the keys each mapping the loader reads
    allows, give each of them a value, and load again, until nothing new turns up.
    A value is first an empty mapping; where the loader wanted a list, a list of one.
    ``seed`` gives valid values where a loader reads no further without them.
    """
    allowed: list[tuple[tuple[int, int], tuple[str, ...]]] = []
    lists: list[tuple[int, int]] = []
    real_mapping, real_seq = Reader.mapping, Reader.seq

    def mapping(self: Reader, node: Node, keys: Any, *args: Any, **kw: Any) -> Any:
        if keys is not None and isinstance(node, MappingNode):
            allowed.append(((node.start_mark.line, node.start_mark.column), tuple(keys)))
        return real_mapping(self, node, keys, *args, **kw)

    def seq(self: Reader, node: Node, *args: Any, **kw: Any) -> Any:
        lists.append((node.start_mark.line, node.start_mark.column))
        return real_seq(self, node, *args, **kw)

    monkeypatch.setattr(Reader, "mapping", mapping)
    monkeypatch.setattr(Reader, "seq", seq)
    probe: dict[str, Any] = seed or {}
    found: set[str] = set()
    path = tmp_path / "probe.yaml"
    for _ in range(20):
        text = yaml.safe_dump(probe, default_flow_style=False)
        path.write_text(text)
        allowed.clear()
        lists.clear()
        try:
            load(path)
        except ConfigError:
            pass  # the probe's values are nonsense; only the keys matter
        where: dict[tuple[int, int], Path_] = {}
        _positions(yaml.compose(text), (), where)
        changed = False
        for pos, keys in allowed:
            at = where[pos]
            target = _at(probe, at)
            for key in keys:
                found.add(_dotted((*at, key)))
                if key not in target:
                    target[key] = {}
                    changed = True
        for pos in lists:
            at = where.get(pos)
            if at and isinstance(at[-1], str) and _at(probe, at) == {}:
                parent = _at(probe, at[:-1])
                parent[at[-1]] = [{}]
                changed = True
        if not changed:
            monkeypatch.undo()
            return found
    raise AssertionError("probing the keys did not settle")


def test_every_config_key_is_in_configuration_md(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = probe_keys(load_config, tmp_path, monkeypatch)
    assert {"node", "http.listen", "mqtt.subscribe[].qos", "governor.per_target.per"} <= found
    assert {"journal.record.max_size", "mqtt.key_file"} <= found
    text = page("configuration.md")
    missing = sorted(k for k in found if f"| `{k}` |" not in text)
    assert not missing, f"batond.yaml keys not in the table of docs/configuration.md: {missing}"


def test_every_rule_file_key_is_in_rules_md_and_playbooks_md(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a playbook is read only with a valid name, a step's with: only for a known
    # action: one step of each action kind the schema names
    actions = rule_file_schema()["$defs"]["step"]["properties"]["action"]["enum"]
    steps = [{"name": f"s{i}", "action": a, "with": {}} for i, a in enumerate(actions)]
    seed = {"playbooks": [{"name": "p", "steps": steps}]}
    found = probe_keys(lambda p: load_rules([p]), tmp_path, monkeypatch, seed)
    assert {"rules[].count.at_least", "schedules[].cron", "playbooks[].steps[].retry"} <= found
    assert {"playbooks[].steps[].with.argv", "playbooks[].steps[].with.branches"} <= found
    pages = {"rules": page("rules.md"), "schedules": page("rules.md")}
    pages["playbooks"] = page("playbooks.md")
    missing = sorted(
        key
        for key in found
        if "." in key and f"`{key.rsplit('.', 1)[1]}`" not in pages[key.split("[", 1)[0]]
    )
    assert not missing, f"rule file keys not in docs/rules.md or docs/playbooks.md: {missing}"
