"""Retrieval, spatial NMS, Recall@N and `vpr evaluate`, checked against hand-worked rankings."""

from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest
from scipy.stats import binomtest

from vpr.cli import main
from vpr.data.index import Index, SplitRecords, build_index
from vpr.evaluate import (
    first_positive_rank,
    recall_at,
    search,
    spatial_nms,
    squared_distances,
    tied_rankings,
)
from vpr.extract import write_features


def test_search_matches_brute_force_loop():
    rng = np.random.default_rng(0)
    db = rng.standard_normal((60, 8)).astype(np.float32)
    q = rng.standard_normal((9, 8)).astype(np.float32)
    dist, idx = search(db, q, 7)
    assert dist.shape == idx.shape == (9, 7) and idx.dtype == np.int64 and dist.dtype == np.float32
    for i in range(len(q)):
        d = [float(sum((float(q[i, c]) - float(db[j, c])) ** 2 for c in range(8))) for j in range(len(db))]
        order = sorted(range(len(db)), key=lambda j: d[j])[:7]
        assert idx[i].tolist() == order
        np.testing.assert_allclose(dist[i], [d[j] for j in order], rtol=1e-4, atol=1e-4)
    # k above the database size ranks the whole database
    dist, idx = search(db[:5], q, 20)
    assert idx.shape == (9, 5) and sorted(idx[0].tolist()) == [0, 1, 2, 3, 4]


def test_squared_distances_match_difference_form():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, 4)), rng.standard_normal((7, 4))
    expected = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(squared_distances(a, b), expected, rtol=1e-5, atol=1e-5)
    assert (squared_distances(a, a) >= 0).all()


def test_recall_by_hand():
    idx = np.array([[3, 1, 2, 7],
                    [0, 4, 5, 6],
                    [2, 2, 1, 0],
                    [9, 8, 5, 4],
                    [-1, -1, -1, -1]])
    positives = [np.array([1, 5]), np.array([9]), np.array([2]), np.array([4]), np.array([-1, 0])]
    # first positive: q0 at 1, q1 none, q2 at 0, q3 at 3, q4 none (-1 padding never counts)
    assert first_positive_rank(idx, positives).tolist() == [1, -1, 0, 3, -1]
    r = recall_at(idx, positives, [1, 2, 3, 4])
    assert r == {1: pytest.approx(1 / 5), 2: pytest.approx(2 / 5), 3: pytest.approx(2 / 5),
                 4: pytest.approx(3 / 5)}


def test_spatial_nms_by_hand():
    # db index -> place: 0:A 1:C 2:B 3:B 5:A 6:A 7:A 8:D
    place = np.array([10, 30, 20, 20, 99, 10, 10, 10, 40])
    idx = np.array([[5, 6, 2, 7, 1, 3],
                    [8, -1, 0, 5, -1, -1],
                    [2, 3, 2, 3, 1, 0]])
    dist = np.arange(18, dtype=np.float32).reshape(3, 6)  # distance = 6 * row + column
    d2, i2 = spatial_nms(dist, idx, place, 2)
    assert i2.tolist() == [[5, 2], [8, 0], [2, 1]]
    assert d2.tolist() == [[0, 2], [6, 8], [12, 16]]
    d4, i4 = spatial_nms(dist, idx, place, 4)
    assert i4.tolist() == [[5, 2, 1, -1], [8, 0, -1, -1], [2, 1, 0, -1]]
    inf = float("inf")
    assert d4.tolist() == [[0, 2, 4, inf], [6, 8, inf, inf], [12, 16, 17, inf]]


def test_spatial_nms_matches_python_loop():
    rng = np.random.default_rng(2)
    place = rng.integers(0, 7, size=40)
    idx = rng.integers(0, 40, size=(25, 30))
    idx[rng.random(idx.shape) < 0.1] = -1
    _, got = spatial_nms(np.zeros(idx.shape, np.float32), idx, place, 5)
    for row, out in zip(idx, got, strict=True):
        seen, kept = set(), []
        for j in row:
            if j >= 0 and place[j] not in seen:
                seen.add(place[j])
                kept.append(j)
        kept = kept[:5] + [-1] * (5 - len(kept[:5]))
        assert out.tolist() == kept


# ---------------------------------------------------------------------------------------------------------
# End to end: 6 database images in 3 places (pairs at x = 0, 200, 500), 3 queries; 6-d features whose
# dot products with the query are the given weights, so the ranking is known by hand (descending weight).

DB_X = [0, 0, 200, 200, 500, 500]
DB_PLACE = [0, 0, 1, 1, 2, 2]
QUERY_X = [0, 500, 200]
QUERY_WEIGHTS = [
    [5, 6, 4, 3, 2, 1],  # ranking 1 0 2 3 4 5; positives {0, 1}: first positive at 0
    [5, 6, 1, 2, 4, 3],  # ranking 1 0 4 5 3 2; positives {4, 5}: at 2; after NMS (1 4 3): at 1
    [6, 5, 4, 3, 2, 1],  # ranking 0 1 2 3 4 5; positives {2, 3}: at 2; after NMS (0 2 4): at 1
]


def _write_case(tmp_path, fmt="csv", n_db_rows=6):
    records = SplitRecords(
        split="test", db_path=[f"db/{i}.jpg" for i in range(6)],
        db_utm=np.array([[x, 0.0] for x in DB_X]), db_place=np.array(DB_PLACE),
        query_path=[f"q/{i}.jpg" for i in range(3)], query_utm=np.array([[x, 3.0] for x in QUERY_X]),
        query_place=np.array([100, 101, 102]))
    index = tmp_path / "index.h5"
    build_index(records, index, root=tmp_path, fmt=fmt, source="case.csv", source_sha256="0")
    db = np.eye(6, dtype=np.float32)[:n_db_rows]
    q = np.array([np.array(w, dtype=np.float32) / np.linalg.norm(w) for w in QUERY_WEIGHTS])
    feats = tmp_path / "feat.h5"
    write_features(feats, db, q, {"index_fingerprint": Index(index).fingerprint})
    return index, feats


def wilson(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


def _read_csv(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {int(r["n"]): float(r["recall"]) for r in rows}


def test_evaluate_cli_by_hand(tmp_path, capsys):
    index, feats = _write_case(tmp_path)
    out = tmp_path / "res" / "recall.csv"
    rc = main(["evaluate", "--index", str(index), "--features", str(feats), "--out", str(out),
               "--recall-at", "1", "2", "3", "5"])
    assert rc == 0, capsys.readouterr().err
    assert out.read_text().splitlines()[0] == "n,recall,ci_low,ci_high,queries"
    # first positives at 0, 2, 2
    assert _read_csv(out) == {1: pytest.approx(1 / 3), 2: pytest.approx(1 / 3), 3: pytest.approx(1.0),
                              5: pytest.approx(1.0)}
    with open(out) as f:
        rows = list(csv.DictReader(f))
    for row, hits in zip(rows, [1, 1, 3, 3], strict=True):   # the 95 % Wilson interval of hits of 3 queries
        assert row["queries"] == "3"
        assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx(wilson(hits, 3), abs=1e-12)
    assert "Recall@1: 33.33% (95% CI 6.15-79.23%, 3 queries)" in capsys.readouterr().out
    with h5py.File(tmp_path / "res" / "recall_rankings.h5", "r") as f:
        assert f["topk"][()].tolist() == [[1, 0, 2, 3, 4], [1, 0, 4, 5, 3], [0, 1, 2, 3, 4]]
        assert f["first_positive"][()].tolist() == [0, 2, 2]
        # squared distance of unit vectors = 2 - 2 * dot product
        w0 = np.array(QUERY_WEIGHTS[0], dtype=float) / np.linalg.norm(QUERY_WEIGHTS[0])
        np.testing.assert_allclose(f["distances"][0], 2 - 2 * w0[[1, 0, 2, 3, 4]], atol=1e-5)
        assert f.attrs["recall_n"].tolist() == [1, 2, 3, 5]
        np.testing.assert_allclose(f.attrs["recall"], [1 / 3, 1 / 3, 1, 1])
        assert not f.attrs["nms"]
        assert f.attrs["kind"] == "vpr-rankings"


def test_evaluate_default_rankings_name(tmp_path, capsys):
    index, feats = _write_case(tmp_path)
    out = tmp_path / "tokyo_recall.csv"
    assert main(["evaluate", "--index", str(index), "--features", str(feats), "--out", str(out)]) == 0
    # X_recall.csv -> X_rankings.h5, as the workflow names them
    assert (tmp_path / "tokyo_rankings.h5").is_file() and not (tmp_path / "tokyo_recall_rankings.h5").exists()
    assert main(["evaluate", "--index", str(index), "--features", str(feats), "--out", str(out),
                 "--rankings", str(out)]) == 2
    assert "is also the output --out" in capsys.readouterr().err


def test_evaluate_nms_on_for_tokyo_by_default(tmp_path, capsys):
    index, feats = _write_case(tmp_path, fmt="tokyo247")
    out = tmp_path / "recall.csv"
    rankings = tmp_path / "elsewhere" / "r.h5"
    rc = main(["evaluate", "--index", str(index), "--features", str(feats), "--out", str(out),
               "--recall-at", "1", "2", "3", "--rankings", str(rankings)])
    assert rc == 0, capsys.readouterr().err
    # after NMS the first positives are at 0, 1, 1
    assert _read_csv(out) == {1: pytest.approx(1 / 3), 2: pytest.approx(1.0), 3: pytest.approx(1.0)}
    with h5py.File(rankings, "r") as f:
        assert f["topk"][()].tolist() == [[1, 2, 4], [1, 4, 3], [0, 2, 4]]
        assert f.attrs["nms"]
    # --no-nms gives the plain ranking again
    rc = main(["evaluate", "--index", str(index), "--features", str(feats), "--out", str(out),
               "--recall-at", "1", "2", "3", "--no-nms"])
    assert rc == 0
    assert _read_csv(out) == {1: pytest.approx(1 / 3), 2: pytest.approx(1 / 3), 3: pytest.approx(1.0)}


def test_evaluate_mismatched_counts(tmp_path, capsys):
    index, feats = _write_case(tmp_path, n_db_rows=5)
    out = tmp_path / "recall.csv"
    rc = main(["evaluate", "--index", str(index), "--features", str(feats), "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(feats) in err and str(index) in err and "5 database" in err and "6 database" in err
    assert not out.exists() and not (tmp_path / "recall_rankings.h5").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_evaluate_bad_inputs(tmp_path, capsys):
    index, feats = _write_case(tmp_path)
    out = tmp_path / "recall.csv"
    assert main(["evaluate", "--index", str(index), "--features", str(tmp_path / "none.h5"),
                 "--out", str(out)]) == 2
    assert "none.h5: features file not found" in capsys.readouterr().err
    with h5py.File(feats, "a") as f:
        f["query"][0, 0] = np.nan
    assert main(["evaluate", "--index", str(index), "--features", str(feats), "--out", str(out)]) == 2
    assert "NaN" in capsys.readouterr().err
    with h5py.File(feats, "a") as f:
        f["query"][0, 0] = 0.5
    assert main(["evaluate", "--index", str(index), "--features", str(feats), "--out", str(out),
                 "--rerank", "--rr-max-items", "8"]) == 2
    assert "above the limit of 8 images" in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_rerank_runs(tmp_path, capsys):
    index, feats = _write_case(tmp_path)
    out = tmp_path / "recall.csv"
    rc = main(["evaluate", "--index", str(index), "--features", str(feats), "--out", str(out),
               "--recall-at", "1", "6", "--rerank", "--rr-k1", "2"])
    assert rc == 0, capsys.readouterr().err
    # the whole database is ranked, so every query finds its positive within 6
    assert _read_csv(out)[6] == pytest.approx(1.0)
    with h5py.File(tmp_path / "recall_rankings.h5", "r") as f:
        assert f.attrs["rerank"] and f.attrs["rr_k1"] == 2
        assert sorted(f["topk"][0].tolist()) == [0, 1, 2, 3, 4, 5]


def test_evaluate_output_feeds_the_table_comparison(tmp_path, capsys):
    """`vpr table --compare-to` finds the rankings of `vpr evaluate` beside the recall CSVs, as the workflow
    names them, and pairs the queries."""
    index, feats = _write_case(tmp_path)
    worse = tmp_path / "worse.h5"
    with h5py.File(feats, "r") as f, h5py.File(worse, "w") as g:
        g["db"], g["query"] = f["db"][()], f["query"][()][[1, 2, 0]]   # queries shuffled: other rankings
        g.attrs.update(f.attrs)
    argv = []
    for method, features in (("base", worse), ("good", feats)):
        out = tmp_path / method / "pitts30k_recall.csv"
        assert main(["evaluate", "--index", str(index), "--features", str(features), "--out", str(out),
                     "--recall-at", "1", "3"]) == 0
        argv += ["--recall", method, "pitts30k", str(out)]
    md, table_csv = tmp_path / "t.md", tmp_path / "t.csv"
    assert main(["table", *argv, "--ns", "1", "3", "--compare-to", "base", "--out-md", str(md),
                 "--out-csv", str(table_csv)]) == 0
    with open(table_csv) as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    good = rows["good"]
    # good: first positives 0, 2, 2 (R@1 1/3, R@3 3/3). base ranks query q with the weights of query
    # (1, 2, 0)[q]: rankings 1 0 4 / 0 1 2 / 1 0 2 (top 3) against positives {0,1} / {4,5} / {2,3}
    # -> first positives 0, -1, 2 -> R@1 1/3, R@3 2/3. Discordant: none at R@1, one at R@3 (p = 1 both).
    assert (good["R@1"], good["R@3"], rows["base"]["R@1"], rows["base"]["R@3"]) == (
        "33.33", "100.00", "33.33", "66.67")
    assert (good["baseline"], good["p R@1"], good["vs baseline R@1"], good["p R@3"]) == (
        "base", "1", "no", "1")


def test_tied_rankings_by_hand():
    inf = np.inf
    d = np.array([[2.095238, 2.095238, 2.0952385, 2.095238],   # equal within rounding: tied
                  [2.095238, 2.095238, 2.0953, 2.1],           # differs by 1e-4 relative: not tied
                  [0.5, 0.5, inf, inf],                          # the finite entries tie (NMS padding)
                  [0.5, inf, inf, inf]], dtype=np.float32)      # a single result: nothing to tie
    assert tied_rankings(d).tolist() == [True, False, True, False]


def test_evaluate_refuses_rankings_that_are_ties_throughout(tmp_path, capsys):
    # Every query equidistant from the 6 (orthonormal) database descriptors: each ranking is a tie-break.
    index, feats = _write_case(tmp_path)
    with h5py.File(feats, "a") as f:
        f["query"][...] = np.full((3, 6), 1 / np.sqrt(6), dtype=np.float32)
    out = tmp_path / "recall.csv"
    assert main(["evaluate", "--index", str(index), "--features", str(feats), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "feat.h5: 3 of 3 queries have retrieved distances all equal" in err[0], err
    assert f"distance {2 - 2 / np.sqrt(6):.6f}" in err[0] and "no recall written" in err[0]
    assert not out.exists() and not (tmp_path / "recall_rankings.h5").exists()
