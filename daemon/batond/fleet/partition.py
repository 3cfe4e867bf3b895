"""Which partition a host belongs to, and the topics of a partition.

The hash must be the same in every process and on every machine, for every Python
version: an agent and the central instance that owns its partition compute it
independently. ``hash()`` is salted per process, so it is never used here.
"""

from __future__ import annotations

import zlib

__all__ = ["batch_topic", "partition_filter", "partition_of", "partition_topic_host"]


def partition_of(host: str, partitions: int) -> int:
    """The partition of ``host`` among ``partitions`` (0 .. partitions-1): CRC-32 of its name."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    return zlib.crc32(host.encode("utf-8")) % partitions


def batch_topic(prefix: str, partitions: int, host: str) -> str:
    """Where ``host``'s agent publishes its batches: ``<prefix>/<partition>/<host>``."""
    return f"{prefix}/{partition_of(host, partitions)}/{host}"


def partition_filter(prefix: str, partition: int) -> str:
    """The subscription of the owner of ``partition``: ``<prefix>/<partition>/+``."""
    return f"{prefix}/{partition}/+"


def partition_topic_host(prefix: str, topic: str) -> tuple[int, str] | None:
    """``(partition, host)`` of a batch topic, or None when it is not one."""
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    part, sep, host = topic[len(head) :].partition("/")
    if not sep or not part.isdigit() or not host or "/" in host:
        return None
    return int(part), host
