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

