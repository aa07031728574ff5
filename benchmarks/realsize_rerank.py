"""SFRS mining refresh and `vpr evaluate` (with and without --rerank) at the true data-set sizes.

Data of the real sizes with random unit descriptors and street-like geometry: panoramas every 10-20 m
along a grid of streets (Pitts: 24 database images per panorama, Tokyo 24/7: 12), query places near them
(Pitts: 24 query images per place; Tokyo: single queries), the 10 m positives and 25 m non-negatives from
those positions. A descriptor is its panorama's random code plus independent noise, L2-normalised, so
images of one place are nearer to each other than to the rest, as in real features.

Cases (one per process; run them one at a time):

* ``mining-pitts30k`` / ``mining-pitts250k``: one refresh of SFRS generation >= 1 for one chunk of
  ``--anchors`` training queries (cache size 1000): k-reciprocal distances of the anchors to their positives
  (neighbour lists, V, Jaccard pairs), then positives + hardest negatives (pool 1000) + SFRS positives.
  32,768-d descriptors held in float16. ``--dense`` instead measures today's path (three dense float32
  distance matrices + ``k_reciprocal_rerank`` over all pairs, then the per-anchor float64 mining rules).
  ``--rows-fraction f`` runs the neighbour-list pass over only that fraction of the rows (all columns) and
  extrapolates its time; the other rows' lists are filled from the geometry (the nearest positions),
  so every later stage runs at full size.
* ``eval-pitts250k`` / ``eval-tokyo``: ``vpr.evaluate.evaluate`` (what ``vpr evaluate`` runs between
  reading and writing its files) on 4,096-d float32 descriptors, plain (``--rerank`` off) and re-ranked
  (k1=25, k2=1, λ=0); Tokyo with the spatial NMS.

Per stage it prints wall time, the peak resident memory during the stage (sampled every 20 ms from
/proc/self/statm) and, with a GPU, the peak GPU memory; one JSON line per case at the end. Usage:

    python benchmarks/realsize_rerank.py mining-pitts30k [--dense] [--anchors 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np
import torch

SIZES = {  # name -> (database, queries, db images per panorama, query images per place)
    "pitts30k-train": (10_000, 7_416, 24, 24),
    "pitts250k-train": (91_464, 7_824, 24, 24),
    "pitts250k-test": (83_952, 8_280, 24, 24),
    "tokyo247": (75_984, 315, 12, 1),
}
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class Stages:
    """Wall time and peak RSS (sampling thread) per stage; GPU peak memory when there is a GPU."""

    def __init__(self):
        self.rows: list[dict] = []
        self.peak = 0
        self._stop = False
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while not self._stop:
            self.peak = max(self.peak, rss())
            time.sleep(0.02)

    @contextmanager
    def stage(self, name: str):
        self.peak = rss()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.time()
        yield
        row = {"stage": name, "wall_s": round(time.time() - t0, 2),
               "peak_rss_gb": round(self.peak / 2**30, 3), "rss_after_gb": round(rss() / 2**30, 3)}
        if torch.cuda.is_available():
            row["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        self.rows.append(row)
        print(json.dumps(row), flush=True)


def geometry(n_db: int, n_q: int, per_pano: int, per_place: int, rng: np.random.Generator):
    """Positions (metres) of database images (per panorama) and queries along a grid of streets."""
    n_pano = -(-n_db // per_pano)
    spacing = rng.uniform(10, 20, n_pano)
    along = np.cumsum(spacing)
    street_len = 1000.0
    street = (along // street_len).astype(int)
    pos = np.stack([along % street_len, street * 80.0], 1)   # parallel streets 80 m apart
    pano_of_db = np.repeat(np.arange(n_pano), per_pano)[:n_db]
    n_places = -(-n_q // per_place)
    near = rng.integers(0, n_pano, n_places)
    offset = rng.normal(size=(n_places, 2)) * np.array([6.0, 2.0])   # mostly along the street
    q_place_pos = pos[near] + offset
    place_of_q = np.repeat(np.arange(n_places), per_place)[:n_q]
    return pos, pano_of_db, q_place_pos, place_of_q


def ground_truth(pos, pano_of_db, q_pos, radius):
    from scipy.spatial import cKDTree

    tree = cKDTree(pos)
    per_pano = [np.flatnonzero(pano_of_db == p) for p in range(len(pos))]   # fine for ~6k panoramas
    out = []
    for hits in tree.query_ball_point(q_pos, radius):
        out.append(np.sort(np.concatenate([per_pano[h] for h in hits])).astype(np.int64) if hits
                   else np.zeros(0, np.int64))
    return out


def descriptors(codes_of, n: int, dim: int, dtype, rng, noise: float = 1.0, block: int = 2048):
    """n unit descriptors: code (per panorama/place, shared) + independent noise, normalised."""
    out = np.empty((n, dim), dtype=dtype)
    for a in range(0, n, block):
        b = min(n, a + block)
        # uniform noise of unit variance: in this dimension as good as Gaussian, and several times cheaper
        x = rng.random((b - a, dim), dtype=np.float32)
        x -= 0.5
        x *= np.float32(noise * 12 ** 0.5)
        x += codes_of(a, b)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[a:b] = x
    return out


CODE_WEIGHT = 1.5
SCALE = {"size": 1.0, "dim": None}  # --smoke shrinks both (a quick run of the script itself)


def make_data(name: str, dim: int, dtype, seed: int = 0):
    n_db, n_q, per_pano, per_place = SIZES[name]
    n_db, n_q = int(n_db * SCALE["size"]), max(per_place, int(n_q * SCALE["size"]))
    dim = SCALE["dim"] or dim
    rng = np.random.default_rng(seed)
    pos, pano_of_db, q_place_pos, place_of_q = geometry(n_db, n_q, per_pano, per_place, rng)
    n_pano = len(pos)
    # Neighbouring panoramas share part of their code (hard negatives look alike); the code's weight
    # shrinks like dim^-1/4 so that noise and code stay comparable in high dimension (recall < 100 %).
    g = rng.standard_normal((n_pano, dim), dtype=np.float32)
    pano_codes = g + 0.6 * np.roll(g, 1, 0) + 0.6 * np.roll(g, -1, 0)
    pano_codes *= np.float32(CODE_WEIGHT * dim ** -0.25)
    # Query places take the code of the nearest panorama (same scene), with their own noise.
    from scipy.spatial import cKDTree

    q_pano = cKDTree(pos).query(q_place_pos)[1]
    db = descriptors(lambda a, b: pano_codes[pano_of_db[a:b]], n_db, dim, dtype, rng)
    q = descriptors(lambda a, b: pano_codes[q_pano[place_of_q[a:b]]], n_q, dim, dtype, rng)
    q_pos = q_place_pos[place_of_q]
    return dict(db=db, q=q, pos=pos, pano_of_db=pano_of_db, q_pos=q_pos,
                positives=ground_truth(pos, pano_of_db, q_pos, 10.0),
                nonnegatives=ground_truth(pos, pano_of_db, q_pos, 25.0))


def geometric_lists(data, needed: int, extra: int):
    """Stand-in neighbour lists for rows the timed pass skipped: the nearest images by position."""
    from scipy.spatial import cKDTree

    all_pos = np.concatenate([data["q_pos"], data["pos"][data["pano_of_db"]]])
    jitter = np.random.default_rng(1).normal(scale=0.5, size=all_pos.shape)
    d, i = cKDTree(all_pos + jitter).query(all_pos + jitter, k=needed + extra)
    return i, 2.0 * (d / (d.max() + 1e-9))


def timed_lists(data, needed: int, args, st: Stages):
    """The neighbour-list pass, whole or over ``--rows-fraction`` of the rows (then extrapolated, and the
    other rows filled from the geometry)."""
    from vpr.rerank import neighbour_lists_from_descriptors

    q, db = data["q"], data["db"]
    n = len(q) + len(db)
    stop = n if args.rows_fraction >= 1 else min(n, max(1024, int(n * args.rows_fraction)))
    with st.stage(f"neighbour lists: rows 0..{stop} of {n} against all {n}"):
        lists = neighbour_lists_from_descriptors(q, db, needed, device=args.device, only_rows=range(stop))
    extrapolated = None
    if stop < n:
        # The pass computes the blocks on and above the diagonal: row block [a, a+B) costs (n - a)·B pairs.
        block = max(256, min(4096, (1 << 26) // (4 * q.shape[1])))
        done = sum((n - a) * min(block, n - a) for a in range(0, stop, block))
        total = sum((n - a) * min(block, n - a) for a in range(0, n, block))
        extrapolated = round(st.rows[-1]["wall_s"] * total / done, 1)
        stop = min(n, -(-stop // block) * block)
        gi, gd = geometric_lists(data, needed, lists.idx.shape[1] - needed)
        lists.idx[stop:], lists.dist[stop:] = gi[stop:], gd[stop:]
        lists.row_max[stop:] = 4.0
        print(f"neighbour-list pass extrapolated to all rows: {extrapolated:.0f} s", flush=True)
    return lists, extrapolated


def mining_case(name: str, args, st: Stages) -> dict:
    from vpr.evaluate import squared_distances
    from vpr.rerank import KReciprocal, k_reciprocal_rerank
    from vpr.train.mining import Miner, difficult_positives, hardest_negatives, nearest_positive

    dtype = np.float32 if args.dense else np.float16
    with st.stage(f"make data ({'float32' if args.dense else 'float16'} descriptors, not part of a refresh)"):
        data = make_data(name, 32768, dtype)
    q, db, positives, nonneg = data["q"], data["db"], data["positives"], data["nonnegatives"]
    anchors = [int(a) for a in np.random.default_rng(5).permutation(len(q))[:args.anchors]
               if len(positives[a])]
    mean_len = lambda lists: np.mean([len(p) for p in lists])  # noqa: E731
    print(f"{name}: {len(db)} db, {len(q)} queries, {len(anchors)} anchors; mean positives "
          f"{mean_len(positives):.1f}, non-negatives {mean_len(nonneg):.1f}", flush=True)
    k1, k2, lam = 20, 1, 0.1
    if args.dense:
        sub = anchors[:args.dense_mining_anchors]
        with st.stage("dense distance matrices (q-db, q-q, db-db, float32)"):
            d_qg, d_qq, d_gg = squared_distances(q, db), squared_distances(q, q), squared_distances(db, db)
        with st.stage("dense k_reciprocal_rerank (all Q x G)"):
            jac = k_reciprocal_rerank(d_qg, d_qq, d_gg, k1, k2, lam, square_input=True)
        del d_qg, d_qq, d_gg
        rng = np.random.default_rng(0)
        with st.stage(f"per-anchor float64 mining, {len(sub)} anchors"):
            for a in sub:
                pos = positives[a]
                nearest_positive(q[a], db, pos)
                hardest_negatives(q[a], db, nonneg[a], np.zeros(0, np.int64), rng, 1000, 10)
                e = ((db[pos].astype(np.float64) - q[a].astype(np.float64)) ** 2).sum(1)
                difficult_positives(pos, e, jac[a][pos], 20, 10)
        return {"mining_anchors_timed": len(sub)}
    lists, extrapolated = timed_lists(data, k1 + 1, args, st)
    with st.stage("k-reciprocal sets, expansion, V (all items)"):
        kr = KReciprocal(lists, k1, k2, lam)
    with st.stage("Jaccard + lambda*P for the anchors' positives"):
        pq = np.concatenate([np.full(len(positives[a]), a) for a in anchors])
        pg = np.concatenate([positives[a] for a in anchors])
        d = kr.pair_distances(pq, pg)
        ends = np.cumsum([len(positives[a]) for a in anchors])
        jac = {a: d[e - len(positives[a]):e] for a, e in zip(anchors, ends, strict=True)}
    del kr, lists
    miner = Miner(positives, nonneg, neg_num=10, neg_pool=1000, pos_num=10, pos_pool=20, device=args.device)
    with st.stage(f"mining: positives, hardest negatives, SFRS positives ({len(anchors)} anchors)"):
        miner.mine(anchors, q, db, np.random.default_rng(0), jac, sfrs=True)
    return {"neighbour_pass_extrapolated_s": extrapolated, "items": len(q) + len(db)}


def eval_case(name: str, args, st: Stages) -> dict:
    from vpr.evaluate import evaluate

    with st.stage("make data (4096-d float32, not part of the evaluation)"):
        data = make_data(name, 4096, np.float32)
    place = data["pano_of_db"] if name == "tokyo247" else None
    ns = [1, 5, 10, 20]
    out = {}
    with st.stage("evaluate, plain"):
        r = evaluate(data["db"], data["q"], data["positives"], ns, place=place)
    out["recall_plain"] = r.recall
    if args.rows_fraction >= 1:
        with st.stage("evaluate --rerank (k1=25, k2=1, lambda=0)"):
            r = evaluate(data["db"], data["q"], data["positives"], ns, place=place,
                         rerank=dict(k1=25, k2=1, lambda_value=0.0))
        out["recall_rerank"] = r.recall
        return out
    # The same steps as rerank_top_k, the neighbour-list pass timed over a part of the rows.
    from vpr.evaluate import NMS_FACTOR
    from vpr.rerank import KReciprocal

    lists, out["neighbour_pass_extrapolated_s"] = timed_lists(data, 26, args, st)
    with st.stage("k-reciprocal sets, expansion, V (all items)"):
        kr = KReciprocal(lists, 25, 1, 0.0)
    with st.stage("re-ranked top-k over the whole database (Jaccard overlaps, all queries)"):
        kr.top_k(max(ns) * (NMS_FACTOR if place is not None else 1), None, rows_per_block=128)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=["mining-pitts30k", "mining-pitts250k", "eval-pitts250k",
                                         "eval-tokyo"])
    parser.add_argument("--dense", action="store_true", help="mining: today's dense path instead")
    parser.add_argument("--anchors", type=int, default=1000, help="mining: anchors of the chunk")
    parser.add_argument("--dense-mining-anchors", type=int, default=100,
                        help="dense path: anchors timed with the per-anchor rules (time scales linearly)")
    parser.add_argument("--rows-fraction", type=float, default=1.0,
                        help="fraction of the neighbour-list pass to run (time extrapolated; the other rows' "
                             "lists come from the geometry)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    parser.add_argument("--smoke", action="store_true", help="1/100 of the sizes, 64-d: checks the script")
    args = parser.parse_args()
    if args.smoke:
        SCALE.update(size=0.05, dim=64)
    st = Stages()
    name = {"mining-pitts30k": "pitts30k-train", "mining-pitts250k": "pitts250k-train",
            "eval-pitts250k": "pitts250k-test", "eval-tokyo": "tokyo247"}[args.case]
    t0 = time.time()
    extra = mining_case(name, args, st) if args.case.startswith("mining") else eval_case(name, args, st)
    print(json.dumps({"case": args.case, "dense": args.dense, "torch_threads": torch.get_num_threads(),
                      "total_s": round(time.time() - t0, 1),
                      "ru_maxrss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
                      "stages": st.rows, **extra}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
