"""Reading dbStruct from MATLAB v5 (scipy) and v7.3 (HDF5) files: both versions give the same values."""

from __future__ import annotations

import itertools
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from vpr.data.formats import PITTS_FIELDS, read_pitts
from vpr.data.matfile import load_dbstruct
from vpr.errors import VprError

# --------------------------------------------------------------------------- a MATLAB v7.3 writer

_MATLAB_CLASS = {np.dtype("float64"): "double", np.dtype("float32"): "single", np.dtype("int32"): "int32",
                 np.dtype("int64"): "int64", np.dtype("uint8"): "uint8", np.dtype("uint16"): "uint16",
                 np.dtype("bool"): "logical"}


def _cls(obj: h5py.HLObject, name: str) -> None:
    obj.attrs["MATLAB_class"] = np.bytes_(name)


def _write_value(f: h5py.File, parent: h5py.Group, key: str, value, counter) -> None:
    """One MATLAB value as MATLAB v7.3 stores it: dimensions reversed, cells as object references."""
    if isinstance(value, dict):
        g = parent.create_group(key)
        _cls(g, "struct")
        names = np.empty(len(value), dtype=object)
        for i, k in enumerate(value):
            names[i] = np.array(list(k), dtype="S1")
        g.attrs.create("MATLAB_fields", names, dtype=h5py.vlen_dtype(np.dtype("S1")))
        for k, v in value.items():
            _write_value(f, g, k, v, counter)
        return
    if isinstance(value, str):
        if not value:
            ds = parent.create_dataset(key, data=np.array([0, 0], dtype=np.uint64))
            ds.attrs["MATLAB_empty"] = np.uint8(1)
        else:
            codes = np.frombuffer(value.encode("utf-16-le"), dtype="<u2")
            ds = parent.create_dataset(key, data=codes.reshape(-1, 1))  # MATLAB 1 x L -> HDF5 L x 1
            ds.attrs["MATLAB_int_decode"] = np.int32(2)
        _cls(ds, "char")
        return
    if isinstance(value, list) and not value:  # MATLAB marks empty arrays and stores their dimensions
        ds = parent.create_dataset(key, data=np.array([0, 0], dtype=np.uint64))
        ds.attrs["MATLAB_empty"] = np.uint8(1)
        _cls(ds, "cell")
        return
    if isinstance(value, list):  # a MATLAB N x 1 cell -> HDF5 1 x N of references into #refs#
        refs_group = f.require_group("#refs#")
        refs = []
        for element in value:
            name = f"r{next(counter)}"
            _write_value(f, refs_group, name, element, counter)
            refs.append(refs_group[name].ref)
        ds = parent.create_dataset(key, data=np.array(refs, dtype=h5py.ref_dtype).reshape(1, -1),
                                   dtype=h5py.ref_dtype)
        _cls(ds, "cell")
        return
    arr = np.atleast_2d(np.asarray(value))
    ds = parent.create_dataset(key, data=arr.T)  # reversed dimensions
    _cls(ds, _MATLAB_CLASS[arr.dtype])


def write_mat73(path: Path, variables: dict) -> None:
    """Write ``variables`` (name -> dict/list/str/array) as a MATLAB v7.3 file (HDF5, 512-byte header)."""
    counter = itertools.count()
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            _write_value(f, f, name, value, counter)
    header = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 "
              b"HDF5 schema 1.00 .")
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02" + b"IM")


def cell(strings: list[str]) -> np.ndarray:
    """A MATLAB N x 1 cell array of strings for scipy.io.savemat."""
    out = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        out[i, 0] = s
    return out


# ------------------------------------------------------------------ a small Pitts split, both versions

DB_FNS = ["000/000000_pitch1_yaw1.jpg", "000/000000_pitch1_yaw2.jpg", "000/000001_pitch1_yaw1.jpg",
          "001/001000_pitch2_yaw7.jpg"]
DB_UTM = np.array([[585000.5, 4477000.25], [585000.5, 4477000.25], [585012.0, 4477003.0],
                   [585030.0, 4477000.0]])
Q_FNS = ["000/000000_pitch1_yaw3.jpg", "000/000007_pitch1_yaw1.jpg", "000/000007_pitch2_yaw1.jpg"]
Q_UTM = np.array([[585004.0, 4477001.0], [585025.0, 4477001.0], [585025.0, 4477001.0]])


def pitts_v5_fields(which: str = "test") -> dict:
    return {"whichSet": which, "dbImageFns": cell(DB_FNS), "utmDb": DB_UTM.T.copy(), "qImageFns": cell(Q_FNS),
            "utmQ": Q_UTM.T.copy(), "numImages": np.array([[len(DB_FNS)]], dtype=np.float64),
            "numQueries": np.array([[len(Q_FNS)]], dtype=np.float64), "posDistThr": 25.0,
            "posDistSqThr": 625.0, "nonTrivPosDistSqThr": 100.0}


def pitts_v73_fields(which: str = "test") -> dict:
    v5 = pitts_v5_fields(which)
    return {**v5, "dbImageFns": list(DB_FNS), "qImageFns": list(Q_FNS)}


def make_pitts_tree(root: Path) -> None:
    for sub, fns in (("images", DB_FNS), ("queries", Q_FNS)):
        for fn in fns:
            p = root / "Pittsburgh" / sub / fn
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()


def test_v5_and_v73_give_the_same_fields(tmp_path):
    scipy.io.savemat(tmp_path / "a.mat", {"dbStruct": pitts_v5_fields()})
    write_mat73(tmp_path / "b.mat", {"dbStruct": pitts_v73_fields()})
    assert h5py.is_hdf5(tmp_path / "b.mat") and not h5py.is_hdf5(tmp_path / "a.mat")
    a = load_dbstruct(tmp_path / "a.mat", PITTS_FIELDS)
    b = load_dbstruct(tmp_path / "b.mat", PITTS_FIELDS)
    expected_order = ["whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages", "numQueries",
                      "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr"]
    for s in (a, b):
        assert list(s) == expected_order  # the struct's field order, not alphabetical
        assert s["whichSet"] == "test"
        assert s["dbImageFns"] == DB_FNS and s["qImageFns"] == Q_FNS
        assert s["utmDb"].shape == (2, 4) and s["utmQ"].shape == (2, 3)
        np.testing.assert_array_equal(s["utmDb"][0], [585000.5, 585000.5, 585012.0, 585030.0])
        np.testing.assert_array_equal(s["utmDb"][1], [4477000.25, 4477000.25, 4477003.0, 4477000.0])
        assert s["numImages"].shape == (1, 1) and s["numImages"][0, 0] == 4
        assert s["posDistSqThr"][0, 0] == 625.0


def test_v5_and_v73_give_the_same_records(tmp_path):
    make_pitts_tree(tmp_path)
    scipy.io.savemat(tmp_path / "a.mat", {"dbStruct": pitts_v5_fields("val")})
    write_mat73(tmp_path / "b.mat", {"dbStruct": pitts_v73_fields("val")})
    a = read_pitts(tmp_path / "a.mat", tmp_path)
    b = read_pitts(tmp_path / "b.mat", tmp_path)
    for r in (a, b):
        assert r.split == "val"
        assert r.db_path == [f"Pittsburgh/images/{fn}" for fn in DB_FNS]
        assert r.query_path == [f"Pittsburgh/queries/{fn}" for fn in Q_FNS]
        np.testing.assert_array_equal(r.db_utm, DB_UTM)
        np.testing.assert_array_equal(r.query_utm, Q_UTM)
        # places: 000/000000 000/000000 000/000001 001/001000 -> 0 0 1 2; queries from 3 on
        assert r.db_place.tolist() == [0, 0, 1, 2]
        assert r.query_place.tolist() == [3, 4, 4]


def test_unicode_and_empty_strings_v73(tmp_path):
    numbers = np.array([[7, 8, 9]], dtype=np.uint16)  # uint16 like a char array, but numeric
    write_mat73(tmp_path / "u.mat", {"dbStruct": {"a": "Zürich 東京", "b": "", "c": ["x", "", numbers, "yz"],
                                                  "d": [], "e": np.array([[True, False]])}})
    s = load_dbstruct(tmp_path / "u.mat", ["a", "b"])
    assert s["a"] == "Zürich 東京" and s["b"] == ""
    assert s["c"][:2] == ["x", ""] and s["c"][3] == "yz"
    assert s["c"][2].dtype == np.uint16 and s["c"][2].tolist() == [[7, 8, 9]]
    assert s["d"] == []
    assert s["e"].dtype == bool and s["e"].tolist() == [[True, False]]


@pytest.mark.parametrize("version", ["v5", "v73"])
def test_positional_fallback_for_a_cell_without_names(tmp_path, version):
    values = ["train", ["a_1.jpg"], np.array([[1.0], [2.0]]), ["q_1.jpg"], np.array([[3.0], [4.0]]),
              np.array([[1.0]]), np.array([[1.0]])]
    path = tmp_path / "c.mat"
    if version == "v5":
        arr = np.empty((1, len(values)), dtype=object)
        for i, v in enumerate(values):
            arr[0, i] = cell(v) if isinstance(v, list) else v
        scipy.io.savemat(path, {"dbStruct": arr})
    else:
        write_mat73(path, {"dbStruct": values})
    s = load_dbstruct(path, PITTS_FIELDS)
    assert list(s) == list(PITTS_FIELDS)
    assert s["whichSet"] == "train" and s["dbImageFns"] == ["a_1.jpg"] and s["qImageFns"] == ["q_1.jpg"]
    assert s["utmDb"].tolist() == [[1.0], [2.0]] and s["utmQ"].tolist() == [[3.0], [4.0]]
    with pytest.raises(VprError, match=r"c\.mat: dbStruct is a cell array of 7 element\(s\) without field"):
        load_dbstruct(path, (*PITTS_FIELDS, "extra"))


def test_errors_name_the_file_and_field(tmp_path):
    with pytest.raises(VprError, match=r"nope\.mat: file not found"):
        load_dbstruct(tmp_path / "nope.mat", PITTS_FIELDS)
    (tmp_path / "junk.mat").write_bytes(b"this is not a MATLAB file at all " * 4)
    with pytest.raises(VprError, match=r"junk\.mat: not a MATLAB \.mat file, or corrupt"):
        load_dbstruct(tmp_path / "junk.mat", PITTS_FIELDS)
    scipy.io.savemat(tmp_path / "good.mat", {"dbStruct": pitts_v5_fields()})
    (tmp_path / "trunc.mat").write_bytes((tmp_path / "good.mat").read_bytes()[:300])
    with pytest.raises(VprError, match=r"trunc\.mat: not a MATLAB \.mat file, or corrupt"):
        load_dbstruct(tmp_path / "trunc.mat", PITTS_FIELDS)
    scipy.io.savemat(tmp_path / "other.mat", {"somethingElse": np.eye(2)})
    with pytest.raises(VprError, match=r"other\.mat: no variable 'dbStruct'"):
        load_dbstruct(tmp_path / "other.mat", PITTS_FIELDS)
    write_mat73(tmp_path / "other73.mat", {"somethingElse": np.eye(2)})
    with pytest.raises(VprError, match=r"other73\.mat: no variable 'dbStruct' in this MATLAB v7\.3 file "
                                       r"\(found: somethingElse\)"):
        load_dbstruct(tmp_path / "other73.mat", PITTS_FIELDS)
    fields = pitts_v5_fields()
    del fields["utmQ"]
    scipy.io.savemat(tmp_path / "nofield.mat", {"dbStruct": fields})
    with pytest.raises(VprError, match=r"nofield\.mat: dbStruct has no field 'utmQ'"):
        load_dbstruct(tmp_path / "nofield.mat", PITTS_FIELDS)
    fields = pitts_v73_fields()
    del fields["dbImageFns"]
    write_mat73(tmp_path / "nofield73.mat", {"dbStruct": fields})
    with pytest.raises(VprError, match=r"nofield73\.mat: dbStruct has no field 'dbImageFns'"):
        load_dbstruct(tmp_path / "nofield73.mat", PITTS_FIELDS)
    with h5py.File(tmp_path / "broken73.mat", "w") as f:  # a reference to nothing: damaged cell array
        g = f.create_group("dbStruct")
        ds = g.create_dataset("whichSet", data=np.array([[1]], dtype=np.uint16))
        ds.attrs["MATLAB_class"] = np.bytes_("char")
        ds = g.create_dataset("dbImageFns", data=np.array([[h5py.Reference()]], dtype=h5py.ref_dtype))
        ds.attrs["MATLAB_class"] = np.bytes_("cell")
    with pytest.raises(VprError, match=r"broken73\.mat: corrupt MATLAB v7\.3 \(HDF5\) file"):
        load_dbstruct(tmp_path / "broken73.mat", PITTS_FIELDS)


@pytest.mark.parametrize("case", ["a cell that refers to itself", "numbers where references belong"])
def test_malformed_v73_cells_are_one_error_naming_the_file_and_object(tmp_path, case):
    path = tmp_path / "damaged73.mat"
    write_mat73(path, {"dbStruct": pitts_v73_fields()})
    with h5py.File(path, "r+") as f:
        cell = f["dbStruct/dbImageFns"]
        if case == "a cell that refers to itself":
            refs = cell[()]
            refs.flat[1] = cell.ref
            cell[...] = refs
            message = f"{path}: /dbStruct/dbImageFns contains itself (a cell element refers back to it)"
        else:
            del f["dbStruct/dbImageFns"]
            ds = f["dbStruct"].create_dataset("dbImageFns", data=np.ones((1, 3), dtype=np.uint32))
            ds.attrs["MATLAB_class"] = np.bytes_("cell")
            message = (f"{path}: /dbStruct/dbImageFns is a cell array holding uint32 numbers where object "
                       "references belong")
    with pytest.raises(VprError) as err:
        load_dbstruct(path, PITTS_FIELDS)
    assert str(err.value) == message
