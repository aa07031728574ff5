"""One reader per data-set format, each returning the ``SplitRecords`` of one split (see ``vpr.data.index``).

Formats and their identity (place id) rules:

* ``pitts`` (Pitts30k/Pitts250k ``.mat``): database images under ``ROOT/Pittsburgh/images/``, queries under
  ``ROOT/Pittsburgh/queries/``. Place = file name up to its first underscore (``000/000123`` for
  ``000/000123_pitch1_yaw3.jpg``: the 24 views of one panorama). Database places are numbered 0..P-1 in
  order of first appearance, query places P.. onward, so a query place never equals a database place.
* ``tokyo247`` (``tokyo247.mat``): database under ``ROOT/tokyo247/images/`` (a name listed as ``.jpg``
  resolves to the ``.png`` on disk when only that exists; this looks at the disk even with
  ``check_images=False``), queries under ``ROOT/tokyo247/query/``.
  Database place = panorama id = path stem up to its last underscore (``03814/381442`` for
  ``03814/381442_05.jpg``: 12 consecutive cut-outs), used by the spatial NMS; if the names carry no
  underscore, blocks of 12 consecutive entries. Query places by exact UTM, in their own namespace.
  The TokyoTM files are not needed.
* ``tokyotm`` (``tokyoTM_train.mat`` / ``tokyoTM_val.mat``): images under ``ROOT/tokyoTM/images/``. The
  query and database lists are concatenated (queries first, repeated paths kept once). **Identity rule
  (deliberate and format-independent): one identity = one (exact UTM, time stamp) pair**, i.e. the images
  of one location captured at one time. Queries and database share this namespace.
  Train: the query set and the database are both the whole list; same-identity images are excluded from
  the positives by ``build_index``. Val: for every location (exact UTM) with more than one time stamp, one
  time-stamp group, drawn with ``numpy.random.default_rng(seed)`` while visiting locations in order of first
  appearance, becomes queries and the others database; single-time-stamp locations are database only.
* ``csv``: ``path,easting,northing,role`` (role ``db`` or ``query``), paths relative to ROOT; place = exact
  UTM, database and query places in separate namespaces.

Every reader keeps the file's image order, validates its input (fields, counts, shapes, finite
coordinates, every image listed once and never both as database image and as query (TokyoTM train, whose
queries are its database by design, excepted), images present on disk as files unless
``check_images=False``) and raises ``VprError`` naming the file and field. Readers never write anything.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from vpr.data.index import SPLITS, SplitRecords
from vpr.data.matfile import load_dbstruct
from vpr.errors import VprError

log = logging.getLogger(__name__)

PITTS_FIELDS = ("whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages", "numQueries")
TOKYOTM_FIELDS = ("whichSet", "dbImageFns", "utmDb", "dbTimeStamp", "qImageFns", "utmQ", "qTimeStamp",
                  "numImages", "numQueries")
CSV_HEADER = ("path", "easting", "northing", "role")
TOKYO247_CUTOUTS = 12  # cut-outs per Tokyo 24/7 panorama
_MAX_LISTED = 5  # missing files named in an error message


# --------------------------------------------------------------------------- helpers

class _DiskView:
    """Existence checks through cached directory listings (one ``os.scandir`` per directory).

    Only files count as present: a directory (or anything else) where an image should be is not one.
    """

    def __init__(self, root: Path):
        self.root = root
        self._dirs: dict[str, dict[str, bool]] = {}  # directory -> {name: is a file (links followed)}

    def _entries(self, parent: str) -> dict[str, bool]:
        entries = self._dirs.get(parent)
        if entries is None:
            entries = {}
            try:
                with os.scandir(self.root / parent) as it:
                    for entry in it:
                        try:
                            entries[entry.name] = entry.is_file()
                        except OSError:
                            entries[entry.name] = False
            except OSError:
                pass
            self._dirs[parent] = entries
        return entries

    def exists(self, rel: str) -> bool:
        """``rel`` is a file (or a link to one) under the root."""
        parent, _, name = rel.rpartition("/")
        return self._entries(parent).get(name, False)

    def is_other(self, rel: str) -> bool:
        """``rel`` exists under the root but is not a file (a directory, a dangling link, ...)."""
        parent, _, name = rel.rpartition("/")
        return self._entries(parent).get(name) is False


def _check_exist(disk: _DiskView, paths: Sequence[str], what: str, source: str) -> None:
    missing = [p for p in paths if not disk.exists(p)]
    not_files = [p for p in missing if disk.is_other(p)]
    if not_files:
        raise VprError(f"{source}: {len(not_files)} of {len(paths)} {what} image path(s) listed are not "
                       f"files under {disk.root} (a directory, or a link to nothing; first: "
                       f"{', '.join(not_files[:_MAX_LISTED])})")
    if missing:
        raise VprError(f"{source}: {len(missing)} of {len(paths)} {what} image(s) listed are missing under "
                       f"{disk.root} (first: {', '.join(missing[:_MAX_LISTED])}); "
                       "fix --root or pass --skip-image-check")


def _check_distinct(db_path: Sequence[str], q_path: Sequence[str], source: str,
                    where: Callable[[str, int], str]) -> None:
    """Refuse an image listed twice in one role, or both as database and as query image.

    A database image listed twice is ranked twice; a query that is also a database image retrieves itself
    at distance 0 and counts as a hit. Paths are compared after normalisation (``a/./b`` = ``a/b``).
    ``where(role, i)`` names the row ``i`` of ``role`` ("db" or "query") for the message.
    """
    first: dict[str, tuple[str, int]] = {}
    for role, paths in (("db", db_path), ("query", q_path)):
        for i, path in enumerate(paths):
            key = str(PurePosixPath(path))
            seen = first.setdefault(key, (role, i))
            if seen == (role, i):
                continue
            if seen[0] == role:
                raise VprError(f"{source}: {'database' if role == 'db' else 'query'} image {path!r} is "
                               f"listed twice ({where(*seen)} and {where(role, i)}); list every image once")
            raise VprError(f"{source}: image {path!r} is listed both as database image ({where(*seen)}) "
                           f"and as query ({where(role, i)}); a query would retrieve itself")


def _mat_row(role: str, i: int) -> str:
    return f"{'dbImageFns' if role == 'db' else 'qImageFns'} entry {i + 1}"


def _strings(value: Any, field: str, source: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise VprError(f"{source}: field {field} is not a cell array of strings")
    bad = [i for i, v in enumerate(value) if not v]
    if bad:
        raise VprError(f"{source}: field {field} has {len(bad)} empty file name(s), first at index {bad[0]}")
    return value


def _utm(value: Any, field: str, n: int, names_field: str, source: str) -> np.ndarray:
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


def _count(value: Any, field: str, n: int, names_field: str, source: str) -> None:
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "iuf":
        raise VprError(f"{source}: field {field} is not a number")
    if float(arr.ravel()[0]) != n:
        raise VprError(f"{source}: field {field} = {arr.ravel()[0]:g} disagrees with the {n} names of "
                       f"{names_field}")


def _split(value: Any, override: str | None, source: str) -> str:
    if override is not None:
        split = override
    elif isinstance(value, str):
        split = value.strip()
    else:
        raise VprError(f"{source}: field whichSet is not a string (pass --split)")
    if split not in SPLITS:
        raise VprError(f"{source}: split {split!r} (from {'--split' if override else 'field whichSet'}) "
                       f"is not one of {', '.join(SPLITS)}")
    return split


def _number(keys: Iterable[Hashable], start: int = 0) -> np.ndarray:
    """Integer ids start, start+1, ... for the distinct keys, in order of first appearance."""
    ids: dict[Hashable, int] = {}
    return np.array([ids.setdefault(k, start + len(ids)) for k in keys], dtype=np.int64)


def _utm_keys(utm: np.ndarray) -> list[tuple[float, float]]:
    return [(float(e), float(n)) for e, n in utm]


def _warn_mixed_utm(place: np.ndarray, utm: np.ndarray, what: str, source: str) -> None:
    """Warn when images of one place do not share one coordinate (the reference asserts they do)."""
    if place.size == 0:
        return
    _, first, inverse = np.unique(place, return_index=True, return_inverse=True)
    anchor = utm[first[inverse]]
    bad = np.flatnonzero((anchor != utm).any(axis=1))
    if bad.size:
        log.warning("%s: %d %s image(s) do not share the coordinates of the first image of their place "
                    "(first at index %d)", source, bad.size, what, bad[0])


def _images_and_utm(s: dict[str, Any], source: str) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """The database and query file names and UTM coordinates of a dbStruct, their counts checked."""
    db_fns = _strings(s["dbImageFns"], "dbImageFns", source)
    q_fns = _strings(s["qImageFns"], "qImageFns", source)
    _count(s["numImages"], "numImages", len(db_fns), "dbImageFns", source)
    _count(s["numQueries"], "numQueries", len(q_fns), "qImageFns", source)
    db_utm = _utm(s["utmDb"], "utmDb", len(db_fns), "dbImageFns", source)
    q_utm = _utm(s["utmQ"], "utmQ", len(q_fns), "qImageFns", source)
    return db_fns, q_fns, db_utm, q_utm


# --------------------------------------------------------------------------- pitts

def read_pitts(mat: str | os.PathLike, root: str | os.PathLike, *, split: str | None = None,
               check_images: bool = True) -> SplitRecords:
    """A Pitts30k/Pitts250k split (.mat); see the module docstring for paths and place ids."""
    source = str(mat)
    s = load_dbstruct(mat, PITTS_FIELDS)
    split = _split(s["whichSet"], split, source)
    db_fns, q_fns, db_utm, q_utm = _images_and_utm(s, source)
    db_path = [f"Pittsburgh/images/{fn}" for fn in db_fns]
    q_path = [f"Pittsburgh/queries/{fn}" for fn in q_fns]
    _check_distinct(db_path, q_path, source, _mat_row)
    if check_images:
        disk = _DiskView(Path(root))
        _check_exist(disk, db_path, "database", source)
        _check_exist(disk, q_path, "query", source)

    def key(fn: str) -> str:
        parent, _, name = fn.rpartition("/")
        stem = name.split("_", 1)[0]
        return f"{parent}/{stem}" if parent else stem

    db_place = _number(key(fn) for fn in db_fns)
    q_place = _number((key(fn) for fn in q_fns), start=int(db_place.max(initial=-1)) + 1)
    _warn_mixed_utm(db_place, db_utm, "database", source)
    _warn_mixed_utm(q_place, q_utm, "query", source)
    return SplitRecords(split, db_path, db_utm, db_place, q_path, q_utm, q_place)


# --------------------------------------------------------------------------- tokyo247

def _panorama_ids(fns: list[str], source: str) -> tuple[np.ndarray, str]:
    split_names = [fn.rpartition("/") for fn in fns]
    if not all("_" in name for _, _, name in split_names):
        log.warning("%s: database names carry no panorama id (no underscore); grouping blocks of %d "
                    "consecutive images as one panorama", source, TOKYO247_CUTOUTS)
        return np.arange(len(fns), dtype=np.int64) // TOKYO247_CUTOUTS, "blocks"
    keys = [f"{parent}/{name.rsplit('_', 1)[0]}" if parent else name.rsplit("_", 1)[0]
            for parent, _, name in split_names]
    ids = _number(keys)
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
    split = _split("test", split, source)
    db_fns, q_fns, db_utm, q_utm = _images_and_utm(s, source)
    db_place, rule = _panorama_ids(db_fns, source)

    # the .mat lists .jpg while the images on disk are .png: store the name that exists
    disk = _DiskView(Path(root))
    db_path = []
    for fn in db_fns:
        path = f"tokyo247/images/{fn}"
        if fn.lower().endswith(".jpg") and not disk.exists(path):
            png = path[:-4] + ".png"
            if disk.exists(png):
                path = png
        db_path.append(path)
    q_path = [f"tokyo247/query/{fn}" for fn in q_fns]
    _check_distinct(db_path, q_path, source, _mat_row)
    if check_images:
        _check_exist(disk, db_path, "database", source)
        _check_exist(disk, q_path, "query", source)
    q_place = _number(_utm_keys(q_utm), start=int(db_place.max(initial=-1)) + 1)
    _warn_mixed_utm(db_place, db_utm, "database", source)
    return SplitRecords(split, db_path, db_utm, db_place, q_path, q_utm, q_place,
                        extra_attrs={"panorama_rule": rule})


# --------------------------------------------------------------------------- tokyotm

def _stamps(value: Any, field: str, n: int, names_field: str, source: str) -> list[Hashable]:
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


def read_tokyotm(mat: str | os.PathLike, root: str | os.PathLike, *, split: str | None = None,
                 seed: int = 43, check_images: bool = True) -> SplitRecords:
    """A TokyoTM train or val split; see the module docstring for the identity rule and the val draw."""
    source = str(mat)
    s = load_dbstruct(mat, TOKYOTM_FIELDS)
    split = _split(s["whichSet"], split, source)
    if split not in ("train", "val"):
        raise VprError(f"{source}: TokyoTM provides train and val splits only, not {split!r}")
    db_fns, q_fns, db_utm, q_utm = _images_and_utm(s, source)
    db_ts = _stamps(s["dbTimeStamp"], "dbTimeStamp", len(db_fns), "dbImageFns", source)
    q_ts = _stamps(s["qTimeStamp"], "qTimeStamp", len(q_fns), "qImageFns", source)

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
        _check_exist(_DiskView(Path(root)), paths, "TokyoTM", source)
    locations = _utm_keys(utm)
    pid = _number(zip(locations, stamps, strict=True))
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


# --------------------------------------------------------------------------- csv

def read_csv(csv_file: str | os.PathLike, root: str | os.PathLike, *, split: str | None = None,
             check_images: bool = True) -> SplitRecords:
    """A custom split from a CSV ``path,easting,northing,role``; see the module docstring."""
    csv_file = Path(csv_file)
    source = str(csv_file)
    split = _split("test", split, source)
    if not csv_file.is_file():
        raise VprError(f"{source}: file not found")
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
    _check_distinct(db_path, q_path, source, lambda role, i: f"line {lines[role][i]}")
    if check_images:
        disk = _DiskView(Path(root))
        _check_exist(disk, db_path, "database", source)
        _check_exist(disk, q_path, "query", source)
    db_place = _number(db_xy)
    q_place = _number(q_xy, start=int(db_place.max(initial=-1)) + 1)
    return SplitRecords(split, db_path, np.asarray(db_xy, dtype=np.float64).reshape(-1, 2), db_place,
                        q_path, np.asarray(q_xy, dtype=np.float64).reshape(-1, 2), q_place)


# --------------------------------------------------------------------------- registry

MAT_FORMATS = ("pitts", "tokyo247", "tokyotm")
FORMATS = (*MAT_FORMATS, "csv")
READERS: dict[str, Callable[..., SplitRecords]] = {
    "pitts": read_pitts,
    "tokyo247": read_tokyo247,
    "tokyotm": read_tokyotm,
    "csv": read_csv,
}
