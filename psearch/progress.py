"""Progress reporting shared by every long command: ``progress_bar(...)`` wraps tqdm.

One place decides how progress looks, so every stage shows the same thing: on a terminal a bar
with elapsed and remaining time; ``enabled=False`` shows nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one with ``total=``); tqdm's keyword arguments
    (``desc``, ``unit``, ``total``, ``leave``, ...) pass through."""
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not enabled, **kwargs)
