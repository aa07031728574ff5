"""What an HDF5 artifact is: the ``kind`` attribute every vpr HDF5 file carries, checked by its one reader.

Each HDF5 format has one owner module that writes it and reads it (the index file: ``vpr.data.index``;
features: ``vpr.extract``; PCA: ``vpr.pca``; k-means centers: ``vpr.cluster``). The writer stores
``kind`` (see :data:`KINDS`); the reader opens the file with :func:`open_artifact`, so a file of another
kind given in its place is one line naming both ("X: is a vpr index file, not a features file (create one
with 'vpr extract')") instead of a missing-dataset traceback.

The files of the reference implementation (its centers and PCA files, :data:`REFERENCE_KINDS`) have no
``kind``. They are recognised by their layout: one that has the layout of another vpr kind is refused the
same way; otherwise the reader reads it, and its own checks of the datasets name whatever does not fit.
A file of the other kinds without the attribute was not written by vpr and is refused.
"""

from __future__ import annotations

import os

import h5py

from vpr.errors import VprError
from vpr.io import open_h5

INDEX = "vpr-index"
FEATURES = "vpr-features"
PCA = "vpr-pca"
CENTERS = "vpr-centers"
RANKINGS = "vpr-rankings"

# kind -> (what the file is called in messages, the command that makes it)
KINDS: dict[str, tuple[str, str]] = {
    INDEX: ("index file", "vpr index"),
    FEATURES: ("features file", "vpr extract"),
    PCA: ("PCA file", "vpr fit-pca"),
    CENTERS: ("centers file", "vpr cluster"),
    RANKINGS: ("rankings file", "vpr evaluate"),
}
# the kinds the reference implementation also writes, without the attribute
REFERENCE_KINDS = (CENTERS, PCA)


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _layout_kind(f: h5py.File) -> str | None:
    """The kind a file without a ``kind`` attribute has by its datasets, or None when none fits."""
    def dataset(name: str) -> bool:
        return isinstance(f.get(name), h5py.Dataset)

    if dataset("db/path") and dataset("query/path"):
        return INDEX
    if dataset("centroids"):
        return CENTERS
    if dataset("U") and dataset("lams"):
        return PCA
    if dataset("topk"):
        return RANKINGS
    if dataset("db") or dataset("query"):
        return FEATURES
    return None


def kind_of(f: h5py.File) -> str | None:
    """The file's ``kind`` attribute, else the kind its layout shows (None: neither)."""
    if "kind" in f.attrs:
        return _text(f.attrs["kind"])
    return _layout_kind(f)


def check_kind(f: h5py.File, path: str | os.PathLike, kind: str) -> None:
    """VprError unless the open file ``f`` is of ``kind`` (or, for the reference's kinds, a file without
    ``kind`` whose layout shows no other kind: see the module docstring)."""
    found = kind_of(f)
    what, made_by = KINDS[kind]
    if found in (None, kind) and ("kind" in f.attrs or kind in REFERENCE_KINDS):
        return
    if found in (None, kind):
        raise VprError(f"{path}: has no 'kind' attribute: not a {what} written by vpr (create one with "
                       f"'{made_by}')")
    found_what = f"vpr {KINDS[found][0]}" if found in KINDS else f"{found!r} file"
    article = "an" if what[0] in "aeiou" else "a"
    raise VprError(f"{path}: is a {found_what}, not {article} {what} (create one with '{made_by}')")


def open_artifact(path: str | os.PathLike, kind: str) -> h5py.File:
    """Open the HDF5 artifact ``path`` for reading (use it in a ``with`` block), checking its kind.

    A missing or unreadable file, or one of another kind, is a VprError naming it.
    """
    what, made_by = KINDS[kind]
    f = open_h5(path, what, made_by)
    try:
        check_kind(f, path, kind)
    except BaseException:
        f.close()
        raise
    return f
