"""Checks and numbering shared by the data-set readers: images present on disk (through cached directory
listings), every image listed once and never both as database image and as query, the split name, place
ids numbered by first appearance, and a warning for places whose images do not share one coordinate."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from vpr.data.index import SPLITS
from vpr.errors import VprError

log = logging.getLogger(__name__)

_MAX_LISTED = 5  # missing files named in an error message


class DiskView:
    """Existence checks through cached directory listings (one ``os.scandir`` per directory).

    Only files count as present: a directory (or anything else) where an image should be is not one.
    """

    def __init__(self, root: Path):
        self.root = root
        self._dirs: dict[str, dict[str, os.DirEntry | None]] = {}  # directory -> {name: entry if a file}
        self._real: dict[str, str] = {}   # directory -> its resolved path

    def _entries(self, parent: str) -> dict[str, os.DirEntry | None]:
        entries = self._dirs.get(parent)
        if entries is None:
            entries = {}
            try:
                with os.scandir(self.root / parent) as it:
                    for entry in it:
                        try:
                            entries[entry.name] = entry if entry.is_file() else None  # links followed
                        except OSError:
                            entries[entry.name] = None
            except OSError:
                pass
            self._dirs[parent] = entries
        return entries

    def exists(self, rel: str) -> bool:
        """``rel`` is a file (or a link to one) under the root."""
        parent, _, name = rel.rpartition("/")
        return self._entries(parent).get(name) is not None

    def is_other(self, rel: str) -> bool:
        """``rel`` exists under the root but is not a file (a directory, a dangling link, ...)."""
        parent, _, name = rel.rpartition("/")
        entries = self._entries(parent)
        return name in entries and entries[name] is None

    def _real_dir(self, parent: str) -> str:
        real = self._real.get(parent)
        if real is None:
            real = self._real[parent] = os.path.realpath(self.root / parent)
        return real

    def via_link(self, rel: str) -> bool:
        """The existing file ``rel`` is a symbolic link, or is reached through a linked directory."""
        parent, _, name = rel.rpartition("/")
        lexical = os.path.normpath(os.path.join(self._real_dir(""), parent))
        return self._entries(parent)[name].is_symlink() or self._real_dir(parent) != lexical

    def identity(self, rel: str) -> tuple[tuple[int, int], int]:
        """((st_dev, st_ino), st_nlink) of the existing file ``rel``, links followed."""
        parent, _, name = rel.rpartition("/")
        st = self._entries(parent)[name].stat()
        return (st.st_dev, st.st_ino), st.st_nlink


def check_exist(disk: DiskView, paths: Sequence[str], what: str, source: str) -> None:
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


def check_same_files(disk: DiskView, db_path: Sequence[str], q_path: Sequence[str], source: str,
                     where: Callable[[str, int], str]) -> None:
    """Refuse a query that is a database image under another name: a symbolic link (of the file or of a
    directory on its path) or a hard link, compared by (st_dev, st_ino) with links followed.

    Two names of one file need a link: a file reached through one, or a file with several hard links. Only
    then are all database images looked at (one ``stat`` each); otherwise only the linked ones are.
    """
    queries: dict[tuple[int, int], int] = {}
    linked = False
    for i, path in enumerate(q_path):
        ident, nlink = disk.identity(path)
        queries.setdefault(ident, i)
        linked = linked or nlink > 1 or disk.via_link(path)
    for j, path in enumerate(db_path):
        if not (linked or disk.via_link(path)):
            continue
        i = queries.get(disk.identity(path)[0])
        if i is not None:
            raise VprError(f"{source}: query {q_path[i]!r} ({where('query', i)}) and database image {path!r} "
                           f"({where('db', j)}) are one file under two names (a symbolic or hard link); a "
                           "query would retrieve itself")


def check_image_files(disk: DiskView, db_path: Sequence[str], q_path: Sequence[str], source: str,
                      where: Callable[[str, int], str]) -> None:
    """Every database and query image is a file under the root, and no query is a database image."""
    check_exist(disk, db_path, "database", source)
    check_exist(disk, q_path, "query", source)
    check_same_files(disk, db_path, q_path, source, where)


def _is_normal(path: str) -> bool:
    """``path`` is already as PurePosixPath writes it (the common case, checked without building one)."""
    return not ("//" in path or "/./" in path or path.startswith("./") or path.endswith(("/", "/.")))


def check_distinct(db_path: Sequence[str], q_path: Sequence[str], source: str,
                    where: Callable[[str, int], str]) -> None:
    """Refuse an image listed twice in one role, or both as database and as query image.

    A database image listed twice is ranked twice; a query that is also a database image retrieves itself
    at distance 0 and counts as a hit. Paths are compared after normalisation (``a/./b`` = ``a/b``).
    ``where(role, i)`` names the row ``i`` of ``role`` ("db" or "query") for the message.
    """
    first: dict[str, tuple[str, int]] = {}
    for role, paths in (("db", db_path), ("query", q_path)):
        for i, path in enumerate(paths):
            key = path if _is_normal(path) else str(PurePosixPath(path))
            seen = first.setdefault(key, (role, i))
            if seen == (role, i):
                continue
            if seen[0] == role:
                raise VprError(f"{source}: {'database' if role == 'db' else 'query'} image {path!r} is "
                               f"listed twice ({where(*seen)} and {where(role, i)}); list every image once")
            raise VprError(f"{source}: image {path!r} is listed both as database image ({where(*seen)}) "
                           f"and as query ({where(role, i)}); a query would retrieve itself")


def resolve_split(value: Any, override: str | None, source: str) -> str:
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


def number_keys(keys: Iterable[Hashable], start: int = 0) -> np.ndarray:
    """Integer ids start, start+1, ... for the distinct keys, in order of first appearance."""
    ids: dict[Hashable, int] = {}
    return np.array([ids.setdefault(k, start + len(ids)) for k in keys], dtype=np.int64)


def utm_keys(utm: np.ndarray) -> list[tuple[float, float]]:
    return [(float(e), float(n)) for e, n in utm]


def warn_mixed_utm(place: np.ndarray, utm: np.ndarray, what: str, source: str) -> None:
    """Warn when images of one place do not share one coordinate (the reference asserts they do)."""
    if place.size == 0:
        return
    _, first, inverse = np.unique(place, return_index=True, return_inverse=True)
    anchor = utm[first[inverse]]
    bad = np.flatnonzero((anchor != utm).any(axis=1))
    if bad.size:
        log.warning("%s: %d %s image(s) do not share the coordinates of the first image of their place "
                    "(first at index %d)", source, bad.size, what, bad[0])

