"""Time and peak memory of vpr's top-K retrieval against the reference's dense distances + full argsort.

Random L2-normalised float32 descriptors the size of Pitts250k-test (83,952 database images, 8,280 queries,
4096-d after PCA) by default; ``--scale`` shrinks both counts. Each method runs in its own subprocess so
their peak resident memory does not pollute each other (Linux: VmHWM, reset after generating the data,
minus the RSS of the data; elsewhere ``getrusage`` max RSS); the time covers search + Recall@{1,5,10,20},
not data generation. Usage:

    python benchmarks/evaluate_speed.py [--scale 0.1] [--dim 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

N_DB, N_QUERY = 83_952, 8_280
NS = (1, 5, 10, 20)


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) so data-generation temporaries do not count."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _data(n_db: int, n_q: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    db = rng.standard_normal((n_db, dim), dtype=np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    target = rng.integers(0, n_db, size=n_q)
    # each query is a noisy copy of one database image, which is its (only) positive
    q = rng.standard_normal((n_q, dim), dtype=np.float32)
    q *= np.float32(0.25)  # enough noise for a recall below 1
    q += db[target]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return db, q, [np.array([t]) for t in target]


def _child(method: str, n_db: int, n_q: int, dim: int, seed: int) -> dict:
    import faiss  # noqa: F401  (loaded before the baseline in both children: its libraries are not work memory)

    from vpr.evaluate import recall_at, search

    db, q, positives = _data(n_db, n_q, dim, seed)
    rss_data = _status_mb("VmRSS") if _reset_peak_rss() else _peak_rss_mb()
    t0 = time.perf_counter()
    if method == "faiss":
        _, idx = search(db, q, max(NS))
    else:  # the reference: dense float32 ||q||^2 + ||x||^2 - 2 q x^T, then a full argsort of every row
        d = q @ db.T
        d *= -2.0
        d += (q * q).sum(1)[:, None]
        d += (db * db).sum(1)[None, :]
        idx = np.argsort(d, axis=1)[:, :max(NS)]
    recall = recall_at(idx, positives, NS)
    seconds = time.perf_counter() - t0
    return {"method": method, "seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "data_rss_mb": rss_data,
            "recall": recall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the Pitts250k-test sizes")
    parser.add_argument("--dim", type=int, default=4096, help="descriptor dimension")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random data")
    parser.add_argument("--child", choices=("faiss", "dense"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    n_db, n_q = max(1, round(N_DB * args.scale)), max(1, round(N_QUERY * args.scale))
    if args.child:
        print(json.dumps(_child(args.child, n_db, n_q, args.dim, args.seed)))
        return

    print(f"{n_db} database x {n_q} queries x {args.dim}-d float32, {os.cpu_count()} CPU(s)")
    results = {}
    for method in ("faiss", "dense"):
        cmd = [sys.executable, __file__, "--child", method, "--scale", str(args.scale),
               "--dim", str(args.dim), "--seed", str(args.seed)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[method] = r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{method:>5}: {r['seconds']:8.1f} s   peak RSS {r['peak_rss_mb']:8.0f} MB "
              f"(data alone {r['data_rss_mb']:.0f} MB, extra {r['peak_rss_mb'] - r['data_rss_mb']:.0f} MB)   "
              + "  ".join(f"R@{n}={v:.4f}" for n, v in r["recall"].items()))
    f, d = results["faiss"], results["dense"]
    extra_d, extra_f = d["peak_rss_mb"] - d["data_rss_mb"], f["peak_rss_mb"] - f["data_rss_mb"]
    print(f"dense / faiss: time x{d['seconds'] / f['seconds']:.2f}, "
          f"extra memory {extra_d:.0f} MB vs {extra_f:.0f} MB (x{extra_d / max(extra_f, 1):.1f})")
    if f["recall"] != d["recall"]:
        print("note: recalls differ (ties ordered differently)")


if __name__ == "__main__":
    main()
