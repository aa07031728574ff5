"""The synthetic place-recognition data set: Pittsburgh- and Tokyo-style files rendered from a made-up city.

``generate(preset, out, seed)`` writes, under ``out``, exactly the on-disk layout of the real data sets
(docs/method.md §1.1): ``pitts/raw/pitts30k_{train,val,test}.mat``, ``pitts250k_test.mat`` and the Pittsburgh
images; ``tokyo/raw/tokyo247.mat`` (database listed as ``.jpg``, stored as ``.png``) with day / sunset /
night phone-photo queries; ``tokyo/raw/tokyoTM_{train,val}.mat`` with time stamps; and ``synth_truth.json``,
what the generator knows (counts, places, panoramas, query positions) for tests. The same seed gives
byte-identical files. The tree is built in a temporary directory beside ``out`` and moved into place only
when complete.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import shutil
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from PIL import Image

from vpr.errors import VprError
from vpr.io import make_temporary_dir
from vpr.progress import progress as progress_bar
from vpr.synth.layouts import Job, Output, mat_bytes, pittsburgh, tokyo
from vpr.synth.presets import PRESETS, Preset, get_preset
from vpr.synth.renderer import render

__all__ = ["PRESETS", "TRUTH_FILE", "generate", "get_preset"]

TRUTH_FILE = "synth_truth.json"
TRUTH_VERSION = 1
TOP_LEVEL = ("pitts", "tokyo", TRUTH_FILE)


def _save_image(job: Job, root: Path, preset: Preset) -> None:
    img = render(job.street, job.camera, job.condition)
    pil = Image.fromarray((img * 255 + 0.5).astype(np.uint8), "RGB")
    path = root / job.rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if job.fmt == "png":
        pil.save(path, format="PNG", compress_level=6)
    else:
        pil.save(path, format="JPEG", quality=preset.jpeg_quality, subsampling=2)


def _save_images(jobs: list[Job], root: Path, preset: Preset) -> int:
    for job in jobs:
        _save_image(job, root, preset)
    return len(jobs)


def _start_worker(parent: int) -> None:
    # Ctrl-C and a cluster's SIGTERM reach the whole process group: the parent alone stops the work (it
    # raises, cancels what is queued and removes the temporary tree), so that the exit is the same each time.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    # A parent killed outright (SIGKILL, out of memory) cannot stop its workers, and they would wait on its
    # task queue forever: each one leaves when its parent is gone.
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _render_all(jobs: list[Job], root: Path, preset: Preset, workers: int, progress: bool) -> None:
    """Every image of ``jobs``, in ``workers`` processes. Each image is a function of its job alone (its own
    random seed), so the files are the same bytes whatever the number of workers."""
    bar = progress_bar(total=len(jobs), desc=f"vpr synth {preset.name}", unit="img", disable=not progress)
    with bar:
        if workers == 1:
            for job in jobs:
                _save_image(job, root, preset)
                bar.update(1)
            return
        chunks = [jobs[i:i + 16] for i in range(0, len(jobs), 16)]
        save = functools.partial(_save_images, root=root, preset=preset)
        # spawn, not fork: a fresh interpreter per worker, whatever threads the caller runs. A worker that
        # dies (killed, out of memory) breaks the pool, where multiprocessing.Pool would wait forever.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_start_worker, initargs=(os.getpid(),)) as pool:
            try:
                for done in pool.map(save, chunks):
                    bar.update(done)
            except BrokenProcessPool as err:
                raise VprError(f"a rendering process died ({err}); the data set is not written") from None
            except BaseException:
                # a signal or an error: drop the queued chunks, let the running ones end, before the
                # caller removes the temporary tree they write into
                pool.shutdown(wait=True, cancel_futures=True)
                raise


def _write_tree(root: Path, preset: Preset, seed: int, outputs: list[Output], progress: bool,
                workers: int = 1) -> dict:
    truth: dict = {"format": "vpr-synth-truth", "version": TRUTH_VERSION, "preset": preset.name, "seed": seed,
                   "db_image_size": list(preset.db_size), "splits": {}}
    jobs = [job for o in outputs for job in o.jobs]
    _render_all(jobs, root, preset, workers, progress)
    for o in outputs:
        for rel, fields in o.mats.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(mat_bytes(fields))
        truth["splits"].update(o.truth)
    truth["num_images"] = len(jobs)
    (root / TRUTH_FILE).write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n")
    return truth


def _install(tmp: Path, out: Path) -> None:
    """Move the finished tree into ``out``: the whole directory if ``out`` is absent or empty, otherwise
    (``force``) replace only the entries this generator writes."""
    if out.exists() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.replace(tmp, out)
        return
    for name in TOP_LEVEL:
        old = out / name
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
        os.replace(tmp / name, old)
    tmp.rmdir()


def generate(preset: str, out: str | os.PathLike, seed: int = 0, *, force: bool = False,
             progress: bool = False, workers: int = 1) -> dict:
    """Render the synthetic data set ``preset`` (``tiny`` or ``demo``) into directory ``out``.

    Refuses (VprError) a non-empty ``out`` unless ``force``; with ``force`` only ``pitts/``, ``tokyo/`` and
    the truth file are replaced. ``workers`` processes render the images (the same bytes for any number).
    Returns a summary: preset, seed, seconds, images and per-split counts.
    """
    spec = get_preset(preset)
    if not isinstance(seed, int) or seed < 0:
        raise VprError(f"--seed must be a non-negative integer, got {seed!r}")
    if not isinstance(workers, int) or workers < 1:
        raise VprError(f"--workers must be a positive integer, got {workers!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VprError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise VprError(f"{out}: directory is not empty (use --force to replace its pitts/, tokyo/ and "
                       f"{TRUTH_FILE})")
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temporary_dir(out, "synth")
    try:
        outputs = [pittsburgh(seed, spec), tokyo(seed, spec)]
        truth = _write_tree(tmp, spec, seed, outputs, progress, workers)
        _install(tmp, out)
    except OSError as err:
        raise VprError(f"{out}: could not write the data set: {err}") from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "preset": spec.name,
        "seed": seed,
        "out": str(out),
        "seconds": round(time.perf_counter() - start, 2),
        "images": truth["num_images"],
        "splits": {name: {"num_db": rec["num_db"], "num_queries": rec["num_queries"]}
                   for name, rec in truth["splits"].items()},
    }
