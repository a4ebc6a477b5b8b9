"""The ``psearch`` command line (``psearch.cli.main``): one module per command group, each only
parsing options and calling the layer below."""

from psearch.cli.main import cli, main

__all__ = ["cli", "main"]
