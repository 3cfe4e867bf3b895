"""The ``batond`` command line: one module per command family."""
