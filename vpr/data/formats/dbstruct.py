"""The fields of a ``dbStruct`` (.mat) of the Pittsburgh and Tokyo data sets, parsed and checked: file name
lists, 2 x N UTM coordinates, counts and time stamps; errors name the file and the field."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from vpr.errors import VprError

PITTS_FIELDS = ("whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages", "numQueries")
TOKYOTM_FIELDS = ("whichSet", "dbImageFns", "utmDb", "dbTimeStamp", "qImageFns", "utmQ", "qTimeStamp",
                  "numImages", "numQueries")


def mat_row(role: str, i: int) -> str:
    return f"{'dbImageFns' if role == 'db' else 'qImageFns'} entry {i + 1}"


def cell_strings(value: Any, field: str, source: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise VprError(f"{source}: field {field} is not a cell array of strings")
    bad = [i for i, v in enumerate(value) if not v]
    if bad:
        raise VprError(f"{source}: field {field} has {len(bad)} empty file name(s), first at index {bad[0]}")
    return value


def utm_columns(value: Any, field: str, n: int, names_field: str, source: str) -> np.ndarray:
    """A MATLAB 2 x N coordinate array as N x 2 (easting, northing), checked against the name count."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf":
        raise VprError(f"{source}: field {field} is not numeric")
    if arr.shape != (2, n) and not (n == 0 and arr.size == 0):
        raise VprError(f"{source}: field {field} has shape {arr.shape}, expected (2, {n}) "
                       f"to match the {n} names of {names_field}")
    utm = arr.astype(np.float64).reshape(2, n).T
    bad = np.flatnonzero(~np.isfinite(utm).all(axis=1))
    if bad.size:
        raise VprError(f"{source}: field {field} has NaN or infinite coordinates for {bad.size} image(s), "
                       f"first at index {bad[0]}")
    return utm


def check_count(value: Any, field: str, n: int, names_field: str, source: str) -> None:
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "iuf":
        raise VprError(f"{source}: field {field} is not a number")
    if float(arr.ravel()[0]) != n:
        raise VprError(f"{source}: field {field} = {arr.ravel()[0]:g} disagrees with the {n} names of "
                       f"{names_field}")



def images_and_utm(s: dict[str, Any], source: str) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """The database and query file names and UTM coordinates of a dbStruct, their counts checked."""
    db_fns = cell_strings(s["dbImageFns"], "dbImageFns", source)
    q_fns = cell_strings(s["qImageFns"], "qImageFns", source)
    check_count(s["numImages"], "numImages", len(db_fns), "dbImageFns", source)
    check_count(s["numQueries"], "numQueries", len(q_fns), "qImageFns", source)
    db_utm = utm_columns(s["utmDb"], "utmDb", len(db_fns), "dbImageFns", source)
    q_utm = utm_columns(s["utmQ"], "utmQ", len(q_fns), "qImageFns", source)
    return db_fns, q_fns, db_utm, q_utm


def time_stamps(value: Any, field: str, n: int, names_field: str, source: str) -> list[Hashable]:
    if isinstance(value, list):
        if len(value) != n or not all(isinstance(v, str) for v in value):
            raise VprError(f"{source}: field {field} has {len(value)} entries, expected {n} strings "
                           f"to match {names_field}")
        return list(value)
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf" or arr.size != n or (arr.ndim == 2 and min(arr.shape) != 1 and n > 1):
        raise VprError(f"{source}: field {field} has shape {arr.shape}, expected {n} time stamps "
                       f"to match {names_field}")
    flat = arr.ravel()
    if arr.dtype.kind == "f" and not np.isfinite(flat).all():
        raise VprError(f"{source}: field {field} has NaN time stamps")
    return flat.tolist()

