"""Helpers shared by the speed benchmarks: machine description, synthetic JPEGs, the synthetic data set,
NetVLAD initialisation and timing. Not a benchmark itself."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SPLIT_SOURCES = {  # index name -> (format, data set, .mat file), as in the workflow
    "pitts30k_train": ("pitts", "pitts", "pitts30k_train.mat"),
    "pitts30k_test": ("pitts", "pitts", "pitts30k_test.mat"),
    "pitts250k_test": ("pitts", "pitts", "pitts250k_test.mat"),
    "tokyo247": ("tokyo247", "tokyo", "tokyo247.mat"),
}


def machine() -> str:
    """One line: CPU model, cores available to this process, torch version and threads, load average."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            if key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    bf16 = [f for f in ("amx_bf16", "avx512_bf16") if f in flags] or ["no bf16 flags"]
    load = " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{model} ({', '.join(bf16)}), {cores} cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads{gpu}; load average {load}")


def write_jpegs(out: Path, n: int, size: tuple[int, int], seed: int = 0, quality: int = 90) -> list[Path]:
    """``n`` synthetic street-like JPEGs of ``size = (H, W)``: smooth colour fields plus random facades."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    files = []
    for i in range(n):
        low = rng.integers(0, 256, size=(h // 32 + 2, w // 32 + 2, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
        for _ in range(12):  # rectangles with a window grid: edges and texture for the conv layers
            y0, x0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
            y1, x1 = min(h, y0 + rng.integers(8, h // 2)), min(w, x0 + rng.integers(8, w // 3))
            img[y0:y1, x0:x1] = rng.integers(0, 256, size=3)
            step = int(rng.integers(6, 16))
            img[y0:y1:step, x0:x1] //= 2
            img[y0:y1, x0:x1:step] //= 2
        img += rng.integers(-8, 9, size=img.shape, dtype=np.int16)
        path = out / f"{i:05d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=quality)
        files.append(path)
    return files


def run_vpr(*args) -> None:
    proc = subprocess.run([sys.executable, "-m", "vpr.cli", *map(str, args)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"vpr {' '.join(map(str, args))} failed:\n{proc.stderr}")


def synth_indexes(data: Path | None, work: Path, splits=tuple(SPLIT_SOURCES)) -> dict[str, Path]:
    """Index files of the synthetic data set in ``data`` (generated there with the demo preset if None)."""
    if data is None:
        data = work / "synth"
        print(f"generating the synthetic data set (vpr synth --preset demo) in {data} ...", flush=True)
        t0 = time.perf_counter()
        run_vpr("synth", "--preset", "demo", "--seed", 0, "--out", data)
        print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
    out = {}
    for name in splits:
        fmt, dataset, mat = SPLIT_SOURCES[name]
        raw = Path(data) / dataset / "raw"
        index = work / f"{name}.h5"
        if not index.exists():
            run_vpr("index", "--format", fmt, "--mat", raw / mat, "--root", raw, "--out", index)
        out[name] = index
    return out


def init_netvlad(model, files: list, size: tuple[int, int], per_image: int = 50, seed: int = 43,
                 precision: str = "fp32") -> float:
    """NetVLAD from k-means on the conv descriptors of ``files`` (as `vpr cluster`); returns α."""
    from vpr.cluster import kmeans, local_descriptors

    files = [str(f) for f in files]
    desc = local_descriptors(model, files, list(range(len(files))), size, per_image, seed, batch_size=4,
                             workers=0, device=torch.device("cpu"), progress=False, precision=precision)
    centroids = kmeans(desc, model.net_vlad.num_clusters, 20, seed)
    return model.init_netvlad(centroids, desc)


class Timer:
    """``with Timer() as t: ...``; then ``t.seconds``."""

    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.t0
