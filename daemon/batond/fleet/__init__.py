"""The fleet: agents on every host, central instances (docs/fleet.md)."""
