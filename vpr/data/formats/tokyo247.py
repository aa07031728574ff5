"""The ``tokyo247`` reader: the Tokyo 24/7 test split (tokyo247.mat), its panorama ids and the .jpg/.png
names; see ``vpr.data.formats``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from vpr.data.formats.checks import (
    DiskView,
    check_distinct,
    check_image_files,
    number_keys,
    resolve_split,
    utm_keys,
    warn_mixed_utm,
)
from vpr.data.formats.dbstruct import PITTS_FIELDS, images_and_utm, mat_row
from vpr.data.index import SplitRecords
from vpr.data.matfile import load_dbstruct
from vpr.errors import VprError

log = logging.getLogger(__name__)

TOKYO247_CUTOUTS = 12  # cut-outs per Tokyo 24/7 panorama


def _panorama_ids(fns: list[str], source: str) -> tuple[np.ndarray, str]:
    split_names = [fn.rpartition("/") for fn in fns]
    if not all("_" in name for _, _, name in split_names):
        log.warning("%s: database names carry no panorama id (no underscore); grouping blocks of %d "
                    "consecutive images as one panorama", source, TOKYO247_CUTOUTS)
        return np.arange(len(fns), dtype=np.int64) // TOKYO247_CUTOUTS, "blocks"
    keys = [f"{parent}/{name.rsplit('_', 1)[0]}" if parent else name.rsplit("_", 1)[0]
            for parent, _, name in split_names]
    ids = number_keys(keys)
    # numbered by first appearance, the ids decrease exactly where a panorama reappears after another one
    back = np.flatnonzero(np.diff(ids) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise VprError(f"{source}: field dbImageFns: the cut-outs of panorama {keys[i]!r} are not "
                       f"consecutive "
                       f"(it reappears at index {i}, {fns[i]})")
    sizes = np.bincount(ids)
    if np.any(sizes != TOKYO247_CUTOUTS):
        log.warning("%s: %d panorama(s) do not have %d cut-outs (first: %s with %d)", source,
                    int(np.sum(sizes != TOKYO247_CUTOUTS)), TOKYO247_CUTOUTS,
                    keys[int(np.flatnonzero(ids == np.flatnonzero(sizes != TOKYO247_CUTOUTS)[0])[0])],
                    int(sizes[sizes != TOKYO247_CUTOUTS][0]))
    return ids, "file name"


def read_tokyo247(mat: str | os.PathLike, root: str | os.PathLike, *, split: str | None = None,
                  check_images: bool = True) -> SplitRecords:
    """The Tokyo 24/7 test split (tokyo247.mat); see the module docstring for paths and place ids."""
    source = str(mat)
    s = load_dbstruct(mat, PITTS_FIELDS)
    split = resolve_split("test", split, source)
    db_fns, q_fns, db_utm, q_utm = images_and_utm(s, source)
    db_place, rule = _panorama_ids(db_fns, source)

    # the .mat lists .jpg while the images on disk are .png: store the name that exists
    disk = DiskView(Path(root))
    db_path = []
    for fn in db_fns:
        path = f"tokyo247/images/{fn}"
        if fn.lower().endswith(".jpg") and not disk.exists(path):
            png = path[:-4] + ".png"
            if disk.exists(png):
                path = png
        db_path.append(path)
    q_path = [f"tokyo247/query/{fn}" for fn in q_fns]
    check_distinct(db_path, q_path, source, mat_row)
    if check_images:
        check_image_files(disk, db_path, q_path, source, mat_row)
    q_place = number_keys(utm_keys(q_utm), start=int(db_place.max(initial=-1)) + 1)
    warn_mixed_utm(db_place, db_utm, "database", source)
    return SplitRecords(split, db_path, db_utm, db_place, q_path, q_utm, q_place,
                        extra_attrs={"panorama_rule": rule})

