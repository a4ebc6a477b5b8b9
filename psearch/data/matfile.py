"""Safe reading of MATLAB ``.mat`` files: every malformation becomes a one-line ``PsearchError``.

Files are read with ``scipy.io.loadmat(squeeze_me=False, struct_as_record=True)``: every value
keeps its MATLAB shape (at least 2-D), so a struct array or cell with one element is still an
array and never collapses to a 0-d scalar. The helpers below flatten with ``ravel`` instead of
``squeeze``, which always yields a 1-D sequence, however many elements there are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from psearch.core.errors import PsearchError


def load_mat(path: Path, *variables: str) -> dict[str, np.ndarray]:
    """Read ``variables`` from a ``.mat`` file; ``PsearchError`` if the file or one is missing."""
    if not path.is_file():
        raise PsearchError(f"{path}: file not found")
    try:
        content = scipy.io.loadmat(
            str(path), squeeze_me=False, struct_as_record=True, variable_names=list(variables)
        )
    except NotImplementedError:
        raise PsearchError(
            f"{path}: MATLAB v7.3 (HDF5) files are not supported; save with -v7"
        ) from None
    except Exception as exc:  # scipy raises many types (ValueError, TypeError, EOFError...)
        raise PsearchError(
            f"{path}: not a readable .mat file ({type(exc).__name__}: {exc})"
        ) from None
    missing = [v for v in variables if v not in content]
    if missing:
        raise PsearchError(f"{path}: variable {missing[0]!r} missing")
    return {v: content[v] for v in variables}


def load_first_variable(path: Path, candidates: tuple[str, ...]) -> tuple[str, np.ndarray]:
    """The first of ``candidates`` present in a ``.mat`` file, as (name, value)."""
    if not path.is_file():
        raise PsearchError(f"{path}: file not found")
    try:
        content = scipy.io.loadmat(str(path), squeeze_me=False, struct_as_record=True)
    except NotImplementedError:
        raise PsearchError(
            f"{path}: MATLAB v7.3 (HDF5) files are not supported; save with -v7"
        ) from None
    except Exception as exc:
        raise PsearchError(
            f"{path}: not a readable .mat file ({type(exc).__name__}: {exc})"
        ) from None
    for name in candidates:
        if name in content:
            return name, content[name]
    raise PsearchError(f"{path}: none of the variables {', '.join(candidates)} found")


def elements(value: np.ndarray) -> np.ndarray:
    """The elements of a cell or struct array of any shape, as a 1-D array (never 0-d)."""
    return np.asarray(value).ravel(order="F")


def field(structs: np.ndarray, name: str, where: str) -> np.ndarray:
    """Field ``name`` of every element of a struct array, 1-D; ``where`` names it in errors."""
    structs = np.asarray(structs)
    if structs.dtype.names is None or name not in structs.dtype.names:
        raise PsearchError(f"{where}: struct field {name!r} missing")
    return elements(structs[name])


def cell_struct(cell: object, where: str) -> np.ndarray:
    """The struct held by one cell of a cell array (MATLAB ``{struct}``), as a struct array."""
    value = np.asarray(cell)
    if value.dtype == object and value.size == 1:  # a cell nested in a cell
        value = np.asarray(value.flat[0])
    if value.dtype.names is None:
        raise PsearchError(f"{where}: expected a struct")
    return value


def to_str(value: object, where: str) -> str:
    """A MATLAB char array (as loadmat returns it) or a one-element cell of it, as ``str``."""
    value = np.asarray(value)
    if value.dtype == object:
        if value.size != 1:
            raise PsearchError(f"{where}: expected a string, got a cell of {value.size}")
        value = np.asarray(value.flat[0])
    if value.dtype.kind != "U":
        raise PsearchError(f"{where}: expected a string, got {value.dtype} data")
    if value.size == 0:
        return ""
    return "".join(value.ravel().tolist()).strip()


def strings(value: np.ndarray, where: str) -> list[str]:
    """A cell array of char (``N x 1`` or ``1 x N``, any N) as a list of ``str``."""
    value = np.asarray(value)
    if value.dtype.kind == "U":  # a char matrix: one name per row
        return ["".join(row).strip() for row in np.atleast_2d(value).tolist()]
    if value.dtype != object:
        raise PsearchError(f"{where}: expected a cell array of strings, got {value.dtype} data")
    return [to_str(v, f"{where} element {i + 1}") for i, v in enumerate(elements(value))]


def xywh(value: object, where: str) -> np.ndarray | None:
    """A 1x4 ``[x y w h]`` as float64 [4]; ``None`` for an empty array (MATLAB ``zeros(1, 0)``)."""
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind not in "iuf":
        raise PsearchError(f"{where}: expected a numeric [x y w h], got {array.dtype} data")
    if array.size == 0:
        return None
    if array.size != 4:
        raise PsearchError(f"{where}: expected 4 numbers [x y w h], got {array.size}")
    return array.astype(np.float64).ravel()


def xywh_rows(values: np.ndarray, where: str) -> np.ndarray:
    """A sequence of 1x4 ``[x y w h]`` arrays (a struct array's field) as float64 [N, 4]."""
    values = elements(values)
    if len(values) == 0:
        return np.zeros((0, 4), dtype=np.float64)
    sizes = np.fromiter((np.size(v) for v in values), dtype=np.int64, count=len(values))
    bad = np.flatnonzero(sizes != 4)
    if len(bad):
        raise PsearchError(
            f"{where}: box {bad[0] + 1} has {sizes[bad[0]]} numbers, expected [x y w h]"
        )
    try:
        return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in values]).reshape(
            -1, 4
        )
    except (TypeError, ValueError):
        raise PsearchError(f"{where}: boxes are not numeric [x y w h]") from None


def xywh_to_xyxy(boxes: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """[N, 4] (x, y, w, h) -> [N, 4] (x1, y1, x2, y2) = (x, y, x + w, y + h), float32 default."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1).astype(dtype)
