"""Click commands of this stage, registered on the ``psearch`` group by ``psearch.cli``."""

import click

COMMANDS: list[click.Command] = []
