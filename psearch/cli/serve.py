"""``psearch serve``: the resident search service (``psearch.serve``) on one host:port."""

from __future__ import annotations

from pathlib import Path

import click

from psearch.core.errors import PsearchError
from psearch.core.options import checkpoint_option, device_option


@click.command("serve")
@click.option("--gallery", "gallery_dir", required=True, type=click.Path(path_type=Path),
              help="Gallery directory built by `psearch index`.")
@checkpoint_option()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback exposes the gallery to the network.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@device_option()
@click.option("--token", envvar="PSEARCH_TOKEN",
              help="Enable POST /add for clients sending `Authorization: Bearer TOKEN` "
                   "(or set PSEARCH_TOKEN). Without it the gallery is read-only.")
def serve_command(gallery_dir: Path, checkpoint: Path | None, host: str, port: int, device: str,
                  token: str | None) -> None:
    """Serve a gallery over HTTP: a JSON API and a search page at http://HOST:PORT/.

    The gallery and model are loaded once; a generation published later by
    `psearch index --add` is picked up without a restart. API docs at /docs.

    \b
    Example:
      psearch serve --gallery gallery/ --port 8000
    """
    try:
        import uvicorn
    except ImportError:
        raise PsearchError("psearch serve needs FastAPI and uvicorn: pip install "
                           "'psearch[serve]'") from None
    from psearch.serve.app import create_app

    app = create_app(gallery_dir, device=device, checkpoint=checkpoint, token=token)
    click.echo(f"serving {gallery_dir} ({len(app.state.gallery.current().gallery)} rows) on "
               f"http://{host}:{port}/", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


COMMANDS: list[click.Command] = [serve_command]
