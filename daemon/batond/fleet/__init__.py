"""The fleet: agents that publish their host's inputs in batches, central instances that
share the partitions of the fleet through PostgreSQL and decide for them (docs/fleet.md).

``partition`` and ``wire`` are what both roles share: which partition a host is in, the
topics, and the shape of one batch on the wire.
"""
