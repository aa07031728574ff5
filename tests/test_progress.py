"""Progress lines for logs (vpr.progress): every 5 % and every VPR_PROGRESS_INTERVAL seconds, off a TTY."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from vpr.errors import VprError
from vpr.progress import LineProgress, duration, interval, progress

LINE = re.compile(r"^(?P<desc>.+): (?P<n>\d+)/(?P<total>\d+) (?P<unit>\w+) \((?P<pct>[\d.]+) %\), "
                  r"(?P<rate>[\d.e+-]+) (?P=unit)/s, \d+ (s|min \d\d s) elapsed(, about .+ left)?(, .+)?$")


def lines(text):
    return [line for line in text.splitlines() if line]


def test_a_line_every_5_percent_and_none_more(monkeypatch):
    buf = io.StringIO()
    bar = LineProgress(range(40), desc="extract", unit="img", every=1e9, stream=buf)
    assert list(bar) == list(range(40))
    out = lines(buf.getvalue())
    # 5 % of 40 is 2 images: a line at 2, 4, ..., 40, the last one the final count
    assert [int(LINE.match(line)["n"]) for line in out] == list(range(2, 41, 2)), out
    assert all(LINE.match(line)["total"] == "40" for line in out)
    assert "about" in out[0] and "left" in out[0] and "left" not in out[-1]
    assert out[-1].startswith("extract: 40/40 img (100.0 %), ")


def test_a_line_whenever_the_interval_has_passed():
    buf = io.StringIO()
    with LineProgress(total=1000, desc="epoch 0 chunk 0", unit="step", every=0.0, stream=buf) as bar:
        for _ in range(7):
            bar.update(1)
            bar.set_postfix(loss="0.1234")
    out = lines(buf.getvalue())
    assert len(out) == 7 and all(LINE.match(line) for line in out), out    # 7 steps = 0.7 %: time only
    assert out[-1].startswith("epoch 0 chunk 0: 7/1000 step (0.7 %)") and out[-1].endswith(", loss=0.1234")


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv("VPR_PROGRESS_INTERVAL", raising=False)
    assert interval() == 30.0
    monkeypatch.setenv("VPR_PROGRESS_INTERVAL", "0.5")
    assert interval() == 0.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("VPR_PROGRESS_INTERVAL", bad)
        with pytest.raises(VprError, match="VPR_PROGRESS_INTERVAL"):
            interval()
    assert (duration(7.4), duration(133), duration(3725)) == ("7 s", "2 min 13 s", "1 h 02 min")


def test_off_a_terminal_the_helper_writes_lines_and_disabled_it_is_silent(capsys):
    assert not sys.stderr.isatty()   # pytest captures it
    assert isinstance(progress(range(3), total=3, desc="x"), LineProgress)
    list(progress(range(3), total=3, desc="x", disable=True))
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_an_extraction_in_a_log_file_shows_its_progress(tmp_path):
    """What a Slurm or Snakemake log of `vpr extract` holds: stderr is a file."""
    import torch
    from test_extract import _make_dataset

    from vpr.models import ModelConfig, build_model, save_model

    torch.manual_seed(0)
    save_model(tmp_path / "model.pth", build_model(ModelConfig(backbone="small", image_size=(64, 96))))
    index, db, qs = _make_dataset(tmp_path)
    log = tmp_path / "extract.log"
    env = {**os.environ, "VPR_PROGRESS_INTERVAL": "0"}
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "vpr.cli", "extract", "--checkpoint",
                               str(tmp_path / "model.pth"), "--index", str(index),
                               "--out", str(tmp_path / "f.h5"), "--batch-size", "2", "--workers", "0",
                               "--precision", "fp32"],
                              stdout=f, stderr=f, env=env, timeout=300)
    text = log.read_text()
    assert proc.returncode == 0, text
    progress_lines = [LINE.match(line) for line in text.splitlines() if LINE.match(line)]
    # database (5 images) and queries (4) in batches of 2: a line per batch, each with its count and rate
    counts = [(m["total"], int(m["n"])) for m in progress_lines]
    assert counts == [("5", 2), ("5", 4), ("5", 5), ("4", 2), ("4", 4)], text


def test_a_pending_stop_signal_interrupts_progress_loops_inside_stop_on_only():
    """Training's refresh, mining and validation loops run through progress bars: inside `stop_on`, a
    pending signal raises at the next update or item; outside it, or for a loop that polls the signal
    itself (interruptible=False), nothing changes."""
    from vpr import interrupt
    from vpr.rerank.neighbour_lists import neighbour_lists_from_descriptors

    assert list(progress(range(3), total=3, desc="x")) == [0, 1, 2]
    pending = {"signum": None}
    with interrupt.stop_on(lambda: pending["signum"]):
        seen = []
        for i in progress(range(5), total=5, desc="epoch 0 chunk 1: mining"):
            seen.append(i)
            if i == 1:
                pending["signum"] = 15
                break
        assert seen == [0, 1]
        with pytest.raises(interrupt.StopRequested) as stopped:
            for _ in progress(range(5), total=5, desc="epoch 0 chunk 1: mining"):
                pass
        assert stopped.value.signum == 15 and "during epoch 0 chunk 1: mining" in str(stopped.value)
        with pytest.raises(interrupt.StopRequested), progress(total=4, desc="val: database") as bar:
            bar.update(1)
        assert list(progress(range(3), total=3, desc="steps", interruptible=False)) == [0, 1, 2]
        x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
        with pytest.raises(interrupt.StopRequested, match="k-reciprocal neighbour lists"):
            neighbour_lists_from_descriptors(x[:2], x[2:], needed=3)
    assert not interrupt.active()
    assert list(progress(range(2), total=2, desc="x")) == [0, 1]
