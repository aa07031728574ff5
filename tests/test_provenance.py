"""Every HDF5 artifact says what it is and what it was made from; every consumer checks it.

Real files throughout: index files from `build_index`, features from `vpr extract` with a real (small)
checkpoint, PCA files from `vpr fit-pca`, centers files in the layout `vpr cluster` writes.
"""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from vprtest import without_progress

from vpr.cli import main
from vpr.cluster import read_centers
from vpr.data.index import Index, SplitRecords, build_index
from vpr.errors import VprError
from vpr.models import ModelConfig, build_model, save_model

SIZE = (32, 48)
N_DB, N_Q = 6, 3


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _records(offset: float) -> SplitRecords:
    """A test split over the images written by the fixture; ``offset`` moves the queries (and so the
    ground truth) while keeping the counts."""
    return SplitRecords(
        split="test", db_path=[f"db/{i}.png" for i in range(N_DB)],
        db_utm=np.stack([np.arange(N_DB) * 100.0, np.zeros(N_DB)], 1), db_place=np.arange(N_DB),
        query_path=[f"q/{i}.png" for i in range(N_Q)],
        query_utm=np.stack([np.arange(N_Q) * 100.0 + offset, np.zeros(N_Q)], 1),
        query_place=np.arange(N_Q) + 100)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov")
    rng = np.random.default_rng(0)
    for rel in [f"db/{i}.png" for i in range(N_DB)] + [f"q/{i}.png" for i in range(N_Q)]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(SIZE[0], SIZE[1], 3), dtype=np.uint8)).save(root / rel)
    paths = {}
    for name, offset in (("a", 5.0), ("b", 205.0)):  # b: the same images, queries matched to other places
        paths[f"index_{name}"] = root / f"index_{name}.h5"
        build_index(_records(offset), paths[f"index_{name}"], root=root, fmt="csv", source=f"{name}.csv",
                    source_sha256="0")
    for name, seed in (("a", 0), ("b", 1)):  # two models with the same architecture (equal dimensions)
        torch.manual_seed(seed)
        paths[f"model_{name}"] = root / f"model_{name}.pth"
        save_model(paths[f"model_{name}"], build_model(ModelConfig(backbone="small", image_size=SIZE)))
    paths["features_a"] = root / "features_a.h5"
    _extract(paths["model_a"], paths["index_a"], paths["features_a"])
    paths["pca_a"] = root / "pca_a.h5"
    assert main(["fit-pca", "--features", str(paths["features_a"]), "--out", str(paths["pca_a"]),
                 "--dim", "4"]) == 0
    paths["root"] = root
    return paths


def _extract(checkpoint, index, out, *extra) -> int:
    return main(["extract", "--checkpoint", str(checkpoint), "--index", str(index), "--out", str(out),
                 "--precision", "fp32", "--workers", "0", "--device", "cpu", *extra])


def _one_line_error(capsys) -> str:
    err = without_progress(capsys.readouterr().err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---- features record what they were made from --------------------------------------------------------

def test_features_record_index_checkpoint_and_pca(setup, tmp_path):
    with h5py.File(setup["features_a"]) as f:
        attrs = dict(f.attrs)
    assert attrs["kind"] == "vpr-features"
    assert attrs["index_fingerprint"] == Index(setup["index_a"]).fingerprint
    assert attrs["checkpoint_sha256"] == _sha256(setup["model_a"]) and attrs["pca_sha256"] == ""
    with h5py.File(setup["pca_a"]) as f:
        assert f.attrs["kind"] == "vpr-pca"
        assert f.attrs["checkpoint_sha256"] == _sha256(setup["model_a"])  # the model of the features
    out = tmp_path / "pca_features.h5"
    assert _extract(setup["model_a"], setup["index_a"], out, "--pca", str(setup["pca_a"])) == 0
    with h5py.File(out) as f:
        assert f.attrs["pca_sha256"] == _sha256(setup["pca_a"]) and f["db"].shape == (N_DB, 4)


def test_evaluate_refuses_features_of_another_index_with_equal_counts(setup, tmp_path, capsys):
    out = tmp_path / "recall.csv"
    rc = main(["evaluate", "--index", str(setup["index_b"]), "--features", str(setup["features_a"]),
               "--out", str(out)])
    err = _one_line_error(capsys)
    assert rc == 2
    assert f"features of {setup['features_a']} were extracted from another index ({setup['index_a']}" in err
    assert f"than {setup['index_b']}" in err and "extract them from this index" in err
    assert not out.exists() and not (tmp_path / "recall_rankings.h5").exists()
    # the matching index is scored
    assert main(["evaluate", "--index", str(setup["index_a"]), "--features", str(setup["features_a"]),
                 "--out", str(out)]) == 0
    assert out.exists()


def test_an_index_rebuilt_with_other_content_is_another_index(setup, tmp_path, capsys):
    # same path, same counts, the ground truth changed since the features were extracted
    index = tmp_path / "index.h5"
    build_index(_records(5.0), index, root=setup["root"], fmt="csv", source="a.csv", source_sha256="0")
    features = tmp_path / "f.h5"
    assert _extract(setup["model_a"], index, features) == 0
    build_index(_records(205.0), index, root=setup["root"], fmt="csv", source="a.csv", source_sha256="0")
    assert main(["evaluate", "--index", str(index), "--features", str(features),
                 "--out", str(tmp_path / "r.csv")]) == 2
    assert "were extracted from another index" in _one_line_error(capsys)


@pytest.mark.parametrize("given_as", ["features", "index"])
def test_file_of_another_kind_is_one_line(setup, tmp_path, capsys, given_as):
    # the same file for both options: the index (or the features) file is read first and refused
    wrong = setup["index_a"] if given_as == "features" else setup["features_a"]
    index = setup["index_a"] if given_as == "features" else wrong
    rc = main(["evaluate", "--index", str(index), "--features", str(wrong), "--out", str(tmp_path / "r.csv")])
    err = _one_line_error(capsys)
    expected = {"features": "is a vpr index file, not a features file (create one with 'vpr extract')",
                "index": "is a vpr features file, not an index file (create one with 'vpr index')"}[given_as]
    assert rc == 2 and f"{wrong}: {expected}" in err
    assert not (tmp_path / "r.csv").exists()


def test_other_readers_check_the_kind(setup, tmp_path, capsys):
    rc = main(["fit-pca", "--features", str(setup["pca_a"]), "--out", str(tmp_path / "p.h5")])
    assert rc == 2
    assert (f"{setup['pca_a']}: is a vpr PCA file, not a features file (create one with 'vpr extract')"
            in _one_line_error(capsys))
    rc = _extract(setup["model_a"], setup["index_a"], tmp_path / "f.h5", "--pca", str(setup["features_a"]))
    assert rc == 2 and "is a vpr features file, not a PCA file" in _one_line_error(capsys)
    with pytest.raises(VprError, match="is a vpr index file, not a centers file"):
        read_centers(setup["index_a"])
    # a centers file as vpr cluster writes it, and one in the reference's layout (no kind), both read
    centroids = np.eye(4, 8, dtype=np.float32)
    for name, kind in (("ours.h5", "vpr-centers"), ("reference.hdf5", None)):
        with h5py.File(tmp_path / name, "w") as f:
            f["centroids"], f["descriptors"] = centroids, np.ones((10, 8), np.float32)
            if kind:
                f.attrs["kind"] = kind
        np.testing.assert_array_equal(read_centers(tmp_path / name, 4, 8)[0], centroids)


def test_pca_of_another_model_is_refused(setup, tmp_path, capsys):
    out = tmp_path / "f.h5"
    rc = _extract(setup["model_b"], setup["index_a"], out, "--pca", str(setup["pca_a"]))
    err = _one_line_error(capsys)
    assert rc == 2 and not out.exists()
    sha_a, sha_b = _sha256(setup["model_a"])[:16], _sha256(setup["model_b"])[:16]
    assert (f"{setup['pca_a']} was fitted on descriptors of another model (checkpoint sha256 {sha_a}, "
            f"{setup['model_b']} is {sha_b})") in err
    rc = main(["describe", "--checkpoint", str(setup["model_b"]), "--pca", str(setup["pca_a"]),
               "--device", "cpu", str(setup["root"] / "q/0.png")])
    assert rc == 2 and "was fitted on descriptors of another model" in _one_line_error(capsys)


def test_pca_without_a_recorded_model_is_still_accepted(setup, tmp_path):
    # a PCA file in the reference's layout (no kind, no model recorded): only its dimensions can be checked
    reference = tmp_path / "reference_pca.h5"
    with h5py.File(setup["pca_a"]) as src, h5py.File(reference, "w") as dst:
        for name in ("U", "lams", "mu", "Utmu"):
            dst[name] = src[name][()]
    assert _extract(setup["model_b"], setup["index_a"], tmp_path / "f.h5", "--pca", str(reference)) == 0


# ---- the index fingerprint ---------------------------------------------------------------------------

def _fingerprint_by_hand(path) -> str:
    """The recipe of docs/formats.md: per dataset (fixed order, the present ones), its name and a NUL; paths:
    their count and each UTF-8 string with its byte length (8-byte little-endian); numbers: the shape as int64
    then the values as float64 (coordinates) or int64, little-endian."""
    names = ["db/path", "db/utm", "db/place", "query/path", "query/utm", "query/place",
             "query/positives_indptr", "query/positives_indices",
             "query/train_positives_indptr", "query/train_positives_indices",
             "query/train_nonnegatives_indptr", "query/train_nonnegatives_indices"]
    h = hashlib.sha256(b"vpr index fingerprint 1\0")
    with h5py.File(path) as f:
        for name in names:
            if name not in f:
                continue
            h.update(name.encode() + b"\0")
            if name.endswith("/path"):
                strings = [s.encode() for s in f[name].asstr()[()]]
                h.update(len(strings).to_bytes(8, "little"))
                for s in strings:
                    h.update(len(s).to_bytes(8, "little") + s)
            else:
                arr = f[name][()].astype("<f8" if name.endswith("/utm") else "<i8")
                h.update(np.array(arr.shape, "<i8").tobytes() + arr.tobytes())
    return h.hexdigest()


def test_fingerprint_is_the_documented_hash_of_the_content(setup, tiny_data):
    for path in (setup["index_a"], setup["index_b"], tiny_data["train"]):
        with h5py.File(path) as f:
            assert f.attrs["kind"] == "vpr-index"
            stored = f.attrs["fingerprint"]
        assert stored == _fingerprint_by_hand(path) == Index(path).fingerprint
    assert Index(setup["index_a"]).fingerprint != Index(setup["index_b"]).fingerprint


def test_fingerprint_does_not_depend_on_the_hdf5_layout(setup, tmp_path):
    # the same index stored differently (compressed, chunked, other dataset order): the reader computes
    # the same fingerprint from the content, so the stored one still matches
    original = Index(setup["index_a"])
    copy = tmp_path / "relaid.h5"
    with h5py.File(setup["index_a"]) as src, h5py.File(copy, "w") as dst:
        names = []
        src.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        for name in reversed(names):
            data = src[name][()]
            dst.create_dataset(name, data=data, dtype=src[name].dtype, compression="gzip",
                               chunks=(1,) + data.shape[1:] if data.size else None)
        dst.attrs.update(src.attrs)
    assert Index(copy).fingerprint == original.fingerprint
    # and a changed coordinate is another index, which the stored fingerprint no longer matches
    with h5py.File(copy, "a") as f:
        f["db/utm"][0, 0] += 0.5
    with pytest.raises(VprError, match="does not match the fingerprint stored when it was built"):
        Index(copy)


@pytest.mark.parametrize("value", [10**6, -1])
def test_an_index_edited_after_it_was_built_is_refused(setup, tmp_path, capsys, value):
    edited = tmp_path / "edited.h5"
    edited.write_bytes(setup["index_a"].read_bytes())
    with h5py.File(edited, "a") as f:
        f["query/positives_indices"][0] = value   # a ground-truth index outside the database
    assert _extract(setup["model_a"], edited, tmp_path / "f.h5") == 2
    err = _one_line_error(capsys)
    assert str(edited) in err and "does not match the fingerprint stored when it was built" in err
    assert not (tmp_path / "f.h5").exists()
    # the same edit with the fingerprint recomputed to match still names the index that lies outside the
    # database
    with h5py.File(edited, "a") as f:
        f.attrs["fingerprint"] = _fingerprint_by_hand(edited)
    with pytest.raises(VprError) as e:
        Index(edited)
    assert str(e.value) == (f"{edited}: query/positives_indices holds {value}, outside the {N_DB} "
                            f"database images (0..{N_DB - 1})")
    # and one without a fingerprint is refused
    with h5py.File(edited, "a") as f:
        del f.attrs["fingerprint"]
    with pytest.raises(VprError, match="records no fingerprint: rebuild it with 'vpr index'"):
        Index(edited)


def test_an_index_with_a_broken_row_pointer_is_refused(setup, tmp_path):
    edited = tmp_path / "edited.h5"
    edited.write_bytes(setup["index_a"].read_bytes())
    with h5py.File(edited, "a") as f:
        ptr = f["query/positives_indptr"][()]
        ptr[1] = ptr[-1] + 1         # a row pointer past the end of the indices
        f["query/positives_indptr"][()] = ptr
    fingerprint = _fingerprint_by_hand(edited)   # made to match: the row pointer check is what refuses it
    with h5py.File(edited, "a") as f:
        f.attrs["fingerprint"] = fingerprint
    with pytest.raises(VprError, match="query/positives_indptr is not a valid row pointer for 3 queries"):
        Index(edited)
