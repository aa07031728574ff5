"""The ``pitts`` reader: a Pitts30k / Pitts250k split (.mat); see ``vpr.data.formats`` for paths and place
ids."""

from __future__ import annotations

import os
from pathlib import Path

from vpr.data.formats.checks import (
    DiskView,
    check_distinct,
    check_image_files,
    number_keys,
    resolve_split,
    warn_mixed_utm,
)
from vpr.data.formats.dbstruct import PITTS_FIELDS, images_and_utm, mat_row
from vpr.data.index import SplitRecords
from vpr.data.matfile import load_dbstruct


def read_pitts(mat: str | os.PathLike, root: str | os.PathLike, *, split: str | None = None,
               check_images: bool = True) -> SplitRecords:
    """A Pitts30k/Pitts250k split (.mat); see the module docstring for paths and place ids."""
    source = str(mat)
    s = load_dbstruct(mat, PITTS_FIELDS)
    split = resolve_split(s["whichSet"], split, source)
    db_fns, q_fns, db_utm, q_utm = images_and_utm(s, source)
    db_path = [f"Pittsburgh/images/{fn}" for fn in db_fns]
    q_path = [f"Pittsburgh/queries/{fn}" for fn in q_fns]
    check_distinct(db_path, q_path, source, mat_row)
    if check_images:
        check_image_files(DiskView(Path(root)), db_path, q_path, source, mat_row)

    def key(fn: str) -> str:
        parent, _, name = fn.rpartition("/")
        stem = name.split("_", 1)[0]
        return f"{parent}/{stem}" if parent else stem

    db_place = number_keys(key(fn) for fn in db_fns)
    q_place = number_keys((key(fn) for fn in q_fns), start=int(db_place.max(initial=-1)) + 1)
    warn_mixed_utm(db_place, db_utm, "database", source)
    warn_mixed_utm(q_place, q_utm, "query", source)
    return SplitRecords(split, db_path, db_utm, db_place, q_path, q_utm, q_place)

