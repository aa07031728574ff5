"""The ``folders`` reader: two image folders whose file names carry the UTM position.

The layout the public data-set downloaders write (e.g. VPR-datasets-downloader: Pitts30k, Tokyo 24/7,
St Lucia, MSLS, SF-XL, ...): a ``database`` and a ``queries`` folder, each image named
``@<utm_east>@<utm_north>@<zone>@<letter>@<lat>@<lon>@...@.jpg``. Only the first two fields are read (metres);
any number of further ``@`` fields may follow. Images are found recursively, by extension ``.jpg``,
``.jpeg`` or ``.png`` (any case). When a file list ``<folder>_images_paths.txt`` lies beside a folder (for
``database/``: ``database_images_paths.txt``; one path per line, relative to the folder), it is used
instead of walking the folder, as the downloader writes it for large sets; its order is kept. A walked
folder's images are in sorted path order.

Place = exact UTM, database and query places in separate namespaces (as the csv format). The reader also
serves `vpr retrieve`, whose folders need no coordinates: :func:`list_images` alone.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path, PurePosixPath

import numpy as np

from vpr.data.formats.checks import DiskView, check_distinct, check_exist, number_keys, resolve_split
from vpr.data.index import SplitRecords
from vpr.errors import VprError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
LIST_SUFFIX = "_images_paths.txt"


def file_list_path(folder: Path) -> Path:
    """Where the downloader's file list of ``folder`` lies: ``<folder>_images_paths.txt`` beside it."""
    return folder.parent / (folder.name + LIST_SUFFIX)


def _walk(folder: Path) -> list[str]:
    """Image files under ``folder``, recursively, as sorted '/'-separated paths relative to it."""
    found: list[str] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(folder / rel if rel else folder) as it:
                for entry in it:
                    name = rel + entry.name
                    if entry.is_dir():
                        stack.append(name + "/")
                    elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                        found.append(name)
        except OSError as err:
            raise VprError(f"{folder / rel}: cannot list the folder ({err.strerror or err})") from err
    found.sort()
    return found


def _read_list(list_file: Path) -> list[str]:
    paths = []
    try:
        text = list_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise VprError(f"{list_file}: unreadable file list ({err})") from err
    for line_no, line in enumerate(text.splitlines(), start=1):
        path = line.strip()
        if not path:
            continue
        if path.startswith("/") or ".." in path or "./" in path or "//" in path:   # rare: check, normalise
            pure = PurePosixPath(path)
            if pure.is_absolute() or ".." in pure.parts:
                raise VprError(f"{list_file} line {line_no}: path {path!r} must be relative to the folder "
                               f"{list_file.name[:-len(LIST_SUFFIX)]}/")
            path = str(pure)
        paths.append(path)
    return paths


def list_images(folder: str | os.PathLike) -> tuple[list[str], str]:
    """(image paths relative to ``folder``, where they were listed from: the file list or "walk").

    A missing folder, or one without any image, is a VprError naming it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise VprError(f"{folder}: not a directory")
    list_file = file_list_path(folder)
    if list_file.is_file():
        paths, how = _read_list(list_file), str(list_file)
    else:
        paths, how = _walk(folder), "walk"
    if not paths:
        raise VprError(f"{folder}: no .jpg, .jpeg or .png image found"
                       + (f" (file list {list_file} is empty)" if how != "walk" else ""))
    return paths, how


def parse_utm(name: str) -> tuple[float, float] | None:
    """(easting, northing) of a file name ``@<east>@<north>@...@.ext``; None when it is not of that form."""
    fields = name.split("@")
    if len(fields) < 4 or fields[0] != "":
        return None
    try:
        east, north = float(fields[1]), float(fields[2])
    except ValueError:
        return None
    return (east, north) if math.isfinite(east) and math.isfinite(north) else None


def _relative_to(folder: Path, root: Path, option: str) -> str:
    try:
        rel = folder.resolve().relative_to(root.resolve())
    except ValueError:
        raise VprError(f"{option} {folder}: not inside the data-set root {root}") from None
    return "" if str(rel) == "." else rel.as_posix() + "/"


def _role(folder: Path, root: Path, option: str, check_images: bool) -> tuple[list[str], list]:
    names, how = list_images(folder)
    prefix = _relative_to(folder, root, option)
    coords = []
    for rel in names:
        xy = parse_utm(rel.rpartition("/")[2])
        if xy is None:
            where = "" if how == "walk" else f" (listed in {how})"
            raise VprError(f"{folder / rel}: file name is not @<utm_east>@<utm_north>@...@.jpg{where}; "
                           "the folders format reads the UTM position from the name")
        coords.append(xy)
    paths = [prefix + rel for rel in names]
    if check_images and how != "walk":
        check_exist(DiskView(root), paths, option.lstrip("-"), how)
    return paths, coords


def read_folders(database: str | os.PathLike, queries: str | os.PathLike, root: str | os.PathLike, *,
                 split: str | None = None, check_images: bool = True) -> SplitRecords:
    """A split from a database and a query folder of ``@``-named images under ``root``; see the module
    docstring. The index paths are relative to ``root``."""
    database, queries, root = Path(database), Path(queries), Path(root)
    split = resolve_split("test", split, str(root))
    db_path, db_xy = _role(database, root, "--database", check_images)
    q_path, q_xy = _role(queries, root, "--queries", check_images)
    check_distinct(db_path, q_path, str(root), lambda role, i: f"{role} file {i + 1}")
    db_place = number_keys(db_xy)
    q_place = number_keys(q_xy, start=int(db_place.max(initial=-1)) + 1)
    return SplitRecords(split, db_path, np.asarray(db_xy, dtype=np.float64).reshape(-1, 2), db_place,
                        q_path, np.asarray(q_xy, dtype=np.float64).reshape(-1, 2), q_place)


def listing_sha256(records: SplitRecords) -> str:
    """SHA-256 of the image lists (the folders format has no split file: its 'source' is the listing)."""
    digest = hashlib.sha256(b"vpr folders listing 1\0")
    for role, paths in (("db", records.db_path), ("query", records.query_path)):
        digest.update(f"{role}\0{len(paths)}\0".encode())
        for p in paths:
            digest.update(p.encode("utf-8") + b"\0")
    return digest.hexdigest()
