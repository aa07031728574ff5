"""`vpr index` and the format readers: ground truth against brute-force loops, identity rules, bad input."""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from vpr.cli import main
from vpr.data.formats import read_csv, read_tokyo247, read_tokyotm
from vpr.data.index import Index
from vpr.errors import VprError

E0, N0 = 585000.0, 4477000.0  # a UTM origin, so the coordinates look like real ones


def cell(strings: list[str]) -> np.ndarray:
    out = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        out[i, 0] = s
    return out


def touch(root: Path, paths: list[str]) -> None:
    for rel in paths:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()


def within(db: list[tuple[float, float]], q: list[tuple[float, float]], radius: float,
           db_id: list | None = None, q_id: list | None = None) -> list[list[int]]:
    """Brute force: for every query, the database indices at Euclidean distance <= radius (optionally of
    another identity), ascending."""
    out = []
    for i, (qe, qn) in enumerate(q):
        row = []
        for j, (de, dn) in enumerate(db):
            same_identity = db_id is not None and db_id[j] == q_id[i]
            if math.sqrt((qe - de) ** 2 + (qn - dn) ** 2) <= radius and not same_identity:
                row.append(j)
        out.append(row)
    return out


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main(["index", *argv])
    except SystemExit as exit_:   # a usage error of argparse (status 2)
        rc = exit_.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    if out.parent.exists():
        assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def pitts_struct(db_fns, db_utm, q_fns, q_utm, which="test") -> dict:
    return {"whichSet": which, "dbImageFns": cell(db_fns),
            "utmDb": np.asarray(db_utm, dtype=np.float64).reshape(-1, 2).T.copy(),
            "qImageFns": cell(q_fns), "utmQ": np.asarray(q_utm, dtype=np.float64).reshape(-1, 2).T.copy(),
            "numImages": np.array([[len(db_fns)]], dtype=np.float64),
            "numQueries": np.array([[len(q_fns)]], dtype=np.float64),
            "posDistThr": 25.0, "posDistSqThr": 625.0, "nonTrivPosDistSqThr": 100.0}


# A street along x: panoramas (2 views each) 0..110 m, gaps <= 30 m
PANO_X = [0.0, 9.0, 18.0, 30.0, 45.0, 60.0, 80.0, 110.0]
DB_FNS = [f"00{k // 4}/00{k // 4}{k:03d}_pitch1_yaw{yaw}.jpg" for k in range(len(PANO_X)) for yaw in (1, 2)]
DB_UTM = [(E0 + x, N0 + (2.0 if k % 2 else 0.0)) for k, x in enumerate(PANO_X) for _ in (1, 2)]


def write_pitts(tmp_path: Path, q_utm: list[tuple[float, float]], which: str = "test",
                name: str = "pitts30k_test.mat", **overrides) -> tuple[Path, list[str]]:
    q_fns = [f"000/000{i:03d}_pitch1_yaw1.jpg" for i in range(len(q_utm))]
    fields = pitts_struct(DB_FNS, DB_UTM, q_fns, q_utm, which)
    fields.update(overrides)
    fields = {k: v for k, v in fields.items() if v is not None}
    scipy.io.savemat(tmp_path / name, {"dbStruct": fields})
    touch(tmp_path, [f"Pittsburgh/images/{fn}" for fn in DB_FNS])
    touch(tmp_path, [f"Pittsburgh/queries/{fn}" for fn in q_fns])
    return tmp_path / name, q_fns


# --------------------------------------------------------------------------- pitts


def test_pitts_test_split_positives_match_brute_force(tmp_path, capsys):
    rng = np.random.default_rng(0)
    q_utm = [(E0 + 135.0, N0 + 2.0)]  # exactly 25 m from the last panorama: inclusive
    xs, ys = rng.uniform(0, 110, 12), rng.uniform(-10, 10, 12)
    q_utm += [(E0 + float(x), N0 + float(y)) for x, y in zip(xs, ys, strict=True)]
    mat, q_fns = write_pitts(tmp_path, q_utm)
    out = tmp_path / "idx" / "test.h5"
    rc, stdout, err = run_cli(["--format", "pitts", "--mat", str(mat), "--root", str(tmp_path),
                               "--out", str(out)], capsys)
    assert rc == 0, err
    assert "16 database images, 13 queries" in stdout
    idx = Index(out)
    assert idx.split == "test" and idx.attrs["format"] == "pitts"
    assert idx.attrs["source"] == "pitts30k_test.mat"
    assert idx.attrs["source_sha256"] == hashlib.sha256(mat.read_bytes()).hexdigest()
    assert idx.attrs["root"] == str(tmp_path.resolve())
    assert idx.db_path == [f"Pittsburgh/images/{fn}" for fn in DB_FNS]
    assert idx.query_path == [f"Pittsburgh/queries/{fn}" for fn in q_fns]
    np.testing.assert_array_equal(idx.db_utm, np.array(DB_UTM))
    expected = within(DB_UTM, q_utm, 25.0)
    assert [p.tolist() for p in idx.positives] == expected
    assert expected[0] == [14, 15]
    # places: two views per panorama; queries numbered after the 8 database places
    assert idx.db_place.tolist() == [k for k in range(8) for _ in (1, 2)]
    assert idx.query_place.tolist() == list(range(8, 8 + len(q_utm)))
    assert idx.train_positives is None
    mean = sum(len(r) for r in expected) / len(expected)
    assert f"{mean:.2f} positives per query" in stdout


def test_pitts_train_split_drops_queries_without_positive(tmp_path, capsys):
    q_utm = [(E0 + 0.0, N0 + 10.0),    # exactly 10 m from panorama 0: kept
             (E0 + 95.0, N0),          # 15 m from the nearest: dropped, though it has 25 m neighbours
             (E0 + 33.0, N0 + 4.0),
             (E0 + 400.0, N0),         # nothing within 25 m either: dropped, no error for training
             (E0 + 62.0, N0 - 5.0)]
    mat, q_fns = write_pitts(tmp_path, q_utm, which="train", name="pitts30k_train.mat")
    out = tmp_path / "train.h5"
    rc, stdout, err = run_cli(["--format", "pitts", "--mat", str(mat), "--root", str(tmp_path),
                               "--out", str(out)], capsys)
    assert rc == 0, err
    assert "2 training queries dropped" in stdout
    pos10 = within(DB_UTM, q_utm, 10.0)
    kept = [i for i in range(len(q_utm)) if pos10[i]]
    assert kept == [0, 2, 4]
    idx = Index(out)
    assert idx.split == "train" and idx.attrs["num_dropped"] == 2
    assert idx.query_path == [f"Pittsburgh/queries/{q_fns[i]}" for i in kept]
    assert [p.tolist() for p in idx.train_positives] == [pos10[i] for i in kept]
    pos25 = within(DB_UTM, q_utm, 25.0)
    assert [p.tolist() for p in idx.train_nonnegatives] == [pos25[i] for i in kept]
    assert [p.tolist() for p in idx.positives] == [pos25[i] for i in kept]
    with h5py.File(out) as f:
        assert list(f["dropped/path"].asstr()[()]) == [f"Pittsburgh/queries/{q_fns[i]}" for i in (1, 3)]
        np.testing.assert_array_equal(f["dropped/utm"][()], np.array([q_utm[1], q_utm[3]]))


def test_pitts_split_override_and_radii(tmp_path, capsys):
    q_utm = [(E0 + 4.0, N0 + 1.0), (E0 + 50.0, N0)]
    mat, _ = write_pitts(tmp_path, q_utm, which="test")
    out = tmp_path / "val.h5"
    rc, _, err = run_cli(["--format", "pitts", "--mat", str(mat), "--root", str(tmp_path), "--out", str(out),
                          "--split", "val", "--eval-radius", "9.5"], capsys)
    assert rc == 0, err
    idx = Index(out)
    assert idx.split == "val" and idx.attrs["eval_radius"] == 9.5
    assert [p.tolist() for p in idx.positives] == within(DB_UTM, q_utm, 9.5)


def _bad_pitts(tmp_path: Path, case: str) -> tuple[Path, str]:
    """Write one kind of broken Pitts input; return the .mat and the expected message fragment."""
    good_q = [(E0 + 3.0, N0), (E0 + 20.0, N0 + 1.0)]
    if case == "missing file":
        return tmp_path / "absent.mat", "absent.mat: file not found"
    if case == "directory":
        (tmp_path / "folder.mat").mkdir()
        return tmp_path / "folder.mat", "folder.mat: is a directory, expected a file"
    if case == "not a mat":
        (tmp_path / "text.mat").write_text("just some text, not MATLAB\n" * 5)
        return tmp_path / "text.mat", "text.mat: not a MATLAB .mat file, or corrupt"
    if case == "no dbStruct":
        scipy.io.savemat(tmp_path / "other.mat", {"db": np.eye(2)})
        return tmp_path / "other.mat", "other.mat: no variable 'dbStruct'"
    if case == "missing field":
        return (write_pitts(tmp_path, good_q, name="f.mat", utmDb=None)[0],
                "f.mat: dbStruct has no field 'utmDb'")
    if case == "count":
        return (write_pitts(tmp_path, good_q, name="c.mat", numImages=np.array([[17.0]]))[0],
                "c.mat: field numImages = 17 disagrees with the 16 names of dbImageFns")
    if case == "query count":
        return (write_pitts(tmp_path, good_q, name="c.mat", numQueries=np.array([[3.0]]))[0],
                "c.mat: field numQueries = 3 disagrees with the 2 names of qImageFns")
    if case == "utm shape":
        utm = np.asarray(DB_UTM).T[:, :15].copy()
        return (write_pitts(tmp_path, good_q, name="s.mat", utmDb=utm)[0],
                "s.mat: field utmDb has shape (2, 15), expected (2, 16) to match the 16 names of dbImageFns")
    if case == "nan":
        utm = np.asarray(good_q).T.copy()
        utm[1, 1] = np.nan
        return (write_pitts(tmp_path, good_q, name="n.mat", utmQ=utm)[0],
                "n.mat: field utmQ has NaN or infinite coordinates for 1 image(s), first at index 1")
    if case == "no positive":
        return (write_pitts(tmp_path, [*good_q, (E0 + 500.0, N0)], name="p.mat")[0],
                "p.mat: 1 query image(s) have no database image within 25.0 m "
                "(first: Pittsburgh/queries/000/000002_pitch1_yaw1.jpg)")
    if case == "missing images":
        mat = write_pitts(tmp_path, good_q, name="m.mat")[0]
        for fn in DB_FNS[3:6]:
            (tmp_path / "Pittsburgh/images" / fn).unlink()
        return mat, (f"m.mat: 3 of 16 database image(s) listed are missing under {tmp_path} "
                     f"(first: Pittsburgh/images/{DB_FNS[3]}, Pittsburgh/images/{DB_FNS[4]}, "
                     f"Pittsburgh/images/{DB_FNS[5]}); fix --root or pass --skip-image-check")
    if case == "bad split":
        return (write_pitts(tmp_path, good_q, name="w.mat", whichSet="everything")[0],
                "w.mat: split 'everything' (from field whichSet) is not one of train, val, test")
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing file", "directory", "not a mat", "no dbStruct", "missing field",
                                  "count", "query count", "utm shape", "nan", "no positive", "missing images",
                                  "bad split"])
def test_pitts_bad_input(tmp_path, capsys, case):
    mat, message = _bad_pitts(tmp_path, case)
    out = tmp_path / "out" / "index.h5"
    rc, stdout, err = run_cli(["--format", "pitts", "--mat", str(mat), "--root", str(tmp_path),
                               "--out", str(out)], capsys)
    assert rc == 2
    assert err.startswith("vpr index: error: ")
    assert str(mat) in err  # the full path of the .mat, not only its name
    assert message in err
    assert stdout == ""
    assert_nothing_written(out)


def test_missing_images_are_not_checked_with_skip(tmp_path, capsys):
    mat, _ = write_pitts(tmp_path, [(E0 + 3.0, N0)])
    (tmp_path / "Pittsburgh/images" / DB_FNS[0]).unlink()
    out = tmp_path / "i.h5"
    rc, _, err = run_cli(["--format", "pitts", "--mat", str(mat), "--root", str(tmp_path), "--out", str(out),
                          "--skip-image-check"], capsys)
    assert rc == 0, err
    assert Index(out).db_path[0] == f"Pittsburgh/images/{DB_FNS[0]}"


def test_option_errors(tmp_path, capsys):
    mat, _ = write_pitts(tmp_path, [(E0 + 3.0, N0)])
    out = tmp_path / "o.h5"
    for argv, message in [
        (["--format", "pitts", "--csv", str(mat)], "--format pitts needs --mat FILE"),
        (["--format", "csv", "--mat", str(mat)], "--format csv needs --csv FILE"),
    ]:
        rc, _, err = run_cli([*argv, "--root", str(tmp_path), "--out", str(out)], capsys)
        assert rc == 2 and message in err
        assert_nothing_written(out)
    # a nonsense number is a usage error at parse time (argparse's SystemExit(2), caught by run_cli)
    rc, _, err = run_cli(["--format", "pitts", "--mat", str(mat), "--eval-radius", "0",
                          "--root", str(tmp_path), "--out", str(out)], capsys)
    assert rc == 2 and "argument --eval-radius: must be a positive number, got 0" in err
    assert_nothing_written(out)
    rc, _, err = run_cli(["--format", "pitts", "--mat", str(mat), "--root", str(tmp_path / "nodir"),
                          "--out", str(out)], capsys)
    assert rc == 2 and f"--root {tmp_path / 'nodir'}: not a directory" in err
    assert_nothing_written(out)


# --------------------------------------------------------------------------- tokyo247

def _tokyo247(tmp_path: Path, db_fns: list[str], db_utm, on_disk: list[str] | None = None) -> Path:
    q_fns = ["q00001.jpg", "q00002.jpg", "q00003.jpg"]
    q_utm = [(E0 + 3.0, N0), (E0 + 3.0, N0), (E0 + 14.0, N0 + 1.0)]  # day and night shot of one spot
    fields = pitts_struct(db_fns, db_utm, q_fns, q_utm, which="test")
    scipy.io.savemat(tmp_path / "tokyo247.mat", {"dbStruct": fields})
    touch(tmp_path, [f"tokyo247/images/{p}" for p in (on_disk if on_disk is not None else db_fns)])
    touch(tmp_path, [f"tokyo247/query/{fn}" for fn in q_fns])
    return tmp_path / "tokyo247.mat"


def test_tokyo247_png_resolution_and_panoramas(tmp_path, capsys):
    db_fns = [f"00001/{pano}_{k:02d}.jpg" for pano in ("000101", "000102") for k in range(12)]
    db_utm = [(E0, N0)] * 12 + [(E0 + 15.0, N0)] * 12
    on_disk = [fn[:-4] + ".png" for fn in db_fns]
    on_disk[3] = db_fns[3]              # only the .jpg exists: keep it
    on_disk.append(db_fns[5])           # both exist: the listed .jpg wins
    mat = _tokyo247(tmp_path, db_fns, db_utm, on_disk)
    r = read_tokyo247(mat, tmp_path)
    expected_paths = [f"tokyo247/images/{p}" for p in on_disk[:24]]
    expected_paths[5] = f"tokyo247/images/{db_fns[5]}"
    assert r.db_path == expected_paths
    assert r.db_path[0] == "tokyo247/images/00001/000101_00.png"
    assert r.split == "test"
    assert r.db_place.tolist() == [0] * 12 + [1] * 12
    assert r.query_place.tolist() == [2, 2, 3]
    assert r.query_path == [f"tokyo247/query/q0000{i}.jpg" for i in (1, 2, 3)]
    # the whole command, without any TokyoTM file present
    out = tmp_path / "tokyo.h5"
    rc, _, err = run_cli(["--format", "tokyo247", "--mat", str(mat), "--root", str(tmp_path),
                          "--out", str(out)], capsys)
    assert rc == 0, err
    idx = Index(out)
    assert idx.db_path == expected_paths and idx.attrs["panorama_rule"] == "file name"
    assert [p.tolist() for p in idx.positives] == within(db_utm, [(E0 + 3.0, N0), (E0 + 3.0, N0),
                                                                  (E0 + 14.0, N0 + 1.0)], 25.0)


def test_tokyo247_missing_image_and_block_fallback(tmp_path, capsys, caplog):
    db_fns = [f"00001/{k:04d}.jpg" for k in range(24)]  # no panorama id in the names
    db_utm = [(E0, N0)] * 12 + [(E0 + 15.0, N0)] * 12
    on_disk = [fn[:-4] + ".png" for fn in db_fns]
    mat = _tokyo247(tmp_path, db_fns, db_utm, on_disk)
    with caplog.at_level(logging.WARNING):
        r = read_tokyo247(mat, tmp_path)
    assert r.db_place.tolist() == [i // 12 for i in range(24)]
    assert "no panorama id" in caplog.text
    (tmp_path / "tokyo247/images/00001/0007.png").unlink()
    out = tmp_path / "t.h5"
    rc, _, err = run_cli(["--format", "tokyo247", "--mat", str(mat), "--root", str(tmp_path),
                          "--out", str(out)], capsys)
    assert rc == 2
    assert f"{mat}: 1 of 24 database image(s) listed are missing" in err
    assert "(first: tokyo247/images/00001/0007.jpg)" in err
    assert_nothing_written(out)


def test_tokyo247_panorama_must_be_consecutive(tmp_path):
    db_fns = ["00001/000101_00.jpg", "00001/000102_00.jpg", "00001/000101_01.jpg"]
    mat = _tokyo247(tmp_path, db_fns, [(E0, N0)] * 3)
    with pytest.raises(VprError, match=r"tokyo247\.mat: field dbImageFns: the cut-outs of panorama "
                                       r"'00001/000101' are not consecutive \(it reappears at index 2"):
        read_tokyo247(mat, tmp_path)


# --------------------------------------------------------------------------- tokyotm

def _tokyotm(tmp_path: Path, name: str, which: str, q: list[tuple], db: list[tuple]) -> Path:
    """q/db: lists of (file name, easting, northing, time stamp)."""
    fields = {"whichSet": which,
              "dbImageFns": cell([r[0] for r in db]),
              "utmDb": np.array([[r[1] for r in db], [r[2] for r in db]], dtype=np.float64),
              "dbTimeStamp": np.array([[r[3] for r in db]], dtype=np.float64),
              "qImageFns": cell([r[0] for r in q]),
              "utmQ": np.array([[r[1] for r in q], [r[2] for r in q]], dtype=np.float64),
              "qTimeStamp": np.array([[r[3] for r in q]], dtype=np.float64),
              "numImages": np.array([[len(db)]], dtype=np.float64),
              "numQueries": np.array([[len(q)]], dtype=np.float64),
              "posDistThr": 25.0, "posDistSqThr": 625.0, "nonTrivPosDistSqThr": 100.0}
    scipy.io.savemat(tmp_path / name, {"dbStruct": fields})
    touch(tmp_path, [f"tokyoTM/images/{r[0]}" for r in q + db])
    return tmp_path / name


def test_tokyotm_train_excludes_same_identity(tmp_path, capsys):
    a = ("00001/2010/a.jpg", E0, N0, 201001)
    b = ("00001/2010/b.jpg", E0, N0, 201001)       # same spot, same time: same identity as a
    c = ("00001/2011/c.jpg", E0, N0, 201101)       # same spot, another time
    d = ("00002/2010/d.jpg", E0 + 6.0, N0, 201001)
    e = ("00003/2012/e.jpg", E0 + 100.0, N0, 201201)  # alone: no positive of another identity
    mat = _tokyotm(tmp_path, "tokyoTM_train.mat", "train", q=[a, e], db=[a, b, c, d, e])
    out = tmp_path / "tm_train.h5"
    rc, stdout, err = run_cli(["--format", "tokyotm", "--mat", str(mat), "--root", str(tmp_path),
                               "--out", str(out)], capsys)
    assert rc == 0, err
    assert "1 training queries dropped" in stdout
    images = [a, e, b, c, d]  # queries first, the repeated a and e listed once
    paths = [f"tokyoTM/images/{r[0]}" for r in images]
    utm = [(r[1], r[2]) for r in images]
    ident = [(r[1], r[2], r[3]) for r in images]
    idx = Index(out)
    assert idx.db_path == paths
    assert idx.db_place.tolist() == [0, 1, 0, 2, 3]
    pos = within(utm, utm, 10.0, ident, ident)
    assert pos == [[3, 4], [], [3, 4], [0, 2, 4], [0, 2, 3]]  # by hand: a, b are not each other's positives
    kept = [0, 2, 3, 4]
    assert idx.query_path == [paths[i] for i in kept]
    assert [p.tolist() for p in idx.train_positives] == [pos[i] for i in kept]
    # non-negatives include the same identity (and the image itself)
    assert [p.tolist() for p in idx.train_nonnegatives] == [within(utm, utm, 25.0)[i] for i in kept]
    with h5py.File(out) as f:
        assert list(f["dropped/path"].asstr()[()]) == [paths[1]]


def test_tokyotm_val_split(tmp_path, capsys):
    q, db = [], []
    for loc in range(30):  # 30 locations with 3 capture times of 2 images each
        for t in range(3):
            for k in range(2):
                row = (f"{loc:05d}/{2010 + t}/{k}.jpg", E0 + 40.0 * loc, N0, 201000 + 100 * t)
                (q if (loc + t + k) % 3 == 0 else db).append(row)
    singles = [(f"{100 + s:05d}/2010/0.jpg", E0 + 40.0 * (30 + s), N0, 201000) for s in range(5)]
    db += singles
    mat = _tokyotm(tmp_path, "tokyoTM_val.mat", "val", q, db)
    r = read_tokyotm(mat, tmp_path, seed=43)
    assert r.split == "val"
    stamp = {f"tokyoTM/images/{row[0]}": row[3] for row in q + db}
    loc_of = {f"tokyoTM/images/{row[0]}": row[1] for row in q + db}
    assert sorted(r.query_path + r.db_path) == sorted(stamp)  # every image once
    chosen = []
    for loc in range(30):
        e = E0 + 40.0 * loc
        q_times = {stamp[p] for p in r.query_path if loc_of[p] == e}
        db_times = {stamp[p] for p in r.db_path if loc_of[p] == e}
        assert len(q_times) == 1 and len(db_times) == 2 and not q_times & db_times
        assert sum(loc_of[p] == e for p in r.query_path) == 2  # the whole group
        chosen.append(q_times.pop())
    assert len(set(chosen)) > 1  # drawn, not always the first group
    assert all(f"tokyoTM/images/{row[0]}" in r.db_path for row in singles)
    # queries and database share the identity namespace: a query's place never appears in the database
    assert not set(r.query_place.tolist()) & set(r.db_place.tolist())
    again = read_tokyotm(mat, tmp_path, seed=43)
    assert again.query_path == r.query_path
    other = read_tokyotm(mat, tmp_path, seed=44)
    assert other.query_path != r.query_path
    out = tmp_path / "tm_val.h5"
    rc, _, err = run_cli(["--format", "tokyotm", "--mat", str(mat), "--root", str(tmp_path),
                          "--out", str(out), "--seed", "44"], capsys)
    assert rc == 0, err
    idx = Index(out)
    assert idx.query_path == other.query_path and idx.attrs["seed"] == 44
    q_utm = [tuple(u) for u in idx.query_utm.tolist()]
    db_utm = [tuple(u) for u in idx.db_utm.tolist()]
    assert [p.tolist() for p in idx.positives] == within(db_utm, q_utm, 25.0)


def test_tokyotm_timestamp_count(tmp_path, capsys):
    a = ("00001/2010/a.jpg", E0, N0, 201001)
    mat = _tokyotm(tmp_path, "tm.mat", "train", q=[a], db=[a])
    fields = scipy.io.loadmat(mat)["dbStruct"][0, 0]
    fields = {n: fields[n] for n in fields.dtype.names}
    fields["dbTimeStamp"] = np.array([[201001.0, 201002.0]])
    scipy.io.savemat(mat, {"dbStruct": fields})
    out = tmp_path / "x.h5"
    rc, _, err = run_cli(["--format", "tokyotm", "--mat", str(mat), "--root", str(tmp_path),
                          "--out", str(out)], capsys)
    assert rc == 2 and f"{mat}: field dbTimeStamp has shape (1, 2), expected 1 time stamps" in err
    assert_nothing_written(out)


# --------------------------------------------------------------------------- csv

CSV_ROWS = [("a/db0.jpg", E0, N0, "db"), ("a/db1.jpg", E0, N0, "db"), ("a/db2.jpg", E0 + 20.0, N0, "db"),
            ("b/q0.jpg", E0 + 5.0, N0, "query"), ("b/q1.jpg", E0 + 30.0, N0, "query"),
            ("b/q2.jpg", E0 + 5.0, N0, "query"), ("a/db3.jpg", E0 + 50.0, N0, "db")]


def _write_csv(tmp_path: Path, rows=CSV_ROWS, header: str = "path,easting,northing,role") -> Path:
    lines = [header] + [f"{p},{e!r},{n!r},{role}" if not isinstance(e, str) else f"{p},{e},{n},{role}"
                        for p, e, n, role in rows]
    (tmp_path / "set.csv").write_text("\n".join(lines) + "\n")
    touch(tmp_path, [r[0] for r in rows])
    return tmp_path / "set.csv"


def test_csv_format(tmp_path, capsys):
    csv_file = _write_csv(tmp_path)
    r = read_csv(csv_file, tmp_path)
    assert r.split == "test"
    assert r.db_path == ["a/db0.jpg", "a/db1.jpg", "a/db2.jpg", "a/db3.jpg"]
    assert r.query_path == ["b/q0.jpg", "b/q1.jpg", "b/q2.jpg"]
    assert r.db_place.tolist() == [0, 0, 1, 2] and r.query_place.tolist() == [3, 4, 3]
    out = tmp_path / "csv.h5"
    rc, stdout, err = run_cli(["--format", "csv", "--csv", str(csv_file), "--root", str(tmp_path),
                               "--out", str(out)], capsys)
    assert rc == 0, err
    idx = Index(out)
    assert idx.attrs["format"] == "csv" and idx.attrs["source"] == "set.csv"
    db = [(e, n) for _, e, n, role in CSV_ROWS if role == "db"]
    qs = [(e, n) for _, e, n, role in CSV_ROWS if role == "query"]
    assert [p.tolist() for p in idx.positives] == within(db, qs, 25.0) == [[0, 1, 2], [2, 3], [0, 1, 2]]
    assert "4 database images, 3 queries" in stdout


@pytest.mark.parametrize("case", ["header", "role", "number", "nan", "columns", "missing", "missing file",
                                  "directory"])
def test_csv_bad_input(tmp_path, capsys, case):
    rows = list(CSV_ROWS)
    header = "path,easting,northing,role"
    if case == "header":
        header = "path,x,y,role"
        message = ("set.csv line 1: header must be 'path,easting,northing,role' (UTM metres) or "
                   "'path,lat,lon,role' (degrees), found 'path,x,y,role'")
    elif case == "role":
        rows[2] = ("a/db2.jpg", E0, N0, "database")
        message = "set.csv line 4: role 'database' is neither 'db' nor 'query'"
    elif case == "columns":
        rows[4] = ("b/q1.jpg", "585030,5", "4477000", "query")
        message = "set.csv line 6: expected 4 columns, found 5"
    elif case == "nan":
        rows[4] = ("b/q1.jpg", "nan", "4477000", "query")
        message = "set.csv line 6: coordinates 'nan', '4477000' are not finite"
    elif case == "number":
        rows[1] = ("a/db1.jpg", "east", "4477000", "db")
        message = "set.csv line 3: coordinates 'east', '4477000' are not numbers"
    else:
        message = ""
    csv_file = _write_csv(tmp_path, rows, header)
    if case == "missing":
        (tmp_path / "b/q2.jpg").unlink()
        message = "set.csv: 1 of 3 query image(s) listed are missing"
    if case == "missing file":
        csv_file = tmp_path / "absent.csv"
        message = "absent.csv: file not found"
    if case == "directory":   # an existing directory is named as one, not as a missing file
        csv_file = tmp_path / "folder.csv"
        csv_file.mkdir()
        message = "folder.csv: is a directory, expected a file"
    out = tmp_path / "csv.h5"
    rc, _, err = run_cli(["--format", "csv", "--csv", str(csv_file), "--root", str(tmp_path),
                          "--out", str(out)], capsys)
    assert rc == 2
    assert message in err and str(csv_file) in err
    assert_nothing_written(out)


# --------------------------------------------------------------------------- inputs that make no sense

@pytest.mark.parametrize("case", ["db and query", "db twice", "query twice", "db twice normalised"])
def test_csv_image_listed_twice(tmp_path, capsys, case):
    rows = list(CSV_ROWS)  # file lines: header 1, rows 2..8
    if case == "db and query":
        rows[4] = ("a/db1.jpg", E0 + 30.0, N0, "query")
        message = ("set.csv: image 'a/db1.jpg' is listed both as database image (line 3) and as query "
                   "(line 6); a query would retrieve itself")
    elif case == "db twice":
        rows[6] = ("a/db0.jpg", E0 + 50.0, N0, "db")
        message = "set.csv: database image 'a/db0.jpg' is listed twice (line 2 and line 8)"
    elif case == "query twice":
        rows[5] = ("b/q0.jpg", E0 + 5.0, N0, "query")
        message = "set.csv: query image 'b/q0.jpg' is listed twice (line 5 and line 7)"
    else:
        rows[6] = ("a/./db2.jpg", E0 + 50.0, N0, "db")  # the same file as line 4
        message = "set.csv: database image 'a/./db2.jpg' is listed twice (line 4 and line 8)"
    csv_file = _write_csv(tmp_path, rows)
    out = tmp_path / "csv.h5"
    rc, _, err = run_cli(["--format", "csv", "--csv", str(csv_file), "--root", str(tmp_path),
                          "--out", str(out)], capsys)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert_nothing_written(out)


@pytest.mark.parametrize("case", ["query symlink", "database symlink", "hard link", "linked directory",
                                  "both link to a third file", "a link to another file"])
def test_csv_query_that_is_a_database_image_under_another_name(tmp_path, capsys, case):
    """Same file, two names: refused like the same name (the query would retrieve itself at distance 0)."""
    rows = list(CSV_ROWS)   # file lines: header 1, rows 2..8; line 3 a/db1.jpg, line 6 b/q1.jpg
    if case == "linked directory":
        rows[4] = ("c/db1.jpg", E0 + 30.0, N0, "query")
    csv_file = _write_csv(tmp_path, rows)
    q1, db1 = tmp_path / rows[4][0], tmp_path / "a/db1.jpg"
    q1.unlink()
    if case == "query symlink":
        q1.symlink_to(db1)
    elif case == "database symlink":
        db1.unlink()
        db1.symlink_to("../b/q1.jpg")
        q1.write_bytes(b"query")
    elif case == "hard link":
        os.link(db1, q1)
    elif case == "linked directory":
        q1.parent.rmdir()
        q1.parent.symlink_to("a")
    elif case == "both link to a third file":
        (tmp_path / "third.jpg").write_bytes(b"x")
        db1.unlink()
        db1.symlink_to(tmp_path / "third.jpg")
        q1.symlink_to(tmp_path / "third.jpg")
    else:
        (tmp_path / "other.jpg").write_bytes(b"x")
        q1.symlink_to(tmp_path / "other.jpg")
    out = tmp_path / "csv.h5"
    rc, _, err = run_cli(["--format", "csv", "--csv", str(csv_file), "--root", str(tmp_path),
                          "--out", str(out)], capsys)
    if case == "a link to another file":
        assert rc == 0, err
        return
    message = (f"set.csv: query {rows[4][0]!r} (line 6) and database image 'a/db1.jpg' (line 3) are one file "
               "under two names (a symbolic or hard link); a query would retrieve itself")
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert_nothing_written(out)


def test_mat_database_image_listed_twice(tmp_path, capsys):
    db_fns = list(DB_FNS)
    db_fns[9] = db_fns[2]
    mat, _ = write_pitts(tmp_path, [(E0 + 3.0, N0)], dbImageFns=cell(db_fns))
    out = tmp_path / "i.h5"
    rc, _, err = run_cli(["--format", "pitts", "--mat", str(mat), "--root", str(tmp_path), "--out", str(out)],
                         capsys)
    assert rc == 2
    assert (f"database image 'Pittsburgh/images/{DB_FNS[2]}' is listed twice (dbImageFns entry 3 and "
            "dbImageFns entry 10)") in err
    assert_nothing_written(out)


def test_directory_where_an_image_should_be(tmp_path, capsys):
    csv_file = _write_csv(tmp_path)
    (tmp_path / "a/db2.jpg").unlink()
    (tmp_path / "a/db2.jpg").mkdir()
    out = tmp_path / "csv.h5"
    rc, _, err = run_cli(["--format", "csv", "--csv", str(csv_file), "--root", str(tmp_path),
                          "--out", str(out)], capsys)
    assert rc == 2
    assert f"set.csv: 1 of 4 database image path(s) listed are not files under {tmp_path}" in err
    assert "first: a/db2.jpg" in err
    assert_nothing_written(out)
    # with the image check skipped the index is written; extraction then names the directory
    rc, _, err = run_cli(["--format", "csv", "--csv", str(csv_file), "--root", str(tmp_path),
                          "--out", str(out), "--skip-image-check"], capsys)
    assert rc == 0, err
    from vpr.data.images import check_images_exist
    with pytest.raises(VprError, match=r"db2\.jpg: is a directory, not an image"):
        check_images_exist(Index(out).db_files())


@pytest.mark.parametrize("argv, message", [
    (["--train-pos-radius", "30"], "--train-pos-radius 30 is above --train-neg-radius 25: training "
                                   "positives between the two would also be eligible negatives"),
    # non-finite and negative radii are refused by the option's type, before the .mat is read
    (["--train-pos-radius", "nan"], "argument --train-pos-radius: expected a finite number, got nan"),
    (["--train-neg-radius", "nan"], "argument --train-neg-radius: expected a finite number, got nan"),
    (["--eval-radius", "inf"], "argument --eval-radius: expected a finite number, got inf"),
    (["--eval-radius", "-1"], "argument --eval-radius: must be a positive number, got -1"),
])
def test_radii_that_make_no_sense(tmp_path, capsys, argv, message):
    mat, _ = write_pitts(tmp_path, [(E0 + 3.0, N0)], which="train")
    out = tmp_path / "i.h5"
    rc, _, err = run_cli(["--format", "pitts", "--mat", str(mat), "--root", str(tmp_path), "--out", str(out),
                          *argv], capsys)
    assert rc == 2 and message in err, err
    assert_nothing_written(out)


def test_equal_training_radii_are_consistent(tmp_path, capsys):
    # positives within r are non-negatives within r: none can be drawn as a negative
    mat, _ = write_pitts(tmp_path, [(E0 + 3.0, N0), (E0 + 50.0, N0)], which="train")
    out = tmp_path / "i.h5"
    rc, _, err = run_cli(["--format", "pitts", "--mat", str(mat), "--root", str(tmp_path), "--out", str(out),
                          "--train-pos-radius", "20", "--train-neg-radius", "20"], capsys)
    assert rc == 0, err
    idx = Index(out)
    for pos, nonneg in zip(idx.train_positives, idx.train_nonnegatives, strict=True):
        assert set(pos.tolist()) <= set(nonneg.tolist())


# --------------------------------------------------------------------------- csv in degrees

EARTH_RADIUS = 6371008.8  # metres, the mean radius (IUGG)


def haversine(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance in metres between two (lat, lon) points in degrees."""
    (la1, lo1), (la2, lo2) = np.radians(a), np.radians(b)
    h = np.sin((la2 - la1) / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin((lo2 - lo1) / 2) ** 2
    return float(2 * EARTH_RADIUS * np.arcsin(np.sqrt(h)))


def _latlon_rows(lat0=40.4406, lon0=-79.9959):
    """Database and query points around (lat0, lon0) at 5 to 70 m from each other; none within 1.5 m of the
    25 m radius, so that the positives depend neither on the projection's scale error nor on the sphere of
    the haversine formula standing in for the ellipsoid (together below 0.3 %)."""
    m = 1 / 111320  # degrees of latitude per metre
    mlon = m / np.cos(np.radians(lat0))
    db = [(lat0, lon0), (lat0 + 10 * m, lon0), (lat0, lon0 + 40 * mlon), (lat0 + 60 * m, lon0 + 30 * mlon)]
    qs = [(lat0 + 5 * m, lon0 + 3 * mlon), (lat0 + 2 * m, lon0 + 20 * mlon),
          (lat0 + 55 * m, lon0 + 28 * mlon)]
    rows = [(f"db/{i}.jpg", float(la), float(lo), "db") for i, (la, lo) in enumerate(db)]
    rows += [(f"q/{i}.jpg", float(la), float(lo), "query") for i, (la, lo) in enumerate(qs)]
    return rows, db, qs


def test_csv_in_degrees_is_refused_or_projected(tmp_path, capsys):
    rows, db, qs = _latlon_rows()
    # Ground truth by great-circle distances, independent of any projection.
    dist = [[haversine(q, d) for d in db] for q in qs]
    assert all(abs(x - 25) > 1.5 for row in dist for x in row)
    expected = [[j for j, x in enumerate(row) if x <= 25] for row in dist]
    assert expected == [[0, 1], [0, 1, 2], [3]]

    # Degrees under the easting,northing header (longitude as easting): refused, naming line 2 and the fix.
    csv_file = _write_csv(tmp_path, [(p, lo, la, r) for p, la, lo, r in rows])
    out = tmp_path / "deg.h5"
    rc, _, err = run_cli(["--format", "csv", "--csv", str(csv_file), "--root", str(tmp_path),
                          "--out", str(out)], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{csv_file} line 2: every easting and northing lies within ±180 and ±90" in err
    assert "path,lat,lon,role" in err
    assert_nothing_written(out)
    # --coords latlon with that header is refused too: which column is the latitude is not written down.
    rc, _, err = run_cli(["--format", "csv", "--csv", str(csv_file), "--root", str(tmp_path),
                          "--out", str(out), "--coords", "latlon"], capsys)
    assert rc == 2 and "line 1: --coords latlon but the header is 'path,easting,northing,role'" in err

    # The same points as path,lat,lon,role: projected to UTM zone 17N, the positives of the great circle.
    csv_file = _write_csv(tmp_path, rows, header="path,lat,lon,role")
    for extra in ([], ["--coords", "latlon"]):
        rc, stdout, err = run_cli(["--format", "csv", "--csv", str(csv_file), "--root", str(tmp_path),
                                   "--out", str(out), *extra], capsys)
        assert rc == 0, err
        idx = Index(out)
        assert [p.tolist() for p in idx.positives] == expected
        assert idx.attrs["coords"] == "latlon" and idx.attrs["utm_zone"] == "17N"
        assert "projected to UTM zone 17N" in stdout
        # metres now: the first two database images lie 10 m apart (as the great circle says)
        assert np.linalg.norm(idx.db_utm[1] - idx.db_utm[0]) == pytest.approx(haversine(db[0], db[1]),
                                                                              rel=3e-3)
        out.unlink()
    rc, _, err = run_cli(["--format", "csv", "--csv", str(csv_file), "--root", str(tmp_path),
                          "--out", str(out), "--coords", "utm"], capsys)
    assert rc == 2 and "drop --coords utm" in err


def test_csv_in_degrees_across_a_zone_boundary(tmp_path, capsys):
    # Longitude -78 separates UTM zones 17 and 18: one projection (zone 17, most points) keeps the
    # distances across the boundary; a point 1.5 degrees beyond the zone is refused.
    rows, db, qs = _latlon_rows(lat0=40.0, lon0=-78.0003)
    assert 0 < sum(lo > -78 for _, _, lo, _ in rows) < len(rows) / 2   # some points in zone 18
    expected = [[j for j, d in enumerate(db) if haversine(q, d) <= 25] for q in qs]
    csv_file = _write_csv(tmp_path, rows, header="path,lat,lon,role")
    out = tmp_path / "zone.h5"
    rc, _, err = run_cli(["--format", "csv", "--csv", str(csv_file), "--root", str(tmp_path),
                          "--out", str(out)], capsys)
    assert rc == 0, err
    idx = Index(out)
    assert idx.attrs["utm_zone"] == "17N" and [p.tolist() for p in idx.positives] == expected
    out.unlink()
    far = rows + [("db/far.jpg", 40.0, -76.5, "db")]
    csv_file = _write_csv(tmp_path, far, header="path,lat,lon,role")
    rc, _, err = run_cli(["--format", "csv", "--csv", str(csv_file), "--root", str(tmp_path),
                          "--out", str(out)], capsys)
    assert rc == 2 and "most are in zone 17; longitude -76.5 lies 1.5 degrees outside it" in err
    assert_nothing_written(out)


# --------------------------------------------------------------------------- queries without a positive

def test_drop_unmatched_queries(tmp_path, capsys, caplog):
    lonely = ("b/q3.jpg", E0 + 200.0, N0, "query")   # 150 m from the nearest database image
    csv_file = _write_csv(tmp_path, [*CSV_ROWS[:5], lonely, *CSV_ROWS[5:]])
    out = tmp_path / "drop.h5"
    argv = ["--format", "csv", "--csv", str(csv_file), "--root", str(tmp_path), "--out", str(out)]
    rc, _, err = run_cli(argv, capsys)
    assert rc == 2 and "1 query image(s) have no database image within 25.0 m (first: b/q3.jpg)" in err
    assert "--drop-unmatched-queries" in err
    assert_nothing_written(out)

    rc, stdout, err = run_cli([*argv, "--drop-unmatched-queries"], capsys)
    assert rc == 0, err
    assert "3 queries, 1 query image(s) dropped (no database image within 25 m)" in stdout
    assert f"{out}: 1 query image(s) dropped" in caplog.text and "count the other 3 queries" in caplog.text
    idx = Index(out)
    assert idx.query_path == ["b/q0.jpg", "b/q1.jpg", "b/q2.jpg"]
    assert idx.attrs["num_unmatched_dropped"] == 1 and idx.attrs["num_dropped"] == 1
    with h5py.File(out) as f:
        assert list(f["dropped/path"].asstr()[()]) == ["b/q3.jpg"]
        assert f["dropped/utm"][()].tolist() == [[E0 + 200.0, N0]]
    # The dropped list is outside the fingerprint: the index is the one of the CSV without that query.
    plain = tmp_path / "plain"
    plain.mkdir()
    rc, _, err = run_cli(["--format", "csv", "--csv", str(_write_csv(plain)), "--root", str(tmp_path),
                          "--out", str(tmp_path / "plain.h5")], capsys)
    assert rc == 0, err
    assert idx.fingerprint == Index(tmp_path / "plain.h5").fingerprint
    assert [p.tolist() for p in idx.positives] == [p.tolist() for p in Index(tmp_path / "plain.h5").positives]

    # Every query without a positive: nothing to evaluate, refused even with the flag.
    csv_file = _write_csv(tmp_path, [r for r in CSV_ROWS if r[3] == "db"] + [lonely])
    rc, _, err = run_cli([*argv, "--drop-unmatched-queries"], capsys)
    assert rc == 2 and "none of the 1 queries has a database image within 25.0 m" in err
