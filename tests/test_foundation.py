"""The shared foundation: atomic output, radius queries, the index builder and the CLI dispatcher."""

import math

import h5py
import numpy as np
import pytest

from vpr import cli
from vpr.data.geometry import csr_rows, radius_neighbours
from vpr.data.index import Index, SplitRecords, build_index
from vpr.errors import VprError
from vpr.io import atomic_output, open_h5


def test_atomic_output_renames_on_success_and_cleans_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_output(target) as tmp:
        tmp.write_text("done")
        assert not target.exists()
    assert target.read_text() == "done"

    failed = tmp_path / "failed.txt"
    with pytest.raises(RuntimeError), atomic_output(failed) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert not failed.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]




def test_open_h5_names_the_file_what_it_is_and_its_maker(tmp_path):
    with pytest.raises(VprError) as e:
        open_h5(tmp_path / "gone.h5", "centers file", "vpr cluster")
    assert str(e.value) == f"{tmp_path / 'gone.h5'}: centers file not found (create it with 'vpr cluster')"
    (tmp_path / "text.h5").write_text("plain text, not HDF5")
    with pytest.raises(VprError, match=r"text\.h5: not a readable HDF5 centers file \("):
        open_h5(tmp_path / "text.h5", "centers file", "vpr cluster")
    with h5py.File(tmp_path / "ok.h5", "w") as f:
        f.create_dataset("centroids", data=np.arange(6.0).reshape(2, 3))
    with open_h5(tmp_path / "ok.h5", "centers file", "vpr cluster") as f:
        np.testing.assert_array_equal(f["centroids"][()], [[0, 1, 2], [3, 4, 5]])
    assert not f   # closed by the with block
def brute_force_neighbours(db, q, radius, q_place=None, db_place=None):
    rows = []
    for i, (qx, qy) in enumerate(q):
        row = []
        for j, (dx, dy) in enumerate(db):
            if math.hypot(qx - dx, qy - dy) <= radius and (q_place is None or q_place[i] != db_place[j]):
                row.append(j)
        rows.append(row)
    return rows


def test_radius_neighbours_match_brute_force():
    rng = np.random.default_rng(0)
    db = rng.uniform(0, 100, size=(60, 2))
    q = rng.uniform(0, 100, size=(15, 2))
    db_place = rng.integers(0, 5, size=60)
    q_place = rng.integers(0, 5, size=15)
    for radius in (5.0, 25.0):
        indptr, indices = radius_neighbours(db, q, radius)
        assert [r.tolist() for r in csr_rows(indptr, indices)] == brute_force_neighbours(db, q, radius)
        indptr, indices = radius_neighbours(db, q, radius, exclude_same_place=(q_place, db_place))
        expected = brute_force_neighbours(db, q, radius, q_place, db_place)
        assert [r.tolist() for r in csr_rows(indptr, indices)] == expected


def small_split(split="test"):
    # Database on a line every 8 m; queries next to some of them, one far away for the train case.
    db = np.array([[1000.0 + 8 * i, 2000.0] for i in range(10)])
    q = np.array([[1001.0, 2003.0], [1040.0, 2000.0], [1080.0, 2009.0]])
    return SplitRecords(
        split=split,
        db_path=[f"db/{i:03d}.jpg" for i in range(10)], db_utm=db, db_place=np.arange(10),
        query_path=[f"q/{i:03d}.jpg" for i in range(3)], query_utm=q, query_place=np.arange(10, 13),
    )


def test_build_index_writes_the_documented_schema(tmp_path):
    out = tmp_path / "index.h5"
    build_index(small_split("train"), out, root=tmp_path, fmt="csv", source="set.csv", source_sha256="0" * 64)
    index = Index(out)
    assert index.split == "train" and index.attrs["format"] == "csv"
    assert index.attrs["root"] == str(tmp_path.resolve())
    # Query 2 at (1080, 2009) is 17 m from the last database image (1072, 2000): dropped for training.
    assert index.query_path == ["q/000.jpg", "q/001.jpg"] and index.attrs["num_dropped"] == 1
    db, q = small_split().db_utm, small_split().query_utm[:2]
    assert [r.tolist() for r in index.positives] == brute_force_neighbours(db, q, 25.0)
    assert [r.tolist() for r in index.train_positives] == brute_force_neighbours(db, q, 10.0)
    assert [r.tolist() for r in index.train_nonnegatives] == brute_force_neighbours(db, q, 25.0)
    assert index.query_files()[0] == tmp_path.resolve() / "q/000.jpg"


@pytest.mark.parametrize("breakage, message", [
    (lambda r: r.db_utm.__setitem__((3, 0), np.nan), "NaN"),
    (lambda r: setattr(r, "query_utm", r.query_utm[:2]), "shape"),
    (lambda r: r.query_utm.__setitem__(1, [5000.0, 5000.0]), "no database image within 25"),
])
def test_build_index_rejects_bad_input_and_writes_nothing(tmp_path, breakage, message):
    records = small_split()
    breakage(records)
    out = tmp_path / "index.h5"
    with pytest.raises(VprError, match=message):
        build_index(records, out, root=tmp_path, fmt="csv", source="set.csv", source_sha256="0")
    assert list(tmp_path.iterdir()) == []


def test_index_reader_rejects_a_foreign_file(tmp_path):
    with pytest.raises(VprError, match="not found"):
        Index(tmp_path / "missing.h5")
    bogus = tmp_path / "bogus.h5"
    bogus.write_text("not hdf5")
    with pytest.raises(VprError, match="bogus.h5"):
        Index(bogus)


def test_every_command_has_help(capsys):
    for name in cli.COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([name, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: vpr {name}" in capsys.readouterr().out
        # Every option of every command explains itself.
        parser = cli.build_parser(name)
        sub = next(a for a in parser._actions if a.dest == "command").choices[name]
        undocumented = [a.dest for a in sub._actions if not a.help]
        assert undocumented == [], f"'vpr {name}' options without help: {undocumented}"


def test_no_command_prints_usage(capsys):
    assert cli.main([]) == 2
    assert "synth" in capsys.readouterr().out


def test_check_config_names_the_line_of_each_problem(tmp_path, capsys):
    good, twice, broken = tmp_path / "good.yaml", tmp_path / "twice.yaml", tmp_path / "broken.yaml"
    good.write_text("pca:\n  dim: 8\n  whiten: true\nval: x\n")
    twice.write_text("pca:\n  dim: 8\n  whiten: true\n  dim: 16\n")
    broken.write_text("pca: {dim: 8\nval: x\n")
    assert cli.main(["check-config", str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: valid YAML, no key given twice (2 top-level key(s))\n"
    assert cli.main(["check-config", str(good), str(twice), str(broken)]) == 2
    out, err = capsys.readouterr()
    assert out == f"{good}: valid YAML, no key given twice (2 top-level key(s))\n"
    assert err.splitlines() == [
        f"vpr check-config: error: {twice}: line 4, column 3: key 'dim' is given twice (lines 2 and 4); "
        "keep one",
        f"vpr check-config: error: {broken}: line 2, column 4: not valid YAML (expected ',' or '}}', but got "
        "':', while parsing a flow mapping)"]
