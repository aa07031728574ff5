"""The ``tokyotm`` reader: a TokyoTM train or val split, its identity rule (exact UTM + time stamp) and the
val query draw; see ``vpr.data.formats``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from vpr.data.formats.checks import DiskView, check_exist, number_keys, resolve_split, utm_keys
from vpr.data.formats.dbstruct import TOKYOTM_FIELDS, images_and_utm, time_stamps
from vpr.data.index import SplitRecords
from vpr.data.matfile import load_dbstruct
from vpr.errors import VprError

log = logging.getLogger(__name__)


def read_tokyotm(mat: str | os.PathLike, root: str | os.PathLike, *, split: str | None = None,
                 seed: int = 43, check_images: bool = True) -> SplitRecords:
    """A TokyoTM train or val split; see the module docstring for the identity rule and the val draw."""
    source = str(mat)
    s = load_dbstruct(mat, TOKYOTM_FIELDS)
    split = resolve_split(s["whichSet"], split, source)
    if split not in ("train", "val"):
        raise VprError(f"{source}: TokyoTM provides train and val splits only, not {split!r}")
    db_fns, q_fns, db_utm, q_utm = images_and_utm(s, source)
    db_ts = time_stamps(s["dbTimeStamp"], "dbTimeStamp", len(db_fns), "dbImageFns", source)
    q_ts = time_stamps(s["qTimeStamp"], "qTimeStamp", len(q_fns), "qImageFns", source)

    # queries first, a path listed twice kept once
    first: dict[str, int] = {}
    fns, utm_rows, stamps = [], [], []
    conflicts = 0
    for fn, utm, ts in zip(q_fns + db_fns, np.concatenate([q_utm, db_utm]), q_ts + db_ts, strict=True):
        if fn in first:
            j = first[fn]
            conflicts += int(stamps[j] != ts or not np.array_equal(utm_rows[j], utm))
            continue
        first[fn] = len(fns)
        fns.append(fn)
        utm_rows.append(utm)
        stamps.append(ts)
    if conflicts:
        log.warning("%s: %d image(s) listed twice with different coordinates or time stamps; the first "
                    "listing (queries before database) is used", source, conflicts)
    utm = np.asarray(utm_rows, dtype=np.float64).reshape(-1, 2)
    paths = [f"tokyoTM/images/{fn}" for fn in fns]
    if check_images:
        check_exist(DiskView(Path(root)), paths, "TokyoTM", source)
    locations = utm_keys(utm)
    pid = number_keys(zip(locations, stamps, strict=True))
    extra = {"identity": "exact UTM + time stamp"}

    if split == "train":
        return SplitRecords(split, paths, utm, pid, list(paths), utm.copy(), pid.copy(), extra_attrs=extra)

    groups: dict[tuple[float, float], list[int]] = {}  # location -> its pids, first appearance order
    for loc, p in zip(locations, pid.tolist(), strict=True):
        g = groups.setdefault(loc, [])
        if p not in g:
            g.append(p)
    rng = np.random.default_rng(seed)
    query_pids = {g[int(rng.integers(len(g)))] for g in groups.values() if len(g) > 1}
    is_q = np.array([p in query_pids for p in pid.tolist()], dtype=bool)
    qi, di = np.flatnonzero(is_q), np.flatnonzero(~is_q)
    extra["seed"] = int(seed)
    return SplitRecords(split, [paths[i] for i in di], utm[di], pid[di], [paths[i] for i in qi], utm[qi],
                        pid[qi], extra_attrs=extra)

