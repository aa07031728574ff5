"""`vpr table` and `vpr plot`: table cells from hand-written recall CSVs, PNG output, frame colours."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from scipy.stats import binomtest

from vpr.cli import main
from vpr.data.index import SplitRecords, build_index
from vpr.plots import select_queries, training_positions
from vpr.train.training_log import LOG_FIELDS, read_training_log, write_training_log

MIN_PNG = (400, 250)  # every figure is at least this large (width, height) in pixels


def write_recall(path: Path, rows: list[tuple[int, float]], queries: int = 100) -> Path:
    """A recall CSV of Recall@N = ``r`` (hits r·queries) for every (N, r) of ``rows``."""
    return write_recall_ci(path, {n: round(r * queries) for n, r in rows}, queries)


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.width >= MIN_PNG[0] and img.height >= MIN_PNG[1]
        return np.asarray(img.convert("RGB")).astype(int)


# ------------------------------------------------------------------------------------------------ table
def wilson_pct(k: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson interval in %, from scipy (independent of vpr.stats)."""
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return 100 * float(ci.low), 100 * float(ci.high)


def write_recall_ci(path: Path, hits: dict[int, int], queries: int) -> Path:
    """A recall CSV in the current format: hits[N] of ``queries`` queries, Wilson interval from scipy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["n,recall,ci_low,ci_high,queries"]
    for n, k in hits.items():
        low, high = wilson_pct(k, queries)
        lines.append(f"{n},{k / queries!r},{low / 100!r},{high / 100!r},{queries}")
    path.write_text("\n".join(lines) + "\n")
    return path


def cell(k: int, n: int) -> str:
    low, high = wilson_pct(k, n)
    return f"{100 * k / n:.1f} [{low:.1f}, {high:.1f}]"


def test_table_cells(tmp_path, capsys):
    a = write_recall_ci(tmp_path / "netvlad_p250.csv", {1: 160, 5: 181, 10: 190, 20: 194}, 200)
    b = write_recall_ci(tmp_path / "sfrs_p250.csv", {1: 180, 5: 192, 10: 195}, 200)
    c = write_recall_ci(tmp_path / "sfrs_tokyo.csv", {1: 40, 5: 45, 10: 46}, 50)
    md, out_csv = tmp_path / "res" / "table.md", tmp_path / "res" / "table.csv"
    rc = main(["table", "--recall", "netvlad", "pitts250k", str(a), "--recall", "sfrs", "pitts250k", str(b),
               "--recall", "sfrs", "tokyo", str(c), "--out-md", str(md), "--out-csv", str(out_csv)])
    assert rc == 0
    lines = md.read_text().splitlines()
    assert lines[0] == ("| Method | Pitts250k-test R@1 | Pitts250k-test R@5 | Pitts250k-test R@10 "
                        "| Tokyo 24/7 R@1 | Tokyo 24/7 R@5 | Tokyo 24/7 R@10 "
                        "| Pooled R@1 | Pooled R@5 | Pooled R@10 |")
    # 181/200 = 90.5 -> "90.5"; NetVLAD was not evaluated on Tokyo: "-", and so has no pooled cells
    assert lines[2] == (f"| NetVLAD | {cell(160, 200)} | {cell(181, 200)} | {cell(190, 200)} | - | - | - "
                        "| - | - | - |")
    # SFRS pooled over both test sets: (180 + 40) of 250 queries, ...
    assert lines[3] == (f"| SFRS | {cell(180, 200)} | {cell(192, 200)} | {cell(195, 200)} | {cell(40, 50)} "
                        f"| {cell(45, 50)} | {cell(46, 50)} | {cell(220, 250)} | {cell(237, 250)} "
                        f"| {cell(241, 250)} |")
    # ... and under it the MODEL_ZOO numbers 90.7/96.4/97.6 (Pitts250k, 8,280 queries) and 85.4/91.1/93.3
    # (Tokyo 24/7, 315 queries) with the interval of round(recall x queries) hits
    pub = [cell(round(r * q / 100), q) for r, q in ((90.7, 8280), (96.4, 8280), (97.6, 8280),
                                                   (85.4, 315), (91.1, 315), (93.3, 315))]
    pub = [f"{r:.1f}{p[4:]}" for r, p in zip((90.7, 96.4, 97.6, 85.4, 91.1, 93.3), pub, strict=True)]
    assert lines[4] == "| SFRS, published | " + " | ".join(pub) + " | - | - | - |"
    assert lines[5] == ""
    notes = "\n".join(lines[6:])
    assert "95 % Wilson score interval" in notes and "Pitts250k-test 200, Tokyo 24/7 50 queries" in notes
    assert "MODEL_ZOO.md" in notes and "8,280" in notes and "315" in notes and "not evaluated" in notes
    assert "Pooled: all queries of the 2 test sets" in notes and "independent" in notes
    assert "▲" not in md.read_text()   # no comparison asked for
    assert f"| SFRS | {cell(180, 200)}" in capsys.readouterr().out   # the table is printed too

    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["dataset"]) for r in rows] == [
        ("netvlad", "pitts250k"), ("sfrs", "pitts250k"), ("sfrs", "tokyo"), ("sfrs", "pooled")]
    low, high = wilson_pct(181, 200)
    assert (rows[0]["queries"], rows[0]["R@5"], rows[0]["R@5 ci_low"], rows[0]["R@5 ci_high"]) == (
        "200", "90.50", f"{low:.2f}", f"{high:.2f}")
    assert rows[0]["published R@1"] == "" and rows[0]["p R@1"] == "" and rows[0]["baseline"] == ""
    low, high = wilson_pct(round(0.854 * 315), 315)
    assert (rows[2]["published R@1"], rows[2]["published R@1 ci_low"], rows[2]["published R@1 ci_high"],
            rows[2]["published queries"]) == ("85.4", f"{low:.2f}", f"{high:.2f}", "315")
    assert (rows[3]["queries"], rows[3]["R@10"]) == ("250", "96.40")


def test_a_number_from_a_step_that_warned_carries_a_footnote(tmp_path):
    a = write_recall_ci(tmp_path / "netvlad_p250.csv", {1: 160, 5: 181, 10: 190}, 200)
    b = write_recall_ci(tmp_path / "sfrs_p250.csv", {1: 180, 5: 192, 10: 195}, 200)
    c = write_recall_ci(tmp_path / "sfrs_tokyo.csv", {1: 40, 5: 45, 10: 46}, 50)
    pca_log = tmp_path / "logs" / "pca" / "sfrs.log"
    pca_log.parent.mkdir(parents=True)
    pca_log.write_text("vpr fit-pca: INFO: fitting\nvpr fit-pca: WARNING: PCA: requested 256 components, but "
                       "22 descriptors support at most 21; using k = 21\nwrote pca.h5\n")
    clean = tmp_path / "logs" / "evaluate.log"
    clean.write_text("Recall@1: 80.00%\n")
    md, out_csv = tmp_path / "table.md", tmp_path / "table.csv"
    assert main(["table", "--recall", "netvlad", "pitts250k", str(a), "--recall", "sfrs", "pitts250k", str(b),
                 "--recall", "sfrs", "tokyo", str(c), "--step-log", "sfrs", "tokyo", str(pca_log),
                 "--step-log", "netvlad", "pitts250k", str(clean),
                 "--step-log", "netvlad", "pitts250k", str(tmp_path / "never-ran.log"),
                 "--out-md", str(md), "--out-csv", str(out_csv)]) == 0
    lines = md.read_text().splitlines()
    # NetVLAD's logs hold no warning; SFRS on Tokyo (and so SFRS pooled) came from a step that warned.
    assert lines[2].startswith(f"| NetVLAD | {cell(160, 200)} | ") and "†" not in lines[2]
    assert lines[3] == (f"| SFRS | {cell(180, 200)} | {cell(192, 200)} | {cell(195, 200)} | {cell(40, 50)} † "
                        f"| {cell(45, 50)} † | {cell(46, 50)} † | {cell(220, 250)} † | {cell(237, 250)} † "
                        f"| {cell(241, 250)} † |")
    notes = md.read_text().split("\n\n")
    [note] = [n for n in notes if n.startswith("†")]
    assert f"`{pca_log}`: vpr fit-pca: WARNING: PCA: requested 256 components" in note
    with open(out_csv, newline="") as f:
        assert [r["warnings"] for r in csv.DictReader(f)] == ["0", "0", "1", "1"]
    # A log named for a row that is not in the table is a mistake of the caller.
    assert main(["table", "--recall", "sfrs", "tokyo", str(c), "--step-log", "sfrs", "pitts250k", str(clean),
                 "--out-md", str(md), "--out-csv", str(out_csv)]) == 2

def write_evaluation(folder: Path, dataset: str, first_positive: list[int], ns=(1, 5), k: int = 5,
                     kind: str | None = "vpr-rankings") -> Path:
    """A rankings file (``first_positive`` as given, ``k`` columns) and the recall CSV that goes with it,
    named as the workflow names them; returns the recall CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    first = np.array(first_positive, dtype=np.int64)
    with h5py.File(folder / f"{dataset}_rankings.h5", "w") as f:
        f.create_dataset("topk", data=np.tile(np.arange(k, dtype=np.int64), (first.size, 1)))
        f.create_dataset("distances", data=np.zeros((first.size, k), np.float32))
        f.create_dataset("first_positive", data=first)
        if kind is not None:
            f.attrs["kind"] = kind
    hits = {n: int(((first >= 0) & (first < n)).sum()) for n in ns}
    return write_recall_ci(folder / f"{dataset}_recall.csv", hits, first.size)


MISS, TOP = [-1] * 5, [0] * 5


@pytest.fixture
def compared(tmp_path) -> list[str]:
    """Three methods on two test sets of 10 queries each (first-positive positions by hand):

    pitts30k: off-the-shelf hits 4 at R@1 (the tenth query at position 3) and 5 at R@5; sfrs hits all 10;
    netvlad none. tokyo: off-the-shelf hits 5 (at 1 and 5), sfrs 10, netvlad 0.
    """
    runs = {"off-the-shelf": {"pitts30k": MISS + [0] * 4 + [3], "tokyo": MISS + TOP},
            "sfrs": {"pitts30k": TOP + TOP, "tokyo": TOP + TOP},
            "netvlad": {"pitts30k": MISS + MISS, "tokyo": MISS + MISS}}
    argv = []
    for method, per in runs.items():
        for dataset, first in per.items():
            argv += ["--recall", method, dataset, str(write_evaluation(tmp_path / method, dataset, first))]
    return argv


def test_table_compare_to_baseline(tmp_path, compared):
    md, out_csv = tmp_path / "t.md", tmp_path / "t.csv"
    assert main(["table", *compared, "--ns", "1", "5", "--compare-to", "off-the-shelf", "--out-md", str(md),
                 "--out-csv", str(out_csv)]) == 0
    lines = md.read_text().splitlines()
    assert lines[0] == ("| Method | Pitts30k-test R@1 | Pitts30k-test R@5 | Tokyo 24/7 R@1 | Tokyo 24/7 R@5 "
                        "| Pooled R@1 | Pooled R@5 |")
    assert lines[2] == (f"| off-the-shelf (baseline) | {cell(4, 10)} | {cell(5, 10)} | {cell(5, 10)} "
                        f"| {cell(5, 10)} | {cell(9, 20)} | {cell(10, 20)} |")
    # McNemar by hand: SFRS on pitts30k R@1 wins 6 discordant queries of 6, p = 2 / 2^6 = 0.031 (marked);
    # at R@5 and on tokyo 5 of 5, p = 2 / 2^5 = 0.0625 (not marked); pooled 11 of 11 and 10 of 10 (marked)
    assert lines[3] == (f"| SFRS | {cell(10, 10)} ▲ | {cell(10, 10)} | {cell(10, 10)} | {cell(10, 10)} "
                        f"| {cell(20, 20)} ▲ | {cell(20, 20)} ▲ |")
    # NetVLAD loses 4 and 5 of 4 and 5 per test set (p >= 0.125), and 9 and 10 pooled (p <= 2 / 2^9)
    assert "SFRS, published" in lines[4]   # SFRS has MODEL_ZOO numbers on Tokyo 24/7
    assert lines[5] == (f"| NetVLAD | {cell(0, 10)} | {cell(0, 10)} | {cell(0, 10)} | {cell(0, 10)} "
                        f"| {cell(0, 20)} ▼ | {cell(0, 20)} ▼ |")
    assert "▲ / ▼: significantly above / below off-the-shelf" in md.read_text()
    assert "McNemar" in md.read_text()
    with open(out_csv, newline="") as f:
        rows = {(r["method"], r["dataset"]): r for r in csv.DictReader(f)}
    sfrs = rows["sfrs", "pitts30k"]
    assert (sfrs["baseline"], sfrs["p R@1"], sfrs["vs baseline R@1"]) == ("off-the-shelf", "0.03125", "above")
    assert (sfrs["p R@5"], sfrs["vs baseline R@5"]) == ("0.0625", "no")
    pooled = rows["netvlad", "pooled"]
    assert (pooled["p R@1"], pooled["vs baseline R@1"]) == (f"{2 / 2 ** 9:.4g}", "below")
    assert rows["off-the-shelf", "pooled"]["p R@1"] == ""   # the baseline is not tested against itself


def test_table_compare_with_rankings_elsewhere(tmp_path, compared):
    # the netvlad rankings moved away: found through --rankings
    moved = tmp_path / "moved.h5"
    (tmp_path / "netvlad" / "tokyo_rankings.h5").rename(moved)
    md, out_csv = tmp_path / "t.md", tmp_path / "t.csv"
    argv = ["table", *compared, "--ns", "1", "5", "--compare-to", "off-the-shelf", "--out-md", str(md),
            "--out-csv", str(out_csv)]
    assert main(argv) == 2 and not md.exists()
    assert main([*argv, "--rankings", "netvlad", "tokyo", str(moved)]) == 0
    assert "▼" in md.read_text()


@pytest.mark.parametrize("case, message", [
    ("stale", "not from the same evaluation"),
    ("missing", "rankings file not found"),
    ("kind", "is a vpr features file, not a rankings file"),
    ("baseline", "--compare-to nobody: no --recall of that method"),
    ("rankings_only", "--rankings is only read for a comparison"),
    ("same_out", "is the input --recall"),
])
def test_table_compare_bad_input(tmp_path, capsys, compared, case, message):
    baseline = "off-the-shelf"
    extra = []
    if case == "stale":   # the recall CSV of another evaluation than its rankings file
        write_recall_ci(tmp_path / "sfrs" / "tokyo_recall.csv", {1: 9, 5: 10}, 10)
    elif case == "missing":
        (tmp_path / "sfrs" / "tokyo_rankings.h5").unlink()
    elif case == "kind":
        with h5py.File(tmp_path / "sfrs" / "tokyo_rankings.h5", "a") as f:
            f.attrs["kind"] = "vpr-features"
    elif case == "baseline":
        baseline = "nobody"
    elif case == "rankings_only":
        baseline = None
        extra = ["--rankings", "sfrs", "tokyo", str(tmp_path / "sfrs" / "tokyo_rankings.h5")]
    md, out_csv = tmp_path / "t.md", tmp_path / "t.csv"
    if case == "same_out":
        md = tmp_path / "sfrs" / "tokyo_recall.csv"
    argv = ["table", *compared, *extra, "--ns", "1", "5", "--out-md", str(md), "--out-csv", str(out_csv)]
    if baseline:
        argv += ["--compare-to", baseline]
    before = md.read_text() if md.exists() else None
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not out_csv.exists() and (md.read_text() if md.exists() else None) == before


@pytest.mark.parametrize("case, message", [
    ("missing", "recall CSV not found"),
    ("header", "expected the header 'n,recall,ci_low,ci_high,queries'"),
    ("interval", "must lie in [0, 1] around the recall"),
    ("queries", "one positive count in every row"),
    ("hits", "not a whole number of hits out of 4 queries"),
    ("range", "a fraction in [0, 1]"),
    ("text", "malformed row 3"),
    ("no_n", "no Recall@10"),
])
def test_table_bad_input(tmp_path, capsys, case, message):
    good = write_recall(tmp_path / "good.csv", [(1, 0.5), (5, 0.6), (10, 0.7)])
    bad = tmp_path / "bad.csv"
    header = "n,recall,ci_low,ci_high,queries\n"
    bodies = {   # the file of each case, after the header (its own header for "header")
        "header": "N,R\n1,0.5\n5,0.6\n10,0.7\n",
        "range": header + "1,0.5,0.4,0.6,10\n5,60.0,0.5,0.7,10\n",
        "interval": header + "1,0.5,0.6,0.7,10\n",
        "hits": header + "1,0.6,0.2,0.8,4\n",
        "queries": header + "1,0.5,0.2,0.8,10\n5,0.6,0.3,0.9,12\n",
        "text": header + "1,0.5,0.2,0.8,10\n5,abc,0.2,0.8,10\n",
    }
    if case == "no_n":
        write_recall(bad, [(1, 0.5), (5, 0.6)])
    elif case in bodies:   # "missing": no file at all
        bad.write_text(bodies[case])
    md, out_csv = tmp_path / "t.md", tmp_path / "t.csv"
    rc = main(["table", "--recall", "netvlad", "pitts30k", str(good), "--recall", "sfrs", "pitts30k",
               str(bad), "--out-md", str(md), "--out-csv", str(out_csv)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"vpr table: error: {bad}" in err and message in err
    assert not md.exists() and not out_csv.exists()
    leftover = {p.name for p in tmp_path.iterdir()} - {"good.csv", "bad.csv"}
    assert not leftover   # no temporary files either


# ------------------------------------------------------------------------------------------ recall plot
def test_plot_recall(tmp_path):
    a = write_recall(tmp_path / "a.csv", [(1, 0.7), (5, 0.85), (10, 0.9), (20, 0.94)])
    b = write_recall(tmp_path / "b.csv", [(1, 0.8), (5, 0.9), (10, 0.93), (20, 0.96)])
    out = tmp_path / "fig" / "recall.png"
    assert main(["plot", "recall", "--recall", "netvlad", str(a), "--recall", "sfrs", str(b),
                 "--dataset", "pitts250k", "--title", "Pitts250k-test", "--out", str(out)]) == 0
    pixels = read_png(out)
    assert pixels.std() > 10   # not a blank canvas


def band_pixels(px: np.ndarray, rgb: tuple[float, float, float], alpha: float) -> int:
    """Pixels of the colour ``rgb`` (0..1) drawn with ``alpha`` over white."""
    tint = 255 - alpha * (255 - 255 * np.array(rgb))
    return int((np.abs(px - tint).max(axis=-1) <= 6).sum())


TAB10_BLUE = (0.12156862745098039, 0.4666666666666667, 0.7058823529411765)   # the first method's colour


def test_plot_recall_draws_the_intervals(tmp_path):
    ns = {1: 30, 5: 50, 10: 60, 20: 70}
    wide = write_recall_ci(tmp_path / "wide.csv", ns, 100)    # 95 % interval about +-9 points
    narrow = write_recall_ci(tmp_path / "narrow.csv", {n: 100 * k for n, k in ns.items()}, 10000)   # +-1
    for name, path in (("wide", wide), ("narrow", narrow)):
        png = tmp_path / f"{name}.png"
        assert main(["plot", "recall", "--recall", "netvlad", str(path), "--out", str(png)]) == 0
    # the band (alpha 0.18 over white) of the wide interval covers a large area, the narrow one's little
    wide_band = band_pixels(read_png(tmp_path / "wide.png"), TAB10_BLUE, 0.18)
    narrow_band = band_pixels(read_png(tmp_path / "narrow.png"), TAB10_BLUE, 0.18)
    assert wide_band > 5000 and narrow_band < wide_band / 3, (wide_band, narrow_band)


def test_plot_recall_bad_csv(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("")
    out = tmp_path / "recall.png"
    assert main(["plot", "recall", "--recall", "sfrs", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "n,recall" in err and not out.exists()


# ---------------------------------------------------------------------------------------- training plot
FIELDS = ["generation", "epoch", "loss", "loss_hard", "loss_soft", "lr", "recall@1", "recall@5",
          "recall@10", "mining_s", "train_s", "val_s"]


def write_log(path: Path, generation: int, epochs: int, r1_start: float, queries: int | None = 20) -> Path:
    """A training log; with its recall intervals over ``queries`` val queries unless that is None."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        for e in range(-1, epochs):
            loss = 0.0 if e < 0 else 0.5 / (e + 2)
            r1 = min(r1_start + 0.05 * (e + 1), 1.0)
            w.writerow([generation, e, loss, loss, 0.0, "nan" if e < 0 else 0.001, r1, min(r1 + 0.1, 1),
                        min(r1 + 0.15, 1), 1.0, 2.0, 0.5])
    return path if queries is None else add_interval_columns(path, queries)


def add_interval_columns(path: Path, queries: int) -> Path:
    """Add the recall@1/5/10 interval columns of a log over ``queries`` val queries (Wilson, from scipy)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    names = [f"recall@{n}_ci_{s}" for n in (1, 5, 10) for s in ("low", "high")]
    for row in rows:
        for n in (1, 5, 10):
            low, high = wilson_pct(round(float(row[f"recall@{n}"]) * queries), queries)
            row[f"recall@{n}_ci_low"], row[f"recall@{n}_ci_high"] = low / 100, high / 100
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*FIELDS[:9], *names, *FIELDS[9:]])
        w.writeheader()
        w.writerows(rows)
    return path


def test_plot_training_draws_the_intervals(tmp_path, capsys):
    banded = write_log(tmp_path / "banded.csv", 0, 4, 0.3, queries=20)
    narrow = write_log(tmp_path / "narrow.csv", 0, 4, 0.3, queries=20000)
    rows = read_training_log(banded)
    assert rows[1]["recall@1_ci_low"] == pytest.approx(wilson_pct(round(0.35 * 20), 20)[0] / 100)
    counts = {}
    for name, log in (("banded", banded), ("narrow", narrow)):
        png = tmp_path / f"{name}.png"
        assert main(["plot", "training", "--log", name, str(log), "--out", str(png)]) == 0
        counts[name] = band_pixels(read_png(png), TAB10_BLUE, 0.12)
    # a band of the run's colour (alpha 0.12), wide over 20 queries, thin over 20,000
    assert counts["banded"] > 3000 and counts["narrow"] < counts["banded"] / 3, counts
    # a log without the interval columns is refused, naming them
    plain = write_log(tmp_path / "plain.csv", 0, 4, 0.3, queries=None)
    assert main(["plot", "training", "--log", "plain", str(plain), "--out", str(tmp_path / "p.png")]) == 2
    assert "recall@1_ci_low" in capsys.readouterr().err


def test_training_positions_chain_and_overlay():
    g0 = [{"generation": 0, "epoch": e} for e in (-1, 0)]
    g1 = [{"generation": 1, "epoch": e} for e in (-1, 0, 1, 2)]
    xs, ticks, labels = training_positions([("g0", g0), ("g1", g1)], chain=True)
    # g0: start at 0, epoch 0 at 1; g1 starts where g0 ended (x = 1) and runs to x = 4
    assert xs[0].tolist() == [0, 1] and xs[1].tolist() == [1, 2, 3, 4]
    assert ticks == [0, 1, 2, 3, 4] and labels == ["start", "0.0", "1.0", "1.1", "1.2"]
    xs, ticks, labels = training_positions([("a", g0), ("b", g1)], chain=False)
    assert xs[0].tolist() == [-1, 0] and xs[1].tolist() == [-1, 0, 1, 2]
    assert labels == ["-1", "0", "1", "2"]


def test_plot_training(tmp_path):
    logs = [write_log(tmp_path / f"g{g}.csv", g, 1 if g == 0 else 3, 0.3 + 0.1 * g) for g in range(3)]
    out = tmp_path / "train.png"
    argv = ["plot", "training", "--out", str(out), "--title", "SFRS on tiny"]
    for g, log in enumerate(logs):
        argv += ["--log", f"sfrs g{g}", str(log)]
    assert main(argv) == 0
    assert read_png(out).std() > 10
    out2 = tmp_path / "overlay.png"
    assert main(["plot", "training", "--out", str(out2), "--log", "netvlad", str(logs[1]),
                 "--log", "sare", str(logs[2])]) == 0
    read_png(out2)


def test_plot_training_bad_log(tmp_path, capsys):
    bad = tmp_path / "log.csv"
    bad.write_text("generation,epoch,loss\n0,-1,0\n")
    out = tmp_path / "train.png"
    assert main(["plot", "training", "--log", "x", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "recall@1" in err and not out.exists()


def test_training_log_writer_and_reader_agree(tmp_path):
    # The header the trainer writes, written out here; the reader returns the plotted columns and intervals.
    header = ("generation,epoch,loss,loss_hard,loss_soft,lr,recall@1,recall@5,recall@10,"
              "recall@1_ci_low,recall@1_ci_high,recall@5_ci_low,recall@5_ci_high,"
              "recall@10_ci_low,recall@10_ci_high,mining_s,train_s,val_s")
    assert ",".join(LOG_FIELDS) == header
    row = dict.fromkeys(LOG_FIELDS, 0.5) | {"generation": 1, "epoch": 3, "recall@1_ci_low": 0.25}
    path = tmp_path / "log.csv"
    write_training_log(path, [row])
    assert path.read_text().splitlines()[0] == header
    (got,) = read_training_log(path)
    assert got == {"generation": 1.0, "epoch": 3.0, "loss": 0.5, "recall@1": 0.5, "recall@5": 0.5,
                   "recall@1_ci_low": 0.25, "recall@1_ci_high": 0.5, "recall@5_ci_low": 0.5,
                   "recall@5_ci_high": 0.5}


# ---------------------------------------------------------------------------------------- example grid
def test_select_queries_mixes_and_is_deterministic():
    success = np.array([1, 0, 0, 1, 0, 1, 0, 0], dtype=bool)   # good: 0 3 5; bad: 1 2 4 6 7
    chosen = select_queries(success, 4, seed=3)
    assert chosen.tolist() == sorted(chosen.tolist()) and len(set(chosen.tolist())) == 4
    assert success[chosen].sum() == 2
    assert select_queries(success, 4, seed=3).tolist() == chosen.tolist()
    # 7 of 8: half would be 3 failures, but only 3 successes exist, so 4 failures fill up
    assert success[select_queries(success, 7, seed=0)].sum() == 3
    one_good = np.array([0, 0, 1, 0, 0], dtype=bool)
    picked = select_queries(one_good, 4, seed=1)
    assert 2 in picked.tolist() and len(picked) == 4       # the only success, failures fill up
    assert select_queries(success, 20, seed=0).tolist() == list(range(8))


GRAY, BLUE, DARK = (128, 128, 128), (40, 60, 200), (60, 60, 60)


@pytest.fixture
def tiny_index(tmp_path) -> Path:
    """4 database images 100 m apart and 2 queries: query 0 near db 0, query 1 near db 3."""
    root = tmp_path / "images"
    root.mkdir()
    db = [f"db{i}.png" for i in range(4)]
    qs = ["q0.png", "q1.png"]
    for name, colour in zip(db + qs, [GRAY, BLUE, DARK, GRAY, BLUE, DARK], strict=True):
        Image.new("RGB", (64, 48), colour).save(root / name)
    records = SplitRecords("test", db, np.array([[0, 0], [100, 0], [200, 0], [300, 0]], float),
                           np.arange(4), qs, np.array([[0, 5], [300, 5]], float), np.array([10, 11]))
    out = tmp_path / "index.h5"
    build_index(records, out, root=root, fmt="csv", source="hand-made", source_sha256="0")
    return out


def write_rankings(path: Path, topk: list[list[int]]) -> Path:
    topk = np.array(topk, dtype=np.int64)
    with h5py.File(path, "w") as f:
        f.create_dataset("topk", data=topk)
        f.create_dataset("distances", data=np.where(topk >= 0, 0.5, np.inf).astype(np.float32))
        f.create_dataset("first_positive", data=np.array([1, 2], dtype=np.int64))
        f.attrs["kind"] = "vpr-rankings"
    return path


def test_plot_examples_frame_colours(tmp_path, tiny_index):
    # query 0: wrong, right (db 0), wrong; query 1: wrong, wrong, right (db 3); -1 pads column 4
    rankings = write_rankings(tmp_path / "rank.h5", [[1, 0, 2, -1], [2, 1, 3, 0]])
    out = tmp_path / "examples.png"
    assert main(["plot", "examples", "--index", str(tiny_index), "--rankings", str(rankings),
                 "--out", str(out), "--queries", "2", "--top", "3"]) == 0
    px = read_png(out)
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    green = (g > 120) & (r < 80) & (b < 80)
    red = (r > 150) & (g < 80) & (b < 80)
    assert green.sum() > 100 and red.sum() > 200
    ys = np.flatnonzero((green | red).any(axis=1))
    mid = (ys.min() + ys.max()) / 2      # the frames of row 0 lie above, those of row 1 below
    for row, half in enumerate((slice(0, int(mid)), slice(int(mid), None))):
        gx = np.flatnonzero(green[half].any(axis=0))
        rx = np.flatnonzero(red[half].any(axis=0))
        assert gx.size and rx.size
        if row == 0:   # red | green | red, from left to right
            assert (rx < gx.min()).any() and (rx > gx.max()).any()
            assert not ((rx >= gx.min()) & (rx <= gx.max())).any()
        else:          # red | red | green
            assert rx.max() < gx.min()


def test_plot_examples_bad_rankings(tmp_path, tiny_index, capsys):
    out = tmp_path / "examples.png"
    missing = tmp_path / "none.h5"
    assert main(["plot", "examples", "--index", str(tiny_index), "--rankings", str(missing),
                 "--out", str(out)]) == 2
    assert f"{missing}: rankings file not found" in capsys.readouterr().err
    wrong = write_rankings(tmp_path / "wrong.h5", [[1, 0, 7], [2, 1, 3]])   # db 7 does not exist
    assert main(["plot", "examples", "--index", str(tiny_index), "--rankings", str(wrong),
                 "--out", str(out)]) == 2
    assert "database image 7" in capsys.readouterr().err
    assert not out.exists()


def test_every_plot_mode_option_has_help():
    import argparse

    parser = argparse.ArgumentParser()
    from vpr.commands import plot

    plot.configure(parser)
    modes = next(a for a in parser._actions if a.dest == "mode").choices
    assert set(modes) == {"recall", "training", "examples"}
    for name, sub in modes.items():
        assert [a.dest for a in sub._actions if not a.help] == [], name
