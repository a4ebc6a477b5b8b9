"""The one exception type that reaches users as a one-line message instead of a traceback."""


class PsearchError(Exception):
    """A user-facing error: bad input, a missing file, an incompatible checkpoint.

    The CLI prints ``error: <message>`` and exits with status 1. Messages name the file and what
    is wrong with it, e.g. ``PsearchError(f"{path}: variable 'Img' missing")``.
    """
