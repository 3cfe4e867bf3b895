"""Agents last seen: what a central instance remembers of each agent's batches.

The owner of a partition notes every batch it takes (host, partition, seq, the labels
its samples share) in memory, and writes a host's row to the journal's
``fleet_agents`` table at most once per ``batch_interval`` (docs/fleet.md, "Agents last
seen"): a fleet of 10,000 hosts costs about one row write per host per interval, batched
into one statement per heartbeat. Each row carries the host's anomalous metrics as the
instance's models noted them (``anomalous``: the ModelSet's, read per row written, not
per batch). Pure: the caller gives the clock and does the writing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from batond.engine.fleet import AgentSeen
from batond.events import Input, Sample

__all__ = ["AgentSeen", "SeenAgents", "host_labels"]


def host_labels(items: Iterable[Input]) -> dict[str, str] | None:
    """The labels every sample of a batch carries with the same value (``role: web``,
    not ``mount: /``), without ``host``; None when the batch has no sample (the last
    labels seen stay)."""
    common: dict[str, str] | None = None
    for item in items:
        if type(item) is not Sample:
            continue
        if common is None:
            common = dict(item.labels)
        else:
            common = {k: v for k, v in common.items() if item.labels.get(k) == v}
    if common is not None:
        common.pop("host", None)
    return common


class SeenAgents:
    """The agents seen since their rows were last written, and when each was written."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        #: host -> metric -> when a series of it last scored anomalous (none: no models)
        self.anomalous: Callable[[str], Mapping[str, float]] | None = None
        self._seen: dict[str, AgentSeen] = {}
        self._written: dict[str, float] = {}  # host -> when its row was last written
        self._labels: dict[str, dict[str, str]] = {}  # host -> the labels last seen

    def note(
        self, host: str, partition: int, seq: int, now: float, labels: dict[str, str] | None
    ) -> None:
        if labels is None:  # no sample in this batch: keep the labels last seen
            labels = self._labels.get(host, {})
        else:
            self._labels[host] = labels
        self._seen[host] = AgentSeen(host, partition, now, seq, labels)

    def due(self, now: float) -> list[AgentSeen]:
        """The rows to write now: hosts seen whose row is at least ``interval`` old
        (a new host at once). They count as written; :meth:`failed` puts them back."""
        out: list[AgentSeen] = []
        anomalous = self.anomalous
        for host, seen in list(self._seen.items()):
            if now - self._written.get(host, float("-inf")) >= self.interval:
                out.append(seen if anomalous is None else replace(seen, anomalous=anomalous(host)))
                self._written[host] = now
                del self._seen[host]
        return out

    def failed(self, rows: Iterable[AgentSeen]) -> None:
        """Rows that could not be written: due again at the next chance."""
        for row in rows:
            self._written.pop(row.host, None)
            self._seen.setdefault(row.host, row)

    def forget(self, partition: int) -> None:
        """A partition released: its hosts are the new owner's to note."""
        for host in [h for h, s in self._seen.items() if s.partition == partition]:
            del self._seen[host]
