"""The ``psearch`` command line: one click group; each stage contributes its own commands.

Every stage module ``psearch.<stage>.commands`` exposes ``COMMANDS``, a list of click commands.
User-facing failures are raised as ``PsearchError`` and printed here as one line, exit code 1.
"""

from __future__ import annotations

import importlib
import sys

import click

from psearch import __version__
from psearch.core.errors import PsearchError

STAGE_COMMAND_MODULES = (
    "psearch.cli.data",
    "psearch.cli.evaluation",
    "psearch.cli.detector",
    "psearch.cli.reid",
    "psearch.cli.joint",
    "psearch.cli.gallery",
    "psearch.pipeline.demo",
    "psearch.cli.weights",
    "psearch.cli.export",
    "psearch.cli.serve",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="psearch")
def cli() -> None:
    """psearch: find a person from one photo in a gallery of scene images or videos.

    \b
    The cascade, one command per stage:
      psearch synth world/ --format cuhk          make a synthetic dataset
      psearch train-detector --data world/ ...    train the person detector
      psearch detect --weights det.pt frames/ --out dets/
      psearch train-reid --data world/ ...        train the re-ID embedding
      psearch embed --weights runs/reid/last.pt --manifest dets/manifest.csv --out emb/
      psearch index --manifest ... --embeddings ... --out gallery/
      psearch query --gallery gallery/ --image q.jpg --box x1,y1,x2,y2

    Run ``psearch COMMAND --help`` for each command's options and an example.
    """


for _module_name in STAGE_COMMAND_MODULES:
    for _command in importlib.import_module(_module_name).COMMANDS:
        cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: run the CLI, turning user errors into one line."""
    try:
        cli.main(args=argv, prog_name="psearch", standalone_mode=False)
    except PsearchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
