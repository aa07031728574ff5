"""`vpr pairs`: the pair list of a rankings file or a matches CSV, checked against the files read here."""

from __future__ import annotations

import h5py
import numpy as np
from vprtest import run_vpr, without_progress

from vpr.evaluation_files import write_rankings


def _index_names(index) -> tuple[list[str], list[str]]:
    with h5py.File(index) as f:
        return list(f["query/path"].asstr()[()]), list(f["db/path"].asstr()[()])


def test_pairs_of_a_rankings_file(tiny_data, tmp_path):
    queries, db = _index_names(tiny_data["test"])
    rng = np.random.default_rng(0)
    topk = np.stack([rng.permutation(len(db))[:6] for _ in queries])
    topk[1, 4:] = -1   # padding (what NMS leaves): skipped
    rankings = tmp_path / "test_rankings.h5"
    write_rankings(rankings, topk, np.zeros(topk.shape), np.full(len(queries), -1), {1: 0.0},
                   index=str(tiny_data["test"]))
    out = tmp_path / "pairs.txt"
    run_vpr("pairs", "--rankings", rankings, "--top-k", 5, "--out", out)
    lines = out.read_text().splitlines()
    with h5py.File(rankings) as f:   # the rankings as stored, read independently
        stored = f["topk"][()]
    expected = [f"{queries[q]} {db[j]}" for q in range(len(queries)) for j in stored[q, :5] if j >= 0]
    assert lines == expected
    assert len(lines) == 5 * len(queries) - 1   # k per query, but the padded query has 4
    assert all(len(line.split(" ")) == 2 and line.split(" ")[1] in db for line in lines)

    bad = run_vpr("pairs", "--rankings", rankings, "--top-k", 7, "--out", tmp_path / "p7.txt", check=False)
    assert bad.returncode == 2 and not (tmp_path / "p7.txt").exists()
    assert without_progress(bad.stderr).strip().endswith("holds the top 6 per query, fewer than --top-k 7")


def test_pairs_of_a_matches_csv(tmp_path):
    matches = tmp_path / "matches.csv"   # the columns `vpr retrieve` writes, ranks out of order
    matches.write_text("query,rank,database,distance\n"
                       "q/a.jpg,2,db/y.jpg,0.5\nq/a.jpg,1,db/x.jpg,0.4\nq/a.jpg,3,db/z.jpg,0.9\n"
                       "q/b.jpg,1,db/z.jpg,0.1\nq/b.jpg,2,db/x.jpg,0.2\nq/b.jpg,3,db/y.jpg,0.3\n")
    out = tmp_path / "pairs.txt"
    run_vpr("pairs", "--matches", matches, "--top-k", 2, "--out", out)
    assert out.read_text() == "q/a.jpg db/x.jpg\nq/a.jpg db/y.jpg\nq/b.jpg db/z.jpg\nq/b.jpg db/x.jpg\n"
