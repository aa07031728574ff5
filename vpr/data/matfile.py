"""Read the ``dbStruct`` of a NetVLAD-style split file (.mat), MATLAB v5 (scipy) or v7.3 (HDF5, h5py).

The NetVLAD project distributes every split (Pitts30k/250k train/val/test, Tokyo 24/7, TokyoTM train/val) as
a .mat file holding one struct variable ``dbStruct``. The reference reads its fields by position; vpr reads
them by *name* and falls back to position only when the variable carries no field names (a cell array
instead of a struct).

Values come back as plain Python/numpy objects, identical for both file versions:

* char array -> ``str`` (a multi-row char array -> ``list[str]``, one per row, trailing blanks removed);
* cell array -> ``list`` in MATLAB's linear (column-major) order, each element converted recursively, so a
  cell of strings is a ``list[str]``;
* struct -> ``dict`` (field name -> value);
* numeric/logical array -> ``numpy.ndarray`` with MATLAB's shape (``utmDb`` is 2 x N, a scalar is 1 x 1).

MATLAB v7.3 layout (HDF5): the struct is a group whose fields are datasets; a cell array is a dataset of
object references (into ``#refs#``); a char array is a uint16 dataset of UTF-16 code units; every array is
stored with its dimensions reversed (transposed for 2-D); each object has a ``MATLAB_class`` attribute and
empty arrays are marked ``MATLAB_empty`` (their data then holds the dimensions).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io

from vpr.errors import VprError
from vpr.io import require_file

VARIABLE = "dbStruct"
# Cells and structs nested deeper than this are refused: a real file nests a few levels (net.layers{i}.
# weights{j}), and a reference that leads back to its own cell would otherwise be followed forever.
MAX_NESTING = 32


def load_dbstruct(path: str | os.PathLike, fields: Sequence[str], variable: str = VARIABLE) -> dict[str, Any]:
    """Load the struct ``variable`` of a .mat file as ``{field name: value}``.

    ``fields`` are the required fields in their positional order (the reference layout): a struct must
    have all of them by name (others are returned too); a cell array (no field names) is mapped onto them
    by position. Raises VprError naming the file (and field) when the file is missing, not a .mat file,
    corrupt, lacks the variable, or lacks a field.
    """
    path = Path(path)
    require_file(path)
    if h5py.is_hdf5(path):
        try:
            with h5py.File(path, "r") as f:
                if variable not in f:
                    raise VprError(f"{path}: no variable {variable!r} in this MATLAB v7.3 file "
                                   f"(found: {', '.join(k for k in f if not k.startswith('#')) or 'none'})")
                value = _h5_value(f, f[variable])
        except VprError:
            raise
        except Exception as err:  # h5py raises OSError, KeyError, ValueError, TypeError on damaged files
            raise VprError(f"{path}: corrupt MATLAB v7.3 (HDF5) file ({type(err).__name__}: {err})") from err
    else:
        try:
            mat = scipy.io.loadmat(path, variable_names=[variable], struct_as_record=True,
                                   squeeze_me=False, chars_as_strings=True)
        except Exception as err:  # scipy raises many types (ValueError, IndexError, OSError, ...)
            raise VprError(f"{path}: not a MATLAB .mat file, or corrupt "
                           f"({type(err).__name__}: {err})") from err
        if variable not in mat:
            raise VprError(f"{path}: no variable {variable!r} in this .mat file")
        value = _v5_value(mat[variable])

    if isinstance(value, dict):
        missing = [name for name in fields if name not in value]
        if missing:
            raise VprError(f"{path}: {variable} has no field {missing[0]!r}"
                           + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else "")
                           + f"; fields present: {', '.join(value) or 'none'}")
        return value
    if isinstance(value, list):  # a cell array: no field names, read by position
        if len(value) < len(fields):
            raise VprError(f"{path}: {variable} is a cell array of {len(value)} element(s) without field "
                           f"names; expected at least {len(fields)} ({', '.join(fields)})")
        return dict(zip(fields, value[:len(fields)], strict=True))
    raise VprError(f"{path}: {variable} is neither a struct nor a cell array")


# --------------------------------------------------------------------------- MATLAB v5 (scipy)

def _v5_value(x: Any) -> Any:
    if not isinstance(x, np.ndarray):
        return x
    if x.dtype.names is not None:  # struct (array): use its first element, as dbStruct is 1 x 1
        if x.size == 0:
            return {name: None for name in x.dtype.names}
        rec = x.ravel(order="F")[0]
        return {name: _v5_value(rec[name]) for name in x.dtype.names}
    if x.dtype.kind == "U":  # char array: scipy gives one string per row
        rows = [str(s).rstrip() if x.size > 1 else str(s) for s in x.ravel(order="F")]
        if len(rows) <= 1:
            return rows[0] if rows else ""
        return rows
    if x.dtype == object:  # cell array
        return [_v5_value(e) for e in x.ravel(order="F")]
    return x


# --------------------------------------------------------------------------- MATLAB v7.3 (HDF5)

def _matlab_class(obj: h5py.HLObject) -> str:
    cls = obj.attrs.get("MATLAB_class", b"")
    return cls.decode() if isinstance(cls, bytes) else str(cls)


def h5_enter(f: h5py.File, obj: h5py.HLObject, trail: tuple) -> tuple:
    """``trail`` (the ids of the objects being read, outermost first) extended by ``obj``'s; an object that
    is its own container (a cell whose reference leads back to it) or nesting deeper than MAX_NESTING is a
    VprError naming the file and the object."""
    if obj.id in trail:
        raise VprError(f"{f.filename}: {obj.name} contains itself (a cell element refers back to it)")
    if len(trail) >= MAX_NESTING:
        raise VprError(f"{f.filename}: {obj.name}: cells and structs nested more than {MAX_NESTING} deep")
    return (*trail, obj.id)


def h5_cell_refs(f: h5py.File, obj: h5py.Dataset, data: np.ndarray) -> np.ndarray:
    """``data``, the content of the cell array ``obj``, checked to be object references (not numbers)."""
    if h5py.check_dtype(ref=data.dtype) is not h5py.Reference:
        raise VprError(f"{f.filename}: {obj.name} is a cell array holding {data.dtype} numbers where object "
                       "references belong")
    return data


def _h5_value(f: h5py.File, obj: h5py.HLObject, trail: tuple = ()) -> Any:
    trail = h5_enter(f, obj, trail)
    cls = _matlab_class(obj)
    if isinstance(obj, h5py.Group):  # struct (MATLAB_class 'struct'); field order from MATLAB_fields
        names = list(obj.keys())
        if "MATLAB_fields" in obj.attrs:
            ordered = [b"".join(np.asarray(n, dtype="S1").tolist()).decode()
                       for n in obj.attrs["MATLAB_fields"]]
            names = [n for n in ordered if n in obj] + [n for n in names if n not in ordered]
        return {name: _h5_value(f, obj[name], trail) for name in names}
    empty = bool(obj.attrs.get("MATLAB_empty", 0))
    if empty:
        return "" if cls == "char" else [] if cls == "cell" else np.zeros((0, 0))
    data = obj[()]
    if cls == "cell" or data.dtype == h5py.ref_dtype or data.dtype == object:
        return _h5_cell(f, h5_cell_refs(f, obj, np.asarray(data)), trail)
    data = np.asarray(data).transpose()  # HDF5 stores the dimensions reversed
    if cls == "char":
        return _char(data)
    if cls == "logical":
        return data.astype(bool)
    return data


def _h5_cell(f: h5py.File, refs: np.ndarray, trail: tuple) -> list:
    """The elements of a cell array. Non-empty char elements (file names: up to ~10^5 per file) are read
    through the low-level API, several times faster than opening each one as an h5py Dataset."""
    out = []
    for ref in refs.ravel():
        oid = h5py.h5r.dereference(ref, f.id)
        # empty arrays are stored as uint64 dimensions: a uint16 dataset is a non-empty char or uint16 array
        if isinstance(oid, h5py.h5d.DatasetID) and oid.dtype == np.uint16:
            try:
                attr = h5py.h5a.open(oid, b"MATLAB_class")
                cls = np.empty((), dtype=attr.dtype)
                attr.read(cls)
            except KeyError:
                cls = np.array(b"")
            if cls.item() == b"char":
                codes = np.empty(oid.shape, dtype=np.uint16)
                oid.read(h5py.h5s.ALL, h5py.h5s.ALL, codes)
                out.append(_char(codes.transpose()))
                continue
        out.append(_h5_value(f, f[ref], trail))
    return out


def _char(data: np.ndarray) -> str | list[str]:
    """A MATLAB char array (UTF-16 code units, MATLAB's shape): one string per row."""
    if data.ndim < 2 or data.shape[0] == 1:
        return _utf16(data.ravel())
    return [_utf16(row).rstrip() for row in data]


def _utf16(codes: np.ndarray) -> str:
    return np.ascontiguousarray(codes, dtype="<u2").tobytes().decode("utf-16-le")
