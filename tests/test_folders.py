"""Your own photos and the downloaders' layout: the folders format of `vpr index`, EXIF orientation,
`vpr init-model`, `vpr retrieve` and `vpr describe` of folders, and `vpr train --init-only` without indexes.

Fast tests run the commands in-process (``vpr.cli.main``) on tiny images; the workflow test (slow) runs
Snakemake on a folders data set and checks its recall against one computed here from the file names.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image
from vprtest import WITH_VPR_ON_PATH

from vpr.cli import main

REPO = Path(__file__).resolve().parents[1]
SIZE = ["--image-size", "48", "64"]


def picture(seed: int, h: int = 48, w: int = 64) -> Image.Image:
    """A smooth street-like picture: a gradient sky, a few coloured blocks (their layout from ``seed``)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([80 + 100 * y / h, 120 + 60 * x / w, 200 - 80 * y / h], axis=-1)
    for _ in range(4):
        top, left = rng.integers(0, h - 8), rng.integers(0, w - 8)
        img[top:top + rng.integers(6, 20), left:left + rng.integers(6, 24)] = rng.integers(0, 255, 3)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def name(east: float, north: float, *extra: str) -> str:
    return "@" + "@".join([f"{east:.2f}", f"{north:.2f}", "17", "T", "40.44", "-79.99", *extra]) + "@.jpg"


def init_model(images, out) -> None:
    """`vpr init-model` with the small backbone: a model of the tiny test images in a second."""
    assert main(["init-model", "--backbone", "small", "--images", str(images), "--out", str(out),
                 "--num-clusters", "4", *SIZE, "--per-image", "20", "--iterations", "5",
                 "--workers", "0"]) == 0


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def positives_from_names(db_names, q_names, radius=25.0):
    """Ground truth by brute force from the file names alone: per query, the database images within
    ``radius`` metres."""
    def utm(n):
        fields = Path(n).name.split("@")
        return float(fields[1]), float(fields[2])
    return [{j for j, d in enumerate(db_names) if math.dist(utm(q), utm(d)) <= radius} for q in q_names]


@pytest.fixture()
def tree(tmp_path):
    """database/ (in two subfolders, .jpg/.JPEG/.png, extra @ fields) and queries/ of @-named images."""
    root = tmp_path / "my set"
    db_names = [f"a/{name(1000 + 40 * i, 2000)}" for i in range(4)]
    db_names += [f"b/deeper/{name(1000 + 40 * i, 2100, 'pano7', '03', '90')[:-4]}.JPEG" for i in range(3)]
    db_names += [name(1300, 2000)[:-4] + ".png"]
    q_names = [name(1000 + 40 * i + 5, 2003, "x", "y") for i in (0, 2)] + [name(1042, 2098)]
    for i, n in enumerate(db_names):
        (root / "database" / n).parent.mkdir(parents=True, exist_ok=True)
        picture(i).save(root / "database" / n)
    for i, n in enumerate(q_names):
        (root / "queries" / n).parent.mkdir(parents=True, exist_ok=True)
        picture(i if i < 2 else 5).save(root / "queries" / n)
    (root / "database" / "notes.txt").write_text("not an image")
    return root, db_names, q_names


def read_index(path):
    with h5py.File(path) as f:
        ptr, idx = f["query/positives_indptr"][()], f["query/positives_indices"][()]
        return {"db": list(f["db/path"].asstr()[()]), "query": list(f["query/path"].asstr()[()]),
                "db_utm": f["db/utm"][()], "positives": [set(idx[ptr[i]:ptr[i + 1]].tolist())
                                                         for i in range(len(ptr) - 1)],
                "attrs": dict(f.attrs)}


def test_the_folders_format_reads_the_names_recursively(tree, tmp_path, capsys):
    root, db_names, q_names = tree
    out = tmp_path / "index.h5"
    assert main(["index", "--format", "folders", "--root", str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    index = read_index(out)
    # every image, sorted by path, relative to the root; the text file is not an image
    assert index["db"] == sorted(f"database/{n}" for n in db_names)
    assert index["query"] == sorted(f"queries/{n}" for n in q_names)
    assert [tuple(xy) for xy in index["db_utm"]] == [
        (float(n.split("@")[1]), float(n.split("@")[2])) for n in index["db"]]
    assert index["positives"] == positives_from_names(index["db"], index["query"])
    assert index["attrs"]["format"] == "folders" and index["attrs"]["exif_orientation"]
    assert Path(index["attrs"]["root"]) == root.resolve()
    assert "0 of 11 images carry an EXIF rotation tag (applied" in printed
    # the same index from --database and --queries alone (root: the folder holding both)
    again = tmp_path / "again.h5"
    assert main(["index", "--format", "folders", "--database", str(root / "database"), "--queries",
                 str(root / "queries"), "--out", str(again)]) == 0
    assert read_index(again)["attrs"]["fingerprint"] == index["attrs"]["fingerprint"]


def test_a_file_list_beside_the_folder_is_used_instead_of_walking(tree, tmp_path, capsys):
    root, db_names, _ = tree
    listed = [db_names[5], db_names[0], db_names[2]]          # the file's order, not sorted
    (root / "database_images_paths.txt").write_text("\n".join(listed) + "\n\n")
    out = tmp_path / "index.h5"
    assert main(["index", "--format", "folders", "--root", str(root), "--out", str(out)]) == 0
    assert read_index(out)["db"] == [f"database/{n}" for n in listed]
    # a listed file that is not there: one line naming it
    (root / "database_images_paths.txt").write_text(f"{listed[0]}\nmissing/{name(1, 2)}\n")
    assert main(["index", "--format", "folders", "--root", str(root), "--out", str(out) + "2"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "database_images_paths.txt" in line and f"missing/{name(1, 2)}" in line


def test_a_malformed_name_is_one_line_naming_the_file(tree, tmp_path, capsys):
    root, _, _ = tree
    picture(9).save(root / "queries" / "IMG_0042.jpg")
    out = tmp_path / "index.h5"
    assert main(["index", "--format", "folders", "--root", str(root), "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "IMG_0042.jpg" in line and "@<utm_east>@<utm_north>@" in line
    assert not out.exists()


def rotated_with_tag(upright: Image.Image, path: Path) -> None:
    """Save ``upright`` as a phone does when held sideways: pixels stored turned a quarter, EXIF
    Orientation=6 ("turn 90 degrees clockwise to view")."""
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(path, quality=90, exif=exif)


def test_an_exif_rotated_photo_gives_the_descriptor_of_the_upright_one(tmp_path, capsys):
    root = tmp_path / "photos"
    (root / "database").mkdir(parents=True)
    (root / "queries").mkdir()
    # the phone's JPEG, stored sideways with the tag; the upright original: its stored pixels turned a
    # quarter clockwise (numpy, not PIL), kept losslessly (PNG) so that only the orientation differs
    rotated_with_tag(picture(3, 96, 128), root / "queries" / name(1, 1))
    with Image.open(root / "queries" / name(1, 1)) as img:
        assert img.size == (96, 128) and img.getexif()[0x0112] == 6   # stored sideways
        stored = np.asarray(img.convert("RGB"))
    Image.fromarray(np.rot90(stored, k=-1).copy()).save(root / "database" / (name(0, 0)[:-4] + ".png"))
    for i in range(1, 4):
        picture(10 + i, 96, 128).save(root / "database" / name(100 * i, 0), quality=95)
    model = tmp_path / "model.pth"
    init_model(root / "database", model)
    index = tmp_path / "index.h5"
    assert main(["index", "--format", "folders", "--root", str(root), "--out", str(index)]) == 0
    assert "1 of 5 images carry an EXIF rotation tag (applied" in capsys.readouterr().out
    features = tmp_path / "features.h5"
    assert main(["extract", "--checkpoint", str(model), "--index", str(index), "--out", str(features),
                 "--workers", "0"]) == 0
    with h5py.File(features) as f:
        db, query = f["db"][()], f["query"][()]
    cosine = float(db[0] @ query[0]) / float(np.linalg.norm(db[0]) * np.linalg.norm(query[0]))
    assert cosine >= 0.9999
    # the same file read as stored (the paper formats' behaviour) is another picture: the check can fail
    raw = tmp_path / "raw.npy"
    assert main(["describe", "--checkpoint", str(model), "--no-exif-orientation", "--out", str(raw),
                 str(root / "queries" / name(1, 1))]) == 0
    assert float(np.load(raw)[0] @ db[0]) < 0.99


def test_two_folders_without_coordinates_to_ranked_matches(tmp_path, capsys):
    db_dir, q_dir = tmp_path / "db photos", tmp_path / "my queries"
    for i in range(6):
        (db_dir / ("sub" if i % 2 else "")).mkdir(parents=True, exist_ok=True)
        picture(i).save(db_dir / ("sub" if i % 2 else "") / f"street_{i}.jpg", quality=95)
    q_dir.mkdir()
    for i in (1, 4):
        picture(i).save(q_dir / f"IMG_{i}.png")
    model = tmp_path / "model.pth"
    init_model(db_dir, model)
    out = tmp_path / "matches"
    assert main(["retrieve", "--checkpoint", str(model), "--database", str(db_dir), "--queries", str(q_dir),
                 "--out", str(out), "--top-k", "4", "--show", "3", "--workers", "0"]) == 0
    with open(out / "matches.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["query", "rank", "database", "distance"]     # no coordinates in these names
    # independently: descriptors of `vpr describe` on the folders, distances by brute force
    desc_db, desc_q = tmp_path / "db.npy", tmp_path / "q.npy"
    assert main(["describe", "--checkpoint", str(model), str(db_dir), "--out", str(desc_db)]) == 0
    assert main(["describe", "--checkpoint", str(model), str(q_dir), "--out", str(desc_q)]) == 0
    db, q = np.load(desc_db), np.load(desc_q)
    db_names = sorted(str(p.relative_to(db_dir).as_posix()) for p in db_dir.rglob("*.jpg"))
    q_names = sorted(p.name for p in q_dir.iterdir())
    for qi, qn in enumerate(q_names):
        mine = [r for r in rows if r["query"] == qn]
        assert [int(r["rank"]) for r in mine] == [1, 2, 3, 4]
        dist = [math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in zip(q[qi], db[j], strict=True)))
                for j in range(len(db_names))]
        order = sorted(range(len(db_names)), key=lambda j: dist[j])[:4]
        assert [r["database"] for r in mine] == [db_names[j] for j in order]
        assert [float(r["distance"]) for r in mine] == pytest.approx([dist[j] for j in order], abs=1e-4)
    # a query that is a database image (re-saved) finds it first
    assert [r["database"] for r in rows if r["rank"] == "1"] == ["sub/street_1.jpg", "street_4.jpg"]
    assert sorted(p.name for p in (out / "pictures").iterdir()) == ["IMG_1.png.png", "IMG_4.png.png"]
    # --only-wrong needs ground truth
    capsys.readouterr()
    assert main(["retrieve", "--checkpoint", str(model), "--database", str(db_dir), "--queries", str(q_dir),
                 "--out", str(tmp_path / "x"), "--only-wrong"]) == 2
    assert "--index" in one_error_line(capsys.readouterr().err)


def test_retrieve_over_an_index_marks_the_correct_matches_and_draws_only_the_wrong(tree, tmp_path):
    root, _, _ = tree
    index, model = tmp_path / "index.h5", tmp_path / "model.pth"
    assert main(["index", "--format", "folders", "--root", str(root), "--out", str(index)]) == 0
    init_model(root / "database", model)
    out = tmp_path / "matches"
    assert main(["retrieve", "--checkpoint", str(model), "--index", str(index), "--out", str(out), "--top-k",
                 "3", "--only-wrong", "--workers", "0"]) == 0
    gt = read_index(index)
    positives = positives_from_names(gt["db"], gt["query"])
    with open(out / "matches.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(gt["query"])
    for r in rows:
        q, j = gt["query"].index(r["query"]), gt["db"].index(r["database"])
        assert r["correct"] == str(int(j in positives[q]))
        assert float(r["query_easting"]) == float(r["query"].split("@")[1])
        assert float(r["db_northing"]) == float(r["database"].split("@")[2])
    wrong = {r["query"] for r in rows if r["rank"] == "1" and r["correct"] == "0"}
    drawn = sorted(p.name for p in (out / "pictures").glob("*.png")) if (out / "pictures").exists() else []
    assert drawn == sorted(q.replace("/", "__") + ".png" for q in wrong)


def test_train_init_only_needs_no_index_nor_a_fitting_trainable_from(tmp_path, capsys):
    rng = np.random.default_rng(0)
    centers = tmp_path / "centers.h5"
    with h5py.File(centers, "w") as f:
        f["centroids"] = rng.standard_normal((4, 112)).astype(np.float32)
        f["descriptors"] = rng.standard_normal((40, 112)).astype(np.float32)
    out = tmp_path / "run"
    # the default trainable_from (conv5) does not fit efficientnet_lite0, and nothing is trained
    assert main(["train", "--init-only", "--centers", str(centers), "--out", str(out),
                 "--backbone", "efficientnet_lite0", "--num-clusters", "4", *SIZE]) == 0
    from vpr.models import load_model

    model = load_model(out / "initial.pth")
    assert model.config.backbone == "efficientnet_lite0" and model.config.trainable_from == "block5"
    capsys.readouterr()
    assert main(["train", "--centers", str(centers), "--out", str(tmp_path / "run2"),
                 "--backbone", "small"]) == 2
    assert "--train-index and --val-index" in one_error_line(capsys.readouterr().err)


@pytest.mark.slow
def test_a_folders_data_set_through_the_workflow(tree, tmp_path):
    """A `format: folders` data set and an init-model checkpoint as an external model, evaluated by
    Snakemake; the recall equals one computed here from descriptors of `vpr describe` and the names."""
    root, _, _ = tree
    model = tmp_path / "model.pth"
    init_model(root / "database", model)
    config = {
        "datasets": {"mine_test": {"format": "folders", "root": str(root)}},
        "test_sets": {"mine": "mine_test"},
        "external": {"offshelf": {"checkpoint": str(model), "own_pca": True}},
        "examples": "offshelf", "use_gpu": False,
        "evaluate": {"recall_at": [1, 2, 5, 10], "batch_size": 4, "workers": 0},
    }
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
                           "-d", str(work), "--configfile", str(work / "config.yaml"), "--cores", "2"],
                          capture_output=True, text=True, env=WITH_VPR_ON_PATH)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(work / "results" / "offshelf" / "mine_recall.csv") as f:
        recall = {int(r["n"]): float(r["recall"]) for r in csv.DictReader(f)}
    # independently: names -> ground truth, describe -> descriptors, brute-force ranking
    db_names = sorted(p.relative_to(root / "database").as_posix() for p in (root / "database").rglob("*")
                      if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    q_names = sorted(p.name for p in (root / "queries").iterdir())
    positives = positives_from_names(db_names, q_names)
    desc_db, desc_q = tmp_path / "db.npy", tmp_path / "q.npy"
    assert main(["describe", "--checkpoint", str(model), str(root / "database"), "--out", str(desc_db)]) == 0
    assert main(["describe", "--checkpoint", str(model), str(root / "queries"), "--out", str(desc_q)]) == 0
    db, q = np.load(desc_db), np.load(desc_q)
    for n in (1, 2, 5, 10):
        hits = 0
        for qi in range(len(q_names)):
            dist = [float(np.sum((q[qi] - db[j]) ** 2)) for j in range(len(db_names))]
            top = sorted(range(len(db_names)), key=lambda j: dist[j])[:n]
            hits += any(j in positives[qi] for j in top)
        assert recall[n] == pytest.approx(hits / len(q_names))
