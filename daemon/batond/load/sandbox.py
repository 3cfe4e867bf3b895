"""What batond's systemd unit lets it write, and playbook steps that write elsewhere.

The shipped unit hardens batond with ``ProtectSystem=strict``: every path but
its ``StateDirectory=`` and the unit's ``ReadWritePaths=`` is read-only, so a
step that writes under ``/etc`` fails at 3 a.m. with ``Read-only file system``.
``batond check`` reads the installed unit and its drop-ins and warns about
the writes it can see: a literal absolute path given to a command that writes
files (``cp``, ``tee``, ``rm`` ...) or after a redirection in ``sh -c``.
Templated paths and what a program does inside are beyond what it can tell.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from batond.errors import Problem
from batond.load.playbooks.model import Playbook, Step

__all__ = [
    "UNIT_PATHS",
    "Sandbox",
    "read_unit",
    "sandbox_warnings",
    "written_paths",
]

#: Where the unit is looked for when ``batond check`` is not given one.
UNIT_PATHS = (
    Path("/etc/systemd/system/batond.service"),
    Path("/usr/lib/systemd/system/batond.service"),
    Path("/lib/systemd/system/batond.service"),
)
_DROPIN_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system")

#: Programs whose path arguments are files they write (create, change or remove).
_WRITERS = frozenset({
    "cp", "mv", "rm", "rmdir", "tee", "touch", "truncate", "mkdir", "ln", "install", "rsync",
    "chmod", "chown", "chgrp", "shred", "unlink", "logrotate",
})  # fmt: skip
_SHELLS = frozenset({"sh", "bash", "dash", "zsh"})
_REDIRECT = re.compile(r"(?<![<>&\d])>{1,2}\s*(/[^\s;|&<>()]+)")
# directories a unit's *Directory= settings make writable, by setting
_DIRECTORY_ROOTS = {
    "StateDirectory": "/var/lib",
    "CacheDirectory": "/var/cache",
    "LogsDirectory": "/var/log",
    "RuntimeDirectory": "/run",
}
_LISTS = ("ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", *_DIRECTORY_ROOTS)


@dataclass(frozen=True, slots=True)
class Sandbox:
    """The file-system view of a unit: for each path, writable or why not."""

    unit: Path
    rules: tuple[tuple[PurePosixPath, bool, str], ...]  # (prefix, writable, because)

    def why_read_only(self, path: PurePosixPath) -> str | None:
        """None when ``path`` is writable; else the setting that makes it read-only."""
        best: tuple[int, bool, str] = (-1, True, "")
        for prefix, writable, because in self.rules:
            depth = len(prefix.parts)
            if depth > best[0] and (path == prefix or prefix in path.parents):
                best = (depth, writable, because)
        return None if best[1] else best[2]


def unit_files(unit: Path) -> list[Path]:
    """The unit and its drop-ins, in the order systemd applies them."""
    dropins: dict[str, Path] = {}
    dirs = [unit.parent, *(Path(d) for d in _DROPIN_DIRS)]
    for folder in reversed(dirs):  # earlier folders override later ones, by file name
        for conf in sorted((folder / f"{unit.name}.d").glob("*.conf")):
            dropins[conf.name] = conf
    return [unit, *(dropins[name] for name in sorted(dropins))]


def _settings(files: Sequence[Path]) -> dict[str, list[str]]:
    """The [Service] settings that matter here; an empty list assignment resets it."""
    out: dict[str, list[str]] = {}
    for path in files:
        section = ""
        for raw in path.read_text(errors="replace").splitlines():
            line = raw.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
            elif section == "Service" and "=" in line and not line.startswith(("#", ";")):
                key, _, value = (part.strip() for part in line.partition("="))
                if key in _LISTS:
                    out[key] = [*out.get(key, []), *value.split()] if value else []
                else:
                    out[key] = [value]
    return out


def read_unit(unit: Path) -> Sandbox:
    """The sandbox of ``unit`` with its drop-ins (OSError when it cannot be read)."""
    s = _settings(unit_files(unit))
    rules: list[tuple[PurePosixPath, bool, str]] = []
    system = (s.get("ProtectSystem") or [""])[-1].lower()
    if system == "strict":
        rules.append((PurePosixPath("/"), False, "ProtectSystem=strict"))
        rules += [(PurePosixPath(p), True, "") for p in ("/dev", "/proc", "/sys")]
    elif system in ("yes", "true", "full"):
        ro = ["/usr", "/boot", "/efi"] + (["/etc"] if system == "full" else [])
        rules += [(PurePosixPath(p), False, f"ProtectSystem={system}") for p in ro]
    home = (s.get("ProtectHome") or [""])[-1].lower()
    if home in ("yes", "true", "read-only"):
        rules += [(PurePosixPath(p), False, f"ProtectHome={home}") for p in ("/home", "/root")]
    if (s.get("PrivateTmp") or [""])[-1].lower() in ("yes", "true"):
        rules += [(PurePosixPath(p), True, "") for p in ("/tmp", "/var/tmp")]
    for key, root in _DIRECTORY_ROOTS.items():
        rules += [(PurePosixPath(root) / d, True, "") for d in s.get(key, [])]
    for key, writable in (("ReadWritePaths", True), ("ReadOnlyPaths", False)):
        for entry in s.get(key, []):
            rules.append((PurePosixPath(entry.lstrip("-+")), writable, f"{key}={entry}"))
    return Sandbox(unit, tuple(rules))


def _literal_argv(step: Step) -> list[str] | None:
    argv = step.args.get("argv")
    if step.action != "exec" or not isinstance(argv, list | tuple):
        return None
    if not argv or not all(isinstance(a, str) for a in argv):
        return None  # templated parts: what they will be is beyond a load-time check
    return list(argv)


def written_paths(step: Step) -> list[PurePosixPath]:
    """Absolute paths an ``exec`` step visibly writes (see the module's docstring)."""
    argv = _literal_argv(step)
    if argv is None:
        return []
    program = PurePosixPath(argv[0]).name
    if program in _SHELLS and len(argv) >= 3 and argv[1] == "-c":
        return [PurePosixPath(m) for m in _REDIRECT.findall(argv[2])] + _shell_writers(argv[2])
    if program in _WRITERS:
        return [PurePosixPath(a) for a in argv[1:] if a.startswith("/")]
    if program == "dd":
        return [PurePosixPath(a[3:]) for a in argv[1:] if a.startswith("of=/")]
    return []


def _shell_writers(script: str) -> list[PurePosixPath]:
    """The path arguments of writing commands in a simple script (one per line or ;)."""
    out: list[PurePosixPath] = []
    for command in re.split(r"[;\n|&]+", script):
        try:
            words = shlex.split(command)
        except ValueError:
            continue
        if words and PurePosixPath(words[0]).name in _WRITERS:
            out += [PurePosixPath(w) for w in words[1:] if w.startswith("/")]
    return out


def _steps(steps: Sequence[Step]) -> Iterator[Step]:
    for step in steps:
        yield step
        for branch in step.branches:
            yield from _steps(branch)


def sandbox_warnings(playbooks: Mapping[str, Playbook], sandbox: Sandbox) -> list[Problem]:
    """A warning for every visible write under a path ``sandbox`` makes read-only."""
    out: list[Problem] = []
    for playbook in playbooks.values():
        for step in _steps([*playbook.steps, *playbook.on_failure]):
            for path in written_paths(step):
                because = sandbox.why_read_only(path)
                if because is not None:
                    out.append(_warning(step, playbook.name, path, because, sandbox.unit))
    return out


def _warning(step: Step, playbook: str, path: PurePosixPath, because: str, unit: Path) -> Problem:
    mark = step.mark
    return Problem(
        mark.file, mark.line, mark.col,
        f"warning: step {step.name!r} of playbook {playbook!r} writes {path}, which "
        f"{unit.name} makes read-only ({because}); add ReadWritePaths={path.parent} "
        "to a drop-in (docs/operations.md)",
    )  # fmt: skip
