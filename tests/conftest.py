"""Shared fixtures: the tiny synthetic data set, generated and indexed once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from vprtest import run_vpr


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    """`vpr synth --preset tiny` plus index files of the Pitts30k-style train/val/test splits."""
    root = tmp_path_factory.mktemp("tiny")
    data = root / "data"
    run_vpr("synth", "--preset", "tiny", "--out", data, "--seed", 0)
    raw = data / "pitts" / "raw"
    out = {"data": data, "pitts_raw": raw}
    for split in ("train", "val", "test"):
        index = root / f"pitts30k_{split}.h5"
        run_vpr("index", "--format", "pitts", "--mat", raw / f"pitts30k_{split}.mat", "--root", raw,
                "--out", index)
        out[split] = index
    return out
