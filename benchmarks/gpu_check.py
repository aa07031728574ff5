"""The GPU check: one run that says whether this machine runs vpr on its GPU, and how fast.

Run it through ``benchmarks/gpu_check.sh`` (which bounds it to 8 minutes); see benchmarks/README.md for
what each figure means. Sections, each timed and recorded even when another one fails:

1. versions and visibility: torch and its CUDA build, cuDNN, the driver (nvidia-smi), CUDA_VISIBLE_DEVICES,
   what torch and faiss see;
2. fail-loudly cases: ``vpr train --device cuda`` with the GPU hidden, and with more local processes than
   GPUs, must stop with exit 2 and one line, within seconds;
3. extraction: images/s of VGG16-NetVLAD at 480x640 from JPEG files (decode included) with vpr's
   extraction in fp32, tf32, bf16 and fp16, against a plain fp32 loop (PIL decode, batch, model, torch's
   default settings) in the same run; the cosine of each to vpr's fp32 descriptors; peak device memory
   from the driver (nvidia-smi, sampled) and from torch's allocator;
4. training: seconds per optimiser step of vpr's training objective on one synthetic tuple, NetVLAD
   (triplet, 12 images) and SFRS generation 1 (with a teacher, 22 images), fp32 and bf16;
5. retrieval: faiss top-k on the GPU against the CPU at Pitts30k-test size (10,000 database, 6,816
   queries, dimension 4096): rows with the same top-k, differences explained by distance ties, times.

``--cpu-smoke`` runs every section on the CPU with tiny sizes (the code paths, not the figures: CI). Figures
go to OUT/gpu_check.json and OUT/gpu_check.md (OUT: --out, else $OUT, else ./gpu_check_out).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from benchcommon import init_netvlad, write_jpegs
from extract_speed import plain_tensor
from train_step_speed import tuple_images

from vpr import distributed
from vpr.evaluate import search
from vpr.extract import extract_features
from vpr.models import ModelConfig, build_model
from vpr.numeric_precision import resolve_precision
from vpr.train.config import TrainConfig
from vpr.train.objective import TupleForward, batch_loss

FULL = dict(backbone="vgg16", clusters=64, size=(480, 640), images=256, batch=32, rounds=2,
            train_size=(480, 640), db=10_000, queries=6_816, dim=4096, k=100)
SMOKE = dict(backbone="small", clusters=8, size=(48, 64), images=8, batch=4, rounds=1, train_size=(64, 96),
             db=500, queries=300, dim=64, k=25)
PLAIN = "plain fp32 loop (torch defaults)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DriverMemory:
    """Peak device memory as the driver reports it (nvidia-smi memory.used, sampled every 0.1 s), in MiB;
    None without nvidia-smi. Counts everything on the device (the CUDA context, faiss, other processes)."""

    def __init__(self, device: torch.device):
        self.cmd = None
        if device.type == "cuda" and shutil.which("nvidia-smi"):
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
            physical = visible[device.index or 0] if visible[0] else str(device.index or 0)
            self.cmd = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                        "-i", physical]
        self.peak: int | None = None

    def _read(self) -> int | None:
        try:
            return int(subprocess.run(self.cmd, capture_output=True, text=True, timeout=5).stdout.strip())
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return None

    def __enter__(self) -> DriverMemory:
        if self.cmd:
            self._stop = threading.Event()
            self.peak = self._read()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.1):
            used = self._read()
            if used is not None:
                self.peak = max(self.peak or 0, used)

    def __exit__(self, *exc) -> None:
        if self.cmd:
            self._stop.set()
            self._thread.join()


def measured(device: torch.device, run):
    """(result, seconds, driver peak MiB, torch peak reserved MiB) of ``run()``, synchronised."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with DriverMemory(device) as mem:
        sync(device)
        t0 = time.perf_counter()
        out = run()
        sync(device)
        seconds = time.perf_counter() - t0
    torch_peak = torch.cuda.max_memory_reserved(device) / 2**20 if device.type == "cuda" else None
    return out, seconds, mem.peak, torch_peak


# ------------------------------------------------------------------------------------------- sections

def versions(device: torch.device, smoke: bool) -> dict:
    import faiss

    out = {"python": sys.version.split()[0], "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
           "cuda_available": torch.cuda.is_available(), "device_count": torch.cuda.device_count(),
           "faiss": faiss.__version__, "faiss_gpus": faiss.get_num_gpus(), "device": str(device),
           "report": distributed.gpu_report()}
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        out["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
        out["bf16_native"] = torch.cuda.is_bf16_supported(including_emulation=False)
    if not smoke and device.type != "cuda":
        raise RuntimeError(f"no usable GPU: {distributed.gpu_report()}")
    return out


def fail_loudly(device: torch.device, smoke: bool, work: Path) -> dict:
    """`vpr train --device cuda` where it cannot have one GPU per process: exit 2, one line, seconds."""
    for name in ("train.h5", "val.h5", "centers.h5"):
        (work / name).write_bytes(b"not read: the device check comes first")
    args = [sys.executable, "-m", "vpr.cli", "train", "--device", "cuda", "--train-index", work / "train.h5",
            "--val-index", work / "val.h5", "--centers", work / "centers.h5", "--out", work / "run"]
    count = torch.cuda.device_count()
    cases = {
        "GPU hidden (CUDA_VISIBLE_DEVICES='')": {"CUDA_VISIBLE_DEVICES": ""},
        f"{count + 1} local ranks, {count} GPU(s)": {
            "RANK": "0", "WORLD_SIZE": str(count + 1), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": str(count + 1),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"},
    }
    out = {}
    for case, env in cases.items():
        t0 = time.perf_counter()
        proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120,
                              env={**os.environ, **env})
        lines = proc.stderr.strip().splitlines()
        ok = proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr
        out[case] = {"ok": ok, "exit": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
                     "message": lines[-1] if lines else ""}
    if not all(c["ok"] for c in out.values()):
        raise RuntimeError(f"a fail-loudly case did not stop with one line: {out}")
    return out


@torch.inference_mode()
def plain_loop(model, files, size, batch, device) -> np.ndarray:
    """The baseline: PIL decode, resize, batch, model, one batch after the other; torch's defaults."""
    out = []
    for i in range(0, len(files), batch):
        x = torch.stack([plain_tensor(f, size) for f in files[i:i + batch]]).to(device)
        out.append(F.normalize(model(x), p=2, dim=1).cpu().numpy())
    return np.concatenate(out)


def extraction(device: torch.device, smoke: bool, work: Path, p: dict) -> dict:
    size = p["size"]
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=p["backbone"], num_clusters=p["clusters"], image_size=size))
    files = write_jpegs(work / "jpeg", p["images"], size, seed=0)
    init_netvlad(model, files[:8], size)
    model.eval().to(device)
    workers = 0 if smoke else min(8, len(os.sched_getaffinity(0)))
    precisions = ["fp32", "bf16"] if device.type != "cuda" else ["fp32", "tf32", "bf16", "fp16"]
    methods = {PLAIN: lambda: plain_loop(model, files, size, p["batch"], device)}
    common = dict(batch_size=p["batch"], workers=workers, device=device, desc=None)
    for name in precisions:
        precision = resolve_precision(name, device)
        methods[f"vpr {name}"] = (lambda pr=precision: extract_features(model, files, size, precision=pr,
                                                                        **common))
    rows, feats = {}, {}
    for name, run in methods.items():
        measured(device, lambda r=run: r())   # warm-up: cuDNN autotuning, page cache, workers
        secs = []
        for _ in range(p["rounds"]):
            feats[name], seconds, driver, allocator = measured(device, run)
            secs.append(seconds)
        rows[name] = {"images_per_s": round(len(files) / float(np.median(secs)), 2),
                      "driver_peak_mib": driver, "torch_peak_reserved_mib": allocator}
    ref = feats["vpr fp32"]
    for name, row in rows.items():
        cos = (feats[name] * ref).sum(1)
        row["cosine_to_vpr_fp32_min"] = round(float(cos.min()), 6)
        row["x_plain"] = round(row["images_per_s"] / rows[PLAIN]["images_per_s"], 2)
    return {"backbone": p["backbone"], "size": list(size), "images": len(files), "batch": p["batch"],
            "workers": workers, "rows": rows}


class TrainStep:
    """One optimiser step of vpr's training objective on a fixed tuple; returns the loss."""

    def __init__(self, cfg, model, teacher, opt, batch, layout, precision, device):
        self.cfg, self.model, self.teacher, self.opt = cfg, model, teacher, opt
        self.batch, self.layout, self.precision, self.device = batch, layout, precision, device

    def __call__(self) -> float:
        loss, _, _ = batch_loss(self.cfg, TupleForward(self.model), self.batch, self.layout,
                                precision=self.precision, device=self.device, teacher=self.teacher)
        self.opt.zero_grad(set_to_none=True)
        with self.precision.math():   # the backward pass as training runs it
            loss.backward()
        self.opt.step()
        return float(loss)


def training_step(device: torch.device, smoke: bool, work: Path, p: dict) -> dict:
    size = p["train_size"]
    torch.manual_seed(0)
    trainable = "conv5" if p["backbone"] == "vgg16" else "full"
    model0 = build_model(ModelConfig(backbone=p["backbone"], num_clusters=p["clusters"],
                                     trainable_from=trainable, image_size=size))
    files = write_jpegs(work / "tuple", 23, size, seed=1)
    init_netvlad(model0, files[:8], size)
    images = tuple_images(files, size)
    out = {}
    for method in ("netvlad", "sfrs"):
        if method == "netvlad":
            cfg = TrainConfig(method="baseline", loss="triplet", backbone=p["backbone"]).validate()
            batch, layout = images[:12], [(10, 0)]
        else:
            cfg = TrainConfig(method="sfrs", loss="sare_ind", generation=1, backbone=p["backbone"]).validate()
            batch, layout = images[:22], [(10, 10)]
        for name in ("fp32", "bf16"):
            precision = resolve_precision(name, device)
            model = copy.deepcopy(model0).to(device).train()
            teacher = None
            if method == "sfrs":
                teacher = copy.deepcopy(model0).to(device).eval().requires_grad_(False)
            opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=1e-3, momentum=0.9)
            step = TrainStep(cfg, model, teacher, opt, batch, layout, precision, device)
            measured(device, step)   # warm-up
            losses, secs = [], []
            for _ in range(max(p["rounds"], 2)):
                loss, seconds, driver, allocator = measured(device, step)
                losses.append(loss)
                secs.append(seconds)
            if not np.isfinite(losses).all():
                raise RuntimeError(f"{method} {name}: non-finite loss {losses}")
            out[f"{method} {name}"] = {"images": len(batch), "s_per_step": round(float(np.median(secs)), 4),
                                       "loss": round(losses[-1], 6), "driver_peak_mib": driver,
                                       "torch_peak_reserved_mib": allocator}
    return {"backbone": p["backbone"], "size": list(size), "rows": out}


def retrieval(device: torch.device, smoke: bool, p: dict) -> dict:
    import faiss

    rng = np.random.default_rng(0)
    db = rng.standard_normal((p["db"], p["dim"]), dtype=np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[rng.integers(0, p["db"], p["queries"])] + 0.5 * rng.standard_normal((p["queries"], p["dim"]),
                                                                             dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    (cpu_d, cpu_i), cpu_s, _, _ = measured(torch.device("cpu"), lambda: search(db, q, p["k"], gpu=None))
    out = {"db": p["db"], "queries": p["queries"], "dim": p["dim"], "k": p["k"], "cpu_s": round(cpu_s, 3)}
    if faiss.get_num_gpus() > 0 and device.type == "cuda":
        search(db[:100], q[:10], 5, gpu=device.index or 0)   # warm-up: CUDA context, cuBLAS
        (other_d, other_i), gpu_s, driver, _ = measured(device, lambda: search(db, q, p["k"],
                                                                               gpu=device.index or 0))
        out.update(gpu_s=round(gpu_s, 3), driver_peak_mib=driver, compared="faiss GPU vs faiss CPU")
    else:   # no GPU: the CPU search against a brute-force restatement (the comparison's code path)
        dense = ((q[:, None, :].astype(np.float64) - db[None].astype(np.float64)) ** 2).sum(-1)
        other_i = np.argsort(dense, axis=1, kind="stable")[:, :p["k"]]
        other_d = np.take_along_axis(dense, other_i, 1).astype(np.float32)
        out["compared"] = "faiss CPU vs float64 brute force (no GPU)"
    same = (cpu_i == other_i).all(axis=1)
    # a swapped pair of neighbours is a tie when their distances agree to float32 rounding
    ties = np.abs(np.sort(cpu_d, 1) - np.sort(other_d, 1)).max() if other_d.size else 0.0
    out.update(rows_identical=round(float(same.mean()), 6), max_distance_diff=float(ties),
               differing_rows_explained_by_ties=bool(ties < 1e-4))
    if not out["differing_rows_explained_by_ties"]:
        raise RuntimeError(f"top-k differ beyond ties: {out}")
    return out


def markdown(results: dict) -> str:
    seen = results["sections"]["versions"]["result"] or {}
    lines = ["# vpr GPU check", "", f"Machine: {seen.get('gpu', 'no GPU')}; {seen.get('report', '?')}",
             f"Mode: {results['mode']}; total {results['total_s']:.0f} s.", "",
             "| section | status | seconds |", "|---|---|---|"]
    for name, sec in results["sections"].items():
        lines.append(f"| {name} | {'ok' if sec['ok'] else 'FAILED: ' + sec['error'].splitlines()[-1]} "
                     f"| {sec['seconds']:.1f} |")
    ext = results["sections"].get("extraction", {}).get("result")
    if ext:
        lines += ["", f"## Extraction: {ext['backbone']} {ext['size'][0]}x{ext['size'][1]}, "
                  f"{ext['images']} JPEGs (decode included), batch {ext['batch']}, {ext['workers']} loader "
                  "workers", "", "| path | images/s | x plain | cosine to vpr fp32 (min) | driver peak MiB "
                  "| torch peak MiB |", "|---|---|---|---|---|---|"]
        for name, r in ext["rows"].items():
            lines.append(f"| {name} | {r['images_per_s']} | {r['x_plain']} | {r['cosine_to_vpr_fp32_min']} | "
                         f"{r['driver_peak_mib']} | {r['torch_peak_reserved_mib']} |")
    train = results["sections"].get("training step", {}).get("result")
    if train:
        lines += ["", f"## Training step: {train['backbone']} {train['size'][0]}x{train['size'][1]}", "",
                  "| objective, precision | images | s/step | loss | driver peak MiB | torch peak MiB |",
                  "|---|---|---|---|---|---|"]
        for name, r in train["rows"].items():
            lines.append(f"| {name} | {r['images']} | {r['s_per_step']} | {r['loss']} | "
                         f"{r['driver_peak_mib']} | {r['torch_peak_reserved_mib']} |")
    ret = results["sections"].get("retrieval", {}).get("result")
    if ret:
        gpu = f", GPU {ret['gpu_s']} s (driver peak {ret['driver_peak_mib']} MiB)" if "gpu_s" in ret else ""
        lines += ["", f"## Retrieval: {ret['db']} db x {ret['queries']} queries, dim {ret['dim']}, "
                  f"k {ret['k']}", "", f"{ret['compared']}: rows identical {ret['rows_identical']}, max "
                  f"distance difference {ret['max_distance_diff']:.2e}; CPU {ret['cpu_s']} s{gpu}"]
    fails = results["sections"].get("fail loudly", {}).get("result")
    if fails:
        lines += ["", "## Fail loudly", ""]
        lines += [f"- {case}: exit {r['exit']} in {r['seconds']} s: `{r['message']}`"
                  for case, r in fails.items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out",
                        help="folder of gpu_check.json and gpu_check.md (default: $OUT, else "
                             "./gpu_check_out)")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny sizes on the CPU: runs every section's code, measures nothing useful")
    args = parser.parse_args()
    smoke = args.cpu_smoke
    params = SMOKE if smoke else FULL
    device = torch.device("cpu") if smoke else torch.device("cuda", 0) if torch.cuda.is_available() else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"mode": "cpu-smoke" if smoke else "gpu", "sections": {}}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sections = {
            "versions": lambda: versions(device or torch.device("cpu"), smoke),
            "fail loudly": lambda: fail_loudly(device, smoke, work),
            "extraction": lambda: extraction(device, smoke, work, params),
            "training step": lambda: training_step(device, smoke, work, params),
            "retrieval": lambda: retrieval(device, smoke, params),
        }
        for name, run in sections.items():
            t0 = time.perf_counter()
            print(f"== {name}", flush=True)
            try:
                if device is None and name != "versions":
                    raise RuntimeError("skipped: no usable GPU (see versions)")
                result, error = run(), None
            except Exception:
                result, error = None, traceback.format_exc()
                print(error, file=sys.stderr, flush=True)
            sec = {"ok": error is None, "seconds": round(time.perf_counter() - t0, 1), "result": result}
            if error:
                sec["error"] = error.strip()
            results["sections"][name] = sec
            print(json.dumps(result, indent=1, default=str) if result is not None else "FAILED", flush=True)
    results["total_s"] = time.perf_counter() - t_start
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "gpu_check.md").write_text(markdown(results))
    print(f"\nwrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} ({results['total_s']:.0f} s)")
    return 0 if all(s["ok"] for s in results["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
