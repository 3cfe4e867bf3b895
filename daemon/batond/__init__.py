"""batond: adaptive monitoring and auto-remediation daemon."""

__version__ = "0.1.0"
