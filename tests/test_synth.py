"""`vpr synth`: layout, .mat format, identity rules, ground truth and determinism of the synthetic data."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from vprtest import VPR, alive, descendants

from vpr import cli
from vpr.errors import VprError
from vpr.synth import TRUTH_FILE, generate, get_preset
from vpr.synth import layouts as synth_layouts
from vpr.synth import renderer as synth_renderer

PLAIN = ("whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages", "numQueries", "posDistThr",
         "posDistSqThr", "nonTrivPosDistSqThr")
TIMED = ("whichSet", "dbImageFns", "utmDb", "dbTimeStamp", "qImageFns", "utmQ", "qTimeStamp", "numImages",
         "numQueries", "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr")
PITTS_DB, PITTS_Q = "pitts/raw/Pittsburgh/images", "pitts/raw/Pittsburgh/queries"
TM = "tokyo/raw/tokyoTM/images"
# .mat, database image dir, query image dir, field layout
MATS = {
    "pitts30k_train": ("pitts/raw/pitts30k_train.mat", PITTS_DB, PITTS_Q, PLAIN),
    "pitts30k_val": ("pitts/raw/pitts30k_val.mat", PITTS_DB, PITTS_Q, PLAIN),
    "pitts30k_test": ("pitts/raw/pitts30k_test.mat", PITTS_DB, PITTS_Q, PLAIN),
    "pitts250k_test": ("pitts/raw/pitts250k_test.mat", PITTS_DB, PITTS_Q, PLAIN),
    "tokyo247": ("tokyo/raw/tokyo247.mat", "tokyo/raw/tokyo247/images", "tokyo/raw/tokyo247/query", PLAIN),
    "tokyoTM_train": ("tokyo/raw/tokyoTM_train.mat", TM, TM, TIMED),
    "tokyoTM_val": ("tokyo/raw/tokyoTM_val.mat", TM, TM, TIMED),
}
EVAL_SPLITS = ("pitts30k_val", "pitts30k_test", "pitts250k_test", "tokyo247", "tokyoTM_val")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    summary = generate("tiny", out, seed=0)
    assert summary["preset"] == "tiny" and summary["images"] > 0
    return out


def load(data: Path, split: str) -> dict:
    """The dbStruct of one split as plain Python lists, read positionally like the reference does."""
    mat = scipy.io.loadmat(data / MATS[split][0], squeeze_me=False)
    s = mat["dbStruct"]
    fields = s.dtype.names
    values = s[0, 0]
    rec = {name: values[name] for name in fields}
    return {
        "fields": fields,
        "which": str(rec["whichSet"][0]),
        "db": [str(c[0].item()) for c in rec["dbImageFns"]],
        "db_utm": [tuple(map(float, p)) for p in rec["utmDb"].T],
        "q": [str(c[0].item()) for c in rec["qImageFns"]],
        "q_utm": [tuple(map(float, p)) for p in rec["utmQ"].T],
        "raw": rec,
    }


def within(p, points, radius):
    return [j for j, d in enumerate(points) if math.hypot(p[0] - d[0], p[1] - d[1]) <= radius]


def test_every_listed_image_exists_and_tokyo_database_is_png(data):
    for split, (_, db_dir, q_dir, _) in MATS.items():
        s = load(data, split)
        assert s["db"] and s["q"], split
        for fn in s["db"]:
            if split == "tokyo247":
                assert fn.endswith(".jpg")
                png = data / db_dir / (fn[:-4] + ".png")
                assert png.is_file() and not (data / db_dir / fn).exists()
                assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            else:
                assert (data / db_dir / fn).is_file(), (split, fn)
        for fn in s["q"]:
            path = data / q_dir / fn
            assert fn.endswith(".jpg") and path.read_bytes()[:3] == b"\xff\xd8\xff", (split, fn)
    with Image.open(data / MATS["pitts30k_val"][1] / load(data, "pitts30k_val")["db"][0]) as im:
        assert im.size == get_preset("tiny").db_size and im.mode == "RGB"


def test_mat_files_are_matlab_v5_with_fields_in_the_real_order(data):
    for split, (rel, _, _, layout) in MATS.items():
        raw = (data / rel).read_bytes()
        assert raw[:10] == b"MATLAB 5.0" and b"Created on" not in raw[:116]
        assert raw[126:128] == b"IM"  # little-endian MAT v5
        mat = scipy.io.loadmat(data / rel, squeeze_me=False)
        assert [k for k in mat if not k.startswith("__")] == ["dbStruct"]
        s = load(data, split)
        assert s["fields"] == layout, split
        rec = s["raw"]
        expected_set = {"pitts250k_test": "test", "tokyo247": "test"}.get(split, split.split("_")[-1])
        assert s["which"] == expected_set
        assert rec["utmDb"].shape == (2, len(s["db"])) and rec["utmDb"].dtype == np.float64
        assert rec["utmQ"].shape == (2, len(s["q"]))
        assert rec["numImages"].item() == len(s["db"]) and rec["numQueries"].item() == len(s["q"])
        assert (rec["posDistThr"].item(), rec["posDistSqThr"].item(), rec["nonTrivPosDistSqThr"].item()) == \
            (25, 625, 100)


def test_utm_coordinates_are_in_the_real_zones(data):
    for split in MATS:
        s = load(data, split)
        e, n = zip(*(s["db_utm"] + s["q_utm"]), strict=True)
        if split.startswith("pitts"):
            assert 584000 <= min(e) and max(e) <= 590000 and 4474000 <= min(n) and max(n) <= 4480000
        else:
            assert 380000 <= min(e) and max(e) <= 390000 and 3946000 <= min(n) and max(n) <= 3952000


def test_every_evaluation_query_has_a_database_image_within_25m(data):
    for split in EVAL_SPLITS:
        s = load(data, split)
        for p in s["q_utm"]:
            assert within(p, s["db_utm"], 25.0), split
        # ... and many database images are farther away (the task is not trivial)
        far = [len(s["db"]) - len(within(p, s["db_utm"], 25.0)) for p in s["q_utm"]]
        assert min(far) >= len(s["db"]) // 3, split


def test_most_training_queries_have_a_positive_within_10m_and_a_few_do_not(data):
    s = load(data, "pitts30k_train")
    n10 = [len(within(p, s["db_utm"], 10.0)) for p in s["q_utm"]]
    n25 = [len(within(p, s["db_utm"], 25.0)) for p in s["q_utm"]]
    without = sum(n == 0 for n in n10)
    assert 1 <= without <= 0.3 * len(n10)
    assert all(n > 0 for n in n25)
    truth = json.loads((data / TRUTH_FILE).read_text())["splits"]["pitts30k_train"]
    assert truth["queries_without_db_within_10m"] == without


def test_pittsburgh_identity_rule_and_disjoint_splits(data):
    points = {}
    for split in ("pitts30k_train", "pitts30k_val", "pitts30k_test"):
        s = load(data, split)
        for kind in ("db", "q"):
            by_place = defaultdict(set)
            for fn, p in zip(s[kind], s[f"{kind}_utm"], strict=True):
                stem = fn.split("/")[-1]
                assert len(stem.split("_")) == 3 and stem.split("_")[1].startswith("pitch")
                by_place[fn.split("_")[0]].add(p)
            # one place key = one panorama = one UTM, with several views
            assert all(len(u) == 1 for u in by_place.values()), (split, kind)
            assert len(by_place) < len(s[kind])
        points[split] = s["db_utm"] + s["q_utm"]
    names = list(points)
    for a in range(3):
        for b in range(a + 1, 3):
            gap = min(math.hypot(p[0] - q[0], p[1] - q[1])
                      for p in points[names[a]] for q in points[names[b]])
            assert gap > 100.0, (names[a], names[b])
    test, big = load(data, "pitts30k_test"), load(data, "pitts250k_test")
    # the same streets, denser, and queries of its own: the two test sets share no query image
    assert set(test["db"]) < set(big["db"]) and len(big["q"]) == len(test["q"])
    assert not set(big["q"]) & set(test["q"])
    big_utm = dict(zip(big["db"], big["db_utm"], strict=True))
    assert all(big_utm[fn] == p for fn, p in zip(test["db"], test["db_utm"], strict=True))


def test_tokyo247_panoramas_have_12_consecutive_cutouts_with_one_utm(data):
    s = load(data, "tokyo247")
    truth = json.loads((data / TRUTH_FILE).read_text())["splits"]["tokyo247"]
    assert len(s["db"]) % 12 == 0
    for start in range(0, len(s["db"]), 12):
        block = s["db"][start:start + 12]
        panos = {fn.rsplit("_", 1)[0] for fn in block}
        assert len(panos) == 1
        assert [fn.rsplit("_", 1)[1] for fn in block] == [f"{k:02d}.jpg" for k in range(12)]
        assert len(set(s["db_utm"][start:start + 12])) == 1
        assert len(set(truth["db_panorama"][start:start + 12])) == 1
    # several panoramas share a directory, so the parent folder is not the panorama
    dirs = defaultdict(set)
    for fn in s["db"]:
        dirs[fn.split("/")[0]].add(fn.rsplit("_", 1)[0])
    assert max(len(v) for v in dirs.values()) > 1
    assert len({fn.rsplit("_", 1)[0] for fn in s["db"]}) == truth["num_panoramas"] == len(s["db"]) // 12


def test_tokyo247_queries_are_day_sunset_night_triples_of_phone_photos(data):
    s = load(data, "tokyo247")
    scenes = json.loads((data / TRUTH_FILE).read_text())["splits"]["tokyo247"]["query_scene"]
    assert len(s["q"]) % 3 == 0
    sizes, brightness = set(), defaultdict(list)
    for start in range(0, len(s["q"]), 3):
        assert len(set(s["q_utm"][start:start + 3])) == 1  # one spot, the exact same UTM
        assert [scenes[i]["kind"] for i in range(start, start + 3)] == ["day", "sunset", "night"]
        for i in range(start, start + 3):
            with Image.open(data / MATS["tokyo247"][2] / s["q"][i]) as im:
                sizes.add(im.size)
                brightness[scenes[i]["kind"]].append(np.asarray(im, dtype=np.float64).mean())
    assert any(h > w for w, h in sizes)  # portrait phone photos
    assert np.mean(brightness["night"]) < 0.6 * np.mean(brightness["day"])


def test_tokyo_tm_places_and_time_stamps(data):
    for split in ("tokyoTM_train", "tokyoTM_val"):
        s = load(data, split)
        rec = s["raw"]
        assert rec["dbTimeStamp"].size == len(s["db"]) and rec["qTimeStamp"].size == len(s["q"])
        utm_of_place = defaultdict(set)
        stamps_of_place = defaultdict(set)
        for names, utms, stamps in ((s["db"], s["db_utm"], rec["dbTimeStamp"].ravel()),
                                    (s["q"], s["q_utm"], rec["qTimeStamp"].ravel())):
            for fn, p, ts in zip(names, utms, stamps, strict=True):
                parts = fn.split("/")
                place, stamp = parts[1], parts[2]  # the reference's place and time-stamp keys
                assert float(stamp) == ts
                utm_of_place[place].add(p)
                stamps_of_place[place].add(stamp)
        assert all(len(u) == 1 for u in utm_of_place.values()), split
        assert any(len(t) > 1 for t in stamps_of_place.values()), split
        assert any(len(t) == 1 for t in stamps_of_place.values()) or split == "tokyoTM_val"


def test_truth_file_matches_the_mat_files(data):
    truth = json.loads((data / TRUTH_FILE).read_text())
    assert truth["preset"] == "tiny" and truth["seed"] == 0
    for split in MATS:
        s, rec = load(data, split), truth["splits"][split]
        assert (rec["num_db"], rec["num_queries"]) == (len(s["db"]), len(s["q"]))
        if split.startswith("pitts"):
            assert rec["db_place"] == [fn.split("_")[0] for fn in s["db"]]
            assert rec["query_place"] == [fn.split("_")[0] for fn in s["q"]]
            for p, scene in zip(s["q_utm"], rec["query_scene"], strict=True):
                d = min(math.hypot(p[0] - x, p[1] - y) for x, y in s["db_utm"])
                assert abs(d - scene["nearest_db_dist"]) < 1e-2


def _rebuild_sample(seed: int, data: Path, tmp: Path) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Recompute the .mat files and re-render a sample of images for ``seed`` (without a full run)."""
    preset = get_preset("tiny")
    outputs = [synth_layouts.pittsburgh(seed, preset), synth_layouts.tokyo(seed, preset)]
    mats = {rel: synth_layouts.mat_bytes(fields) for o in outputs for rel, fields in o.mats.items()}
    jobs = [job for o in outputs for job in o.jobs]
    images = {}
    for job in jobs[:: max(1, len(jobs) // 12)]:
        img = synth_renderer.render(job.street, job.camera, job.condition)
        buf = io.BytesIO()
        pil = Image.fromarray((img * 255 + 0.5).astype(np.uint8), "RGB")
        if job.fmt == "png":
            pil.save(buf, format="PNG", compress_level=6)
        else:
            pil.save(buf, format="JPEG", quality=preset.jpeg_quality, subsampling=2)
        images[job.rel] = buf.getvalue()
    return mats, images


def test_same_seed_gives_identical_bytes_and_another_seed_differs(data, tmp_path):
    mats, images = _rebuild_sample(0, data, tmp_path)
    assert set(mats) == {MATS[s][0] for s in MATS}
    for rel, raw in mats.items():
        assert (data / rel).read_bytes() == raw, rel
    assert len(images) >= 10
    for rel, raw in images.items():
        assert (data / rel).read_bytes() == raw, rel
    other_mats, _ = _rebuild_sample(1, data, tmp_path)
    assert all(other_mats[rel] != mats[rel] for rel in mats)


def test_two_rendering_processes_write_the_same_files_byte_for_byte(data, tmp_path):
    out = tmp_path / "two"
    assert cli.main(["synth", "--out", str(out), "--workers", "2"]) == 0
    files = sorted(p.relative_to(data) for p in data.rglob("*") if p.is_file())
    assert len(files) > 100
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == files
    assert all((out / rel).read_bytes() == (data / rel).read_bytes() for rel in files)


def _rendering(tmp_path: Path, stderr=subprocess.PIPE) -> subprocess.Popen:
    """`vpr synth --preset demo --workers 2` (a minute of work), once its workers have written images."""
    proc = subprocess.Popen([*VPR, "synth", "--preset", "demo", "--workers", "2", "--out", "d"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=stderr, text=True)
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob(".d.synth-*/**/*.jpg"))) < 8:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    return proc


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_a_signal_to_the_parent_stops_the_rendering_processes_and_leaves_nothing(tmp_path):
    proc = _rendering(tmp_path)
    workers = descendants(proc.pid)[1:]   # its rendering processes (and multiprocessing's tracker)
    assert len(workers) >= 2
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "vpr synth: terminated by signal 15" and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
    deadline = time.monotonic() + 10
    while any(map(alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(alive, workers))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_rendering_processes_end_when_their_parent_is_killed(tmp_path):
    proc = _rendering(tmp_path, stderr=subprocess.DEVNULL)   # no pipe that a stray worker would hold open
    workers = descendants(proc.pid)[1:]   # its rendering processes (and multiprocessing's tracker)
    assert len(workers) >= 2
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10   # each worker looks for its parent twice a second
    while any(map(alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    stray = [p for p in workers if alive(p)]
    for pid in stray:
        os.kill(pid, signal.SIGKILL)
    assert not stray


def test_refuses_a_non_empty_directory_and_force_replaces_only_its_own_entries(data, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli.main(["synth", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]  # no temporary tree left behind

    assert cli.main(["synth", "--out", str(out), "--seed", "1", "--force"]) == 0
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "pitts", "synth_truth.json", "tokyo"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]
    rel = MATS["pitts30k_val"][0]
    assert (out / rel).read_bytes() != (data / rel).read_bytes()  # another seed, another data set
    truth = json.loads((out / TRUTH_FILE).read_text())
    assert truth["seed"] == 1


def test_a_failure_midway_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_render = synth_renderer.render

    def failing_render(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("disk on fire")
        return real_render(*args, **kwargs)

    monkeypatch.setattr("vpr.synth.render", failing_render)
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate("tiny", tmp_path / "out", seed=0)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_clean_errors(tmp_path):
    with pytest.raises(VprError, match="unknown preset 'huge'"):
        generate("huge", tmp_path / "x")
    with pytest.raises(VprError, match="non-negative"):
        generate("tiny", tmp_path / "x", seed=-3)
    with pytest.raises(VprError, match="--workers must be a positive integer"):
        generate("tiny", tmp_path / "x", workers=0)
    (tmp_path / "file").write_text("")
    with pytest.raises(VprError, match="not a directory"):
        generate("tiny", tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
