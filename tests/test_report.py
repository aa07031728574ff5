"""`vpr table` and `vpr plot`: table cells from hand-written recall CSVs, PNG output, frame colours."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from vpr.cli import main
from vpr.data.index import SplitRecords, build_index
from vpr.plots import select_queries, training_positions

MIN_PNG = (400, 250)  # every figure is at least this large (width, height) in pixels


def write_recall(path: Path, rows: list[tuple[int, float]], header: str = "n,recall") -> Path:
    path.write_text(header + "\n" + "".join(f"{n},{r}\n" for n, r in rows))
    return path


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.width >= MIN_PNG[0] and img.height >= MIN_PNG[1]
        return np.asarray(img.convert("RGB")).astype(int)


# ------------------------------------------------------------------------------------------------ table
def test_table_cells(tmp_path, capsys):
    a = write_recall(tmp_path / "netvlad_p250.csv", [(1, 0.80149), (5, 0.90167), (10, 0.95), (20, 0.97)])
    b = write_recall(tmp_path / "sfrs_p250.csv", [(1, 0.9012), (5, 0.96), (10, 0.9749)])
    c = write_recall(tmp_path / "sfrs_tokyo.csv", [(1, 0.8), (5, 0.9), (10, 0.92)])
    md, out_csv = tmp_path / "res" / "table.md", tmp_path / "res" / "table.csv"
    rc = main(["table", "--recall", "netvlad", "pitts250k", str(a), "--recall", "sfrs", "pitts250k", str(b),
               "--recall", "sfrs", "tokyo", str(c), "--out-md", str(md), "--out-csv", str(out_csv)])
    assert rc == 0
    lines = md.read_text().splitlines()
    assert lines[0] == ("| Method | Pitts250k-test R@1 | Pitts250k-test R@5 | Pitts250k-test R@10 "
                        "| Tokyo 24/7 R@1 | Tokyo 24/7 R@5 | Tokyo 24/7 R@10 |")
    # 80.149 -> 80.1, 90.167 -> 90.2 (rounded, not truncated); NetVLAD was not evaluated on Tokyo: "-"
    assert lines[2] == "| NetVLAD | 80.1 | 90.2 | 95.0 | - | - | - |"
    # SFRS beside the MODEL_ZOO numbers 90.7/96.4/97.6 (Pitts250k) and 85.4/91.1/93.3 (Tokyo)
    assert lines[3] == ("| SFRS | 90.1 (pub. 90.7) | 96.0 (pub. 96.4) | 97.5 (pub. 97.6) "
                        "| 80.0 (pub. 85.4) | 90.0 (pub. 91.1) | 92.0 (pub. 93.3) |")
    assert len(lines) == 6 and "MODEL_ZOO.md" in lines[5] and "not evaluated" in lines[5]
    assert "| SFRS | 90.1 (pub. 90.7)" in capsys.readouterr().out   # the table is printed too

    with open(out_csv, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["method", "dataset", "R@1", "R@5", "R@10", "published R@1", "published R@5",
                       "published R@10"]
    assert rows[1] == ["netvlad", "pitts250k", "80.15", "90.17", "95.00", "", "", ""]
    assert rows[2] == ["sfrs", "pitts250k", "90.12", "96.00", "97.49", "90.7", "96.4", "97.6"]
    assert rows[3] == ["sfrs", "tokyo", "80.00", "90.00", "92.00", "85.4", "91.1", "93.3"]
    assert len(rows) == 4


def test_table_other_ns(tmp_path):
    a = write_recall(tmp_path / "a.csv", [(1, 0.5), (20, 0.75)])
    md, out_csv = tmp_path / "t.md", tmp_path / "t.csv"
    assert main(["table", "--recall", "sare_ind", "pitts30k", str(a), "--out-md", str(md),
                 "--out-csv", str(out_csv), "--ns", "1", "20"]) == 0
    lines = md.read_text().splitlines()
    assert lines[0] == "| Method | Pitts30k-test R@1 | Pitts30k-test R@20 |"
    assert lines[2] == "| SARE_ind | 50.0 | 75.0 |"   # no published SARE_ind numbers on Pitts30k
    assert "not evaluated" not in md.read_text()


@pytest.mark.parametrize("case, message", [
    ("missing", "recall CSV not found"),
    ("header", "expected the header 'n,recall'"),
    ("range", "a fraction in [0, 1]"),
    ("text", "malformed row 3"),
    ("no_n", "no Recall@10"),
])
def test_table_bad_input(tmp_path, capsys, case, message):
    good = write_recall(tmp_path / "good.csv", [(1, 0.5), (5, 0.6), (10, 0.7)])
    bad = tmp_path / "bad.csv"
    if case == "header":
        write_recall(bad, [(1, 0.5), (5, 0.6), (10, 0.7)], header="N,R")
    elif case == "range":
        write_recall(bad, [(1, 0.5), (5, 60.0), (10, 0.7)])
    elif case == "text":
        bad.write_text("n,recall\n1,0.5\n5,abc\n10,0.7\n")
    elif case == "no_n":
        write_recall(bad, [(1, 0.5), (5, 0.6)])
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


def write_log(path: Path, generation: int, epochs: int, r1_start: float) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        for e in range(-1, epochs):
            loss = 0.0 if e < 0 else 0.5 / (e + 2)
            r1 = min(r1_start + 0.05 * (e + 1), 1.0)
            w.writerow([generation, e, loss, loss, 0.0, "nan" if e < 0 else 0.001, r1, min(r1 + 0.1, 1),
                        min(r1 + 0.15, 1), 1.0, 2.0, 0.5])
    return path


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
