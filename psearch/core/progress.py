"""Progress reporting shared by every long command: ``progress_bar(...)`` wraps tqdm.

One place decides how progress looks, so every stage shows the same thing:

- on a terminal: tqdm's bar, redrawn in place, with elapsed and remaining time;
- anywhere else (a log file, a pipe, CI): one plain line every ``LINE_INTERVAL_S`` seconds and a
  last line when the work ends (so once per epoch for a bar per epoch), each ending in a newline,
  never a bar redrawn per step: ``detect:  40% 400/1000 pic [01:02<01:33, 6.4 pic/s, ...]``;
- ``enabled=False``: nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

LINE_INTERVAL_S = 5.0
"""Seconds between two progress lines when the output is not a terminal."""
LINE_FORMAT = ("{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} {unit} "
               "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")
LINE_FORMAT_NO_TOTAL = "{desc}: {n_fmt} {unit} [{elapsed}, {rate_fmt}{postfix}]"


class LineProgress(tqdm):
    """tqdm writing whole lines (``\\n``-terminated) at most every ``mininterval`` seconds, and
    one final line on close; for outputs that are not terminals."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("mininterval", LINE_INTERVAL_S)
        kwargs.pop("dynamic_ncols", None)
        kwargs.setdefault("ascii", True)
        iterable = args[0] if args else kwargs.get("iterable")
        total = kwargs.get("total")
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        kwargs.setdefault("bar_format", LINE_FORMAT if total else LINE_FORMAT_NO_TOTAL)
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "":  # tqdm clearing a bar it does not leave: lines need no clearing
            return False
        line = self.__str__() if msg is None else msg
        self.fp.write(line + "\n")
        self.fp.flush()
        self._last_line = line
        return True

    def close(self) -> None:
        """Write the final line (also for ``leave=False`` bars: a log keeps it), then close."""
        if getattr(self, "disable", True):
            return
        if self.__str__() != getattr(self, "_last_line", None):
            self.display()
        self.leave = False
        super().close()

    # A new postfix or description shows in the next timed line, not in a line of its own.
    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        super().set_postfix_str(s, refresh=False)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        super().set_description(desc, refresh=False)


def is_terminal(stream: Any) -> bool:
    """True when ``stream`` is an interactive terminal."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(iterable: Iterable | None = None, *, enabled: bool | None = True,
                 **kwargs: Any) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one with ``total=``); tqdm's keyword arguments
    (``desc``, ``unit``, ``total``, ``leave``, ``file``, ...) pass through. On a terminal a
    redrawn bar, elsewhere plain lines (see the module docstring). ``enabled=None``: only on a
    terminal (for short steps, such as reading annotations, that a log need not record)."""
    stream = kwargs.get("file") or sys.stderr
    if enabled is None:
        enabled = is_terminal(stream)
    if not is_terminal(stream):
        return LineProgress(iterable, disable=not enabled, **kwargs)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not enabled, **kwargs)
