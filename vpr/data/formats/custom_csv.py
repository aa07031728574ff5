"""The ``csv`` reader: a custom split from a CSV ``path,easting,northing,role``; see ``vpr.data.formats``."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path, PurePosixPath

import numpy as np

from vpr.data.formats.checks import DiskView, check_distinct, check_image_files, number_keys, resolve_split
from vpr.data.index import SplitRecords
from vpr.errors import VprError
from vpr.io import require_file

CSV_HEADER = ("path", "easting", "northing", "role")


def read_csv(csv_file: str | os.PathLike, root: str | os.PathLike, *, split: str | None = None,
             check_images: bool = True) -> SplitRecords:
    """A custom split from a CSV ``path,easting,northing,role``; see the module docstring."""
    csv_file = Path(csv_file)
    source = str(csv_file)
    split = resolve_split("test", split, source)
    require_file(csv_file)
    rows: dict[str, tuple[list[str], list[tuple[float, float]]]] = {"db": ([], []), "query": ([], [])}
    lines: dict[str, list[int]] = {"db": [], "query": []}  # file line of every row, for messages
    try:
        with open(csv_file, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or tuple(h.strip() for h in header) != CSV_HEADER:
                raise VprError(f"{source} line 1: header must be {','.join(CSV_HEADER)!r}, "
                               f"found {','.join(header or [])!r}")
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(CSV_HEADER):
                    raise VprError(f"{source} line {line}: expected {len(CSV_HEADER)} columns, "
                                   f"found {len(row)}")
                path, east, north, role = (c.strip() for c in row)
                if role not in rows:
                    raise VprError(f"{source} line {line}: role {role!r} is neither 'db' nor 'query'")
                if not path or PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
                    raise VprError(f"{source} line {line}: path {path!r} must be relative to the root")
                try:
                    xy = (float(east), float(north))
                except ValueError:
                    raise VprError(f"{source} line {line}: coordinates {east!r}, {north!r} are not numbers") \
                        from None
                if not all(math.isfinite(v) for v in xy):
                    raise VprError(f"{source} line {line}: coordinates {east!r}, {north!r} are not finite")
                rows[role][0].append(path)
                rows[role][1].append(xy)
                lines[role].append(line)
    except UnicodeDecodeError as err:
        raise VprError(f"{source}: not a UTF-8 text file ({err})") from err
    (db_path, db_xy), (q_path, q_xy) = rows["db"], rows["query"]
    def where(role: str, i: int) -> str:
        return f"line {lines[role][i]}"

    check_distinct(db_path, q_path, source, where)
    if check_images:
        check_image_files(DiskView(Path(root)), db_path, q_path, source, where)
    db_place = number_keys(db_xy)
    q_place = number_keys(q_xy, start=int(db_place.max(initial=-1)) + 1)
    return SplitRecords(split, db_path, np.asarray(db_xy, dtype=np.float64).reshape(-1, 2), db_place,
                        q_path, np.asarray(q_xy, dtype=np.float64).reshape(-1, 2), q_place)

