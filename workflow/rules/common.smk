# Helpers shared by all rules: data sets, models, inputs and how to get them, training flags, torchrun.
import csv
import os
import re
import shlex
import time

import h5py

from vpr.devices import GpuRequestError
from vpr.logged_warnings import logs_written_since, warnings_summary
from vpr.selection import EVERY_CHECKPOINT_DEFAULT
from vpr.train.config import TrainConfig
from vpr.train.generations import RUN_DIR as SFRS_RUN_DIR, used_options
from vpr.whitening import count_problem

# Every output of this configuration goes under its `results:` folder (config/config.yaml: results/, so the
# paper's results/<model>/<test set>_recall.csv; each other shipped configuration has its own folder).
RESULTS = os.path.normpath(config.get("results", "results"))
BASELINES = ("netvlad", "sare_ind", "sare_joint")
# `vpr train` refuses a run directory whose resume state was made from other inputs or options unless told
# to restart; the workflow restarts, because Snakemake reruns a training job only when it decided to.
TRAIN_ON_MISMATCH = "--on-mismatch restart"
# Where each format keeps its images under the data-set root (what `vpr index` checks).
IMAGE_FOLDERS = {"pitts": "Pittsburgh", "tokyo247": "tokyo247", "tokyotm": "tokyoTM", "csv": "", "folders": ""}
IMAGE_CONTENT = {
    "pitts": "the Pittsburgh 250k images (Pittsburgh/images/<dbImageFn>, Pittsburgh/queries/<qImageFn>: "
             "the queries_real folder renamed)",
    "tokyo247": "the Tokyo 24/7 images (tokyo247/images/ with the .png database, tokyo247/query/)",
    "tokyotm": "the Tokyo Time Machine images (tokyoTM/images/)",
    "csv": "the images listed in the CSV, at their paths relative to this folder",
    "folders": "the database and query folders of images named @<utm_east>@<utm_north>@...@.jpg "
               "(the layout of VPR-datasets-downloader)",
}
DATA_PAGE = "https://www.di.ens.fr/willow/research/netvlad/"

DATASETS = config["datasets"]
TRAIN_SET, VAL_SET = config.get("train"), config.get("val")
TRAINED = list(config.get("methods") or {})
EXTERNAL = config.get("external") or {}
TEST_OFF_THE_SHELF = config.get("off_the_shelf", False)
# Every evaluated model: the off-the-shelf starting point when asked for, the trained methods, the external ones.
METHODS = ([OFF_THE_SHELF] if TEST_OFF_THE_SHELF else []) + TRAINED + list(EXTERNAL)
TEST_SETS = config["test_sets"]              # test-set name -> data set
SYNTH = config.get("synth")
EXAMPLES = config.get("examples", METHODS[-1])


def alternatives(names):
    """A wildcard constraint matching exactly these names."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def index_file(dataset):
    return f"{RESULTS}/index/{dataset}.h5"


def split_file(dataset):
    """The split's .mat or CSV file; None for the folders format (the image names hold the positions)."""
    entry = DATASETS[dataset]
    return None if entry["format"] == "folders" else entry["csv"] if entry["format"] == "csv" else entry["mat"]


def index_source_flags(dataset):
    """Where `vpr index` reads the split from: --mat, --csv, or the folders format's two folders."""
    entry = DATASETS[dataset]
    if entry["format"] == "folders":
        root = Path(entry["root"])
        return " ".join(f"--{key} {shlex.quote(str(root / entry.get(key, key)))}"
                        for key in ("database", "queries"))
    return f"--{'csv' if entry['format'] == 'csv' else 'mat'} {shlex.quote(split_file(dataset))}"


def image_folder(dataset):
    entry = DATASETS[dataset]
    sub = IMAGE_FOLDERS[entry["format"]]
    return str(Path(entry["root"]) / sub) if sub else entry["root"]


def index_split(dataset):
    """--split of `vpr index`: as configured; a CSV is train/val when it is the training/validation set."""
    entry = DATASETS[dataset]
    if "split" in entry:
        return entry["split"]
    if entry["format"] in ("csv", "folders"):
        return "train" if dataset == TRAIN_SET else "val" if dataset == VAL_SET else "test"
    return None


def fits_pca(method):
    """Whether the model's PCA-whitening is fitted here (trained models; external ones without their own)."""
    return method not in EXTERNAL or not EXTERNAL[method]["own_pca"]


def model_file(method):
    if method == OFF_THE_SHELF:
        return f"{RESULTS}/train/{OFF_THE_SHELF}/initial.pth"
    if method in EXTERNAL:
        return EXTERNAL[method]["checkpoint"]
    return f"{RESULTS}/models/{method}.pth"


def checksum_flag(method):
    """`vpr extract --checkpoint-sha256`: an external model's configured checksum, checked by every job that
    uses the file (downloaded or put in place by hand)."""
    digest = EXTERNAL[method].get("sha256") if method in EXTERNAL else None
    return f"--checkpoint-sha256 {digest}" if digest else ""


def recall_file(method, test_set):
    return f"{RESULTS}/{method}/{test_set}_recall.csv"


def rankings_file(method, test_set):
    return f"{RESULTS}/{method}/{test_set}_rankings.h5"


def table_baseline():
    """`vpr table --compare-to`: the paired test of every model against the off-the-shelf one, when tested."""
    return f"--compare-to {OFF_THE_SHELF}" if OFF_THE_SHELF in METHODS else ""


def used_datasets():
    names = [TRAIN_SET, VAL_SET] if (TRAINED or TEST_OFF_THE_SHELF) else []
    if any(fits_pca(m) for m in METHODS):
        names.append(TRAIN_SET)
    names += list(TEST_SETS.values())
    return list(dict.fromkeys(n for n in names if n))


def training_descriptor_count():
    """How many descriptors `vpr fit-pca` would sample from the training split, or None when that cannot be
    known yet: from its index file when written, else at most the rows of its CSV (queries without a training
    positive are dropped when indexing)."""
    index = Path(index_file(TRAIN_SET))
    if index.is_file():
        try:
            with h5py.File(index, "r") as f:
                count = len(f["db/path"]) + len(f["query/path"])
        except (OSError, KeyError):
            return None
    elif DATASETS[TRAIN_SET]["format"] == "csv" and Path(split_file(TRAIN_SET)).is_file():
        with open(split_file(TRAIN_SET), newline="", encoding="utf-8-sig") as f:
            count = max(sum(1 for row in csv.reader(f) if any(c.strip() for c in row)) - 1, 0)
    else:
        return None
    return min(count, int(config["pca"]["samples"]))


def check_pca_support():
    """Refuse at start-up a PCA-whitening that the training split cannot support (the rule of `vpr fit-pca`,
    vpr.whitening), when the number of training images is known already."""
    if not TRAIN_SET or not any(fits_pca(m) for m in METHODS) or not config["pca"]["whiten"]:
        return
    n = training_descriptor_count()
    if n is None or n < 2:
        return
    problem = count_problem(n, min(int(config["pca"]["dim"]), n - 1), True)
    if problem:
        config_error(config_source(), f"pca.dim: {problem} (training split {TRAIN_SET})")


check_pca_support()


# ---------------------------------------------------------------------------------------------------------
# Inputs from outside the workflow and how each is obtained when it is missing.

def synth_outputs():
    """What `vpr synth` writes under its folder: the .mat files, the image folders, the truth file."""
    if not SYNTH:
        return {}
    out = Path(SYNTH["out"])
    pitts, tokyo = out / "pitts" / "raw", out / "tokyo" / "raw"
    files = [pitts / f"pitts30k_{s}.mat" for s in ("train", "val", "test")] + [pitts / "pitts250k_test.mat"]
    files += [tokyo / "tokyo247.mat", tokyo / "tokyoTM_train.mat", tokyo / "tokyoTM_val.mat"]
    folders = [pitts / "Pittsburgh", tokyo / "tokyo247", tokyo / "tokyoTM"]
    return {"files": [str(f) for f in files], "folders": [str(f) for f in folders],
            "truth": str(out / "synth_truth.json")}


def needed_inputs():
    """Every file or folder from outside that this configuration uses -> what it is (for messages)."""
    needed = {}
    for name in used_datasets():
        entry = DATASETS[name]
        if split_file(name) is not None:
            needed.setdefault(split_file(name), f"the {entry['format']} split file of data set {name}")
        needed.setdefault(image_folder(name), IMAGE_CONTENT[entry["format"]])
    if TRAINED or TEST_OFF_THE_SHELF:
        if config["model"].get("trunk"):
            needed.setdefault(config["model"]["trunk"], "the pretrained trunk weights (model.trunk)")
        if config["model"].get("centers"):
            needed.setdefault(config["model"]["centers"], "the NetVLAD centers file (model.centers)")
    for name, entry in EXTERNAL.items():
        needed.setdefault(entry["checkpoint"], f"the model file of external model {name}")
    return needed


# The public data sets' own files: their access is described on the NetVLAD project page.
DATA_FILES = {p for n in DATASETS if DATASETS[n]["format"] not in ("csv", "folders")
              for p in (split_file(n), image_folder(n))}


def download_sources():
    """Downloaded file -> (url, sha256), from `downloads` and the external models with a URL."""
    sources = {path: (d["url"], d.get("sha256")) for path, d in (config.get("downloads") or {}).items()}
    for entry in EXTERNAL.values():
        if entry.get("url"):
            sources[entry["checkpoint"]] = (entry["url"], entry.get("sha256"))
    return sources


def archive_members():
    """File taken out of an archive -> the archive."""
    return {member: archive for archive, d in (config.get("downloads") or {}).items()
            for member in d.get("unpack", [])}


def inside(path, folder):
    return Path(folder) in Path(path).parents


SYNTH_MADE = {*synth_outputs().get("files", []), *synth_outputs().get("folders", [])}
# Only what is missing now is given a rule: a file already there is never re-fetched, and a job never
# stands for (and so never deletes, e.g. under --forceall) data that a person put in place.
MISSING = {p: what for p, what in needed_inputs().items() if p not in SYNTH_MADE and not Path(p).exists()}
TO_UNPACK = {p: a for p, a in archive_members().items() if p in MISSING}
TO_DOWNLOAD = {p: s for p, s in download_sources().items()
               if (p in MISSING or p in TO_UNPACK.values()) and not Path(p).exists()}
BY_HAND = {p: what for p, what in MISSING.items() if p not in TO_DOWNLOAD and p not in TO_UNPACK
           and not any(inside(p, q) for q in MISSING if q != p)}


def by_hand_instruction(path):
    """(what, page) of a file or folder a person must provide: from `manual`, else from its role."""
    entry = (config.get("manual") or {}).get(path)
    if entry:
        return entry["what"], entry.get("page")
    return BY_HAND[path], (DATA_PAGE if path in DATA_FILES else "docs/data.md")


def missing_inputs_summary(still_missing=False):
    """What is missing and how each is obtained; with still_missing, only what is still missing now."""
    keep = (lambda p: not Path(p).exists()) if still_missing else (lambda p: True)
    fetched = [f"    {p}  <- {url}" for p, (url, _) in TO_DOWNLOAD.items() if keep(p)]
    fetched += [f"    {p}  <- {a}" for p, a in TO_UNPACK.items() if keep(p)]
    by_hand = [p for p in BY_HAND if keep(p)]
    count = sum(keep(p) for p in MISSING)
    if not count:
        return ""
    lines = [f"vpr workflow: {count} input(s) of this configuration are not here yet."]
    if fetched:
        lines += ["  The workflow gets these itself (jobs download, unpack):", *fetched]
    if by_hand:
        lines.append("  A person must put these in place (the run stops at the first; jobs by_hand):")
        for path in by_hand:
            what, page = by_hand_instruction(path)
            lines.append(f"    {path}: {what}" + (f" (from {page})" if page else ""))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Training.

def cli_flags(options):
    """{'image_size': [480, 640], 'color_jitter': False} -> '--image-size 480 640 --color-jitter false'."""
    parts = []
    for key, value in options.items():
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):
            parts.append(f"{flag} {str(value).lower()}")
        elif isinstance(value, (list, tuple)):
            values = " ".join(shlex.quote(str(v)) for v in value)
            parts.append(f"{flag} {values}")
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


MODEL_KEYS = ("backbone", "num_clusters", "trainable_from", "image_size")


def shared_train_options():
    """The model and the shared training options: no method's own (the off-the-shelf model's flags)."""
    options = {k: config["model"][k] for k in MODEL_KEYS}
    options.update(config["training"])
    return options


def train_flags(method, generation=None):
    """Flags of `vpr train` for one method (SFRS: one generation): shared training options, then the
    method's own; only those the run uses (vpr/train/generations.py: no SFRS option for a baseline, an
    SFRS generation's own temperature), so an edit reruns only the jobs that read it."""
    if method == "sfrs":
        return cli_flags(sfrs_schedule(config, shared_train_options())[generation].options)
    return cli_flags(used_options({**shared_train_options(), **config["methods"][method]}))


def sfrs_generations():
    """The SFRS generations of this configuration, in order."""
    return list(sfrs_schedule(config))


def model_inputs(wildcards=None):
    """The centers file and, when configured, the pretrained trunk: inputs of cluster and training rules."""
    inputs = {"centers": centers_file()}
    if config["model"].get("trunk"):
        inputs["trunk"] = config["model"]["trunk"]
    return inputs


def trunk_flag(wildcards, input):
    return f"--trunk {shlex.quote(input.trunk)}" if "trunk" in input.keys() else ""


def centers_file():
    return config["model"].get("centers") or f"{RESULTS}/centers.h5"


def gpus_per_node(resources):
    """The GPUs of one node, from the one place a rule's resources give them.

    ``gres: gpu[:TYPE]:N`` is per node (N = 1 when left out); ``gpu: N`` (Slurm's --gpus) is per job, so
    only for one node. Both at once would submit ``--gres=... --gpus=...`` (the step then sees what the
    smaller asks), and ``gpu: N`` on several nodes leaves the split to Slurm: both are refused here, when the
    DAG is built (``snakemake -n`` included), not at submission.
    """
    nodes = max(int(resources.get("nodes", 1) or 1), 1)
    gpu = int(resources.get("gpu", 0) or 0)
    gres = [g for g in str(resources.get("gres", "") or "").split(",") if g.split(":")[0] == "gpu"]
    if gres and gpu:
        raise GpuRequestError(f"GPU resources given twice (gres: {gres[0]!r} and gpu: {gpu}); give them once: "
                              f"with gres set gpu: 0 in the same set-resources entry")
    if gres:
        count = gres[0].split(":")[-1]
        return int(count) if count.isdigit() else 1
    if gpu and nodes > 1:
        raise GpuRequestError(f"gpu: {gpu} on {nodes} nodes: Slurm does not promise an even split; ask for "
                              f"the GPUs of each node with gres: gpu:N (or gpu:TYPE:N) and gpu: 0")
    return gpu


def device_flag(resources):
    """`--device cuda` for the job of a GPU step when use_gpu is set (no GPU usable: the job stops at once), after
    checking its GPU request; nothing (auto) otherwise."""
    gpus = gpus_per_node(resources)
    if not config["use_gpu"]:
        return ""
    if not gpus:
        raise GpuRequestError("use_gpu is true but the resources of a GPU step ask for no GPU (gpu: 0 and no "
                              "gres: gpu:...)")
    return "--device cuda"


def processes_per_node(resources):
    """Worker processes per node: the GPUs of one node, else the `cpu_procs` resource (default 1)."""
    return gpus_per_node(resources) or int(resources.get("cpu_procs", 1) or 1)


# torchrun's rendezvous port on the first node: one per Slurm job, so that two jobs sharing a head node do
# not collide (ports 29500-39499).
RDZV_PORT = "$((29500 + SLURM_JOB_ID % 10000))"


def torchrun(resources):
    """The launcher of a GPU rule: one torchrun per node, the process count read from the resources."""
    nodes = max(int(resources.get("nodes", 1) or 1), 1)
    per_node = processes_per_node(resources)
    if nodes == 1:
        return f"torchrun --standalone --nnodes=1 --nproc-per-node={per_node} -m vpr.cli"
    # Several nodes: the job (resources mpi='srun', tasks=nodes) starts one torchrun per node, joined by a
    # c10d rendezvous on the first node of the allocation. The Slurm plugin's job step runs the rule
    # without SLURM_JOB_NODELIST (it keeps only the job ID): then squeue names the nodes. It drops the
    # SLURM_*/SRUN_* variables as well, so this srun states each node's CPUs and GPUs itself (else every
    # node's torchrun and its workers would share one CPU).
    nodelist = '${SLURM_JOB_NODELIST:-$(squeue -h -o %N -j "$SLURM_JOB_ID")}'
    head = f'$(scontrol show hostnames "{nodelist}" | head -n 1)'
    step = [f"--nodes={nodes}", "--ntasks-per-node=1"]
    if resources.get("cpus_per_task"):
        step.append(f"--cpus-per-task={int(resources['cpus_per_task'])}")
    if gpus_per_node(resources):
        step.append(f"--gres={resources['gres']}")
    return (f"srun {' '.join(step)} --kill-on-bad-exit=1 torchrun --nnodes={nodes} "
            f"--nproc-per-node={per_node} --rdzv-backend=c10d --rdzv-endpoint={head}:{RDZV_PORT} "
            f"--rdzv-id=$SLURM_JOB_ID -m vpr.cli")


def all_targets():
    return [
        f"{RESULTS}/config.yaml",
        *(recall_file(m, t) for m in METHODS for t in TEST_SETS),
        f"{RESULTS}/table.md",
        f"{RESULTS}/table.csv",
        *(f"{RESULTS}/plots/recall_{t}.png" for t in TEST_SETS),
        *(f"{RESULTS}/plots/training_{m}.png" for m in TRAINED),
        *(f"{RESULTS}/plots/examples_{t}.png" for t in TEST_SETS),
    ]


def teacher_checkpoint(wildcards):
    """SFRS generation g >= 1 learns from the last checkpoint of generation g - 1."""
    teacher = sfrs_schedule(config)[int(wildcards.generation)].teacher
    return [f"{RESULTS}/train/sfrs/{teacher}"] if teacher else []


def selection_candidates(wildcards):
    """The checkpoints `vpr select` chooses from: every SFRS generation, or the one baseline run."""
    if wildcards.method == "sfrs":
        return [f"{RESULTS}/train/sfrs/{gen.run_dir}/model_best.pth" for gen in sfrs_generations()]
    return [f"{RESULTS}/train/{wildcards.method}/model_best.pth"]


def training_logs(method):
    """Label -> log.csv of the runs of one method (every SFRS generation)."""
    if method == "sfrs":
        return {f"sfrs g{gen.number}": f"{RESULTS}/train/sfrs/{gen.run_dir}/log.csv"
                for gen in sfrs_generations()}
    return {method: f"{RESULTS}/train/{method}/log.csv"}


def step_logs(method, test_set):
    """The logs of every job whose output went into the numbers of `method` on `test_set` (for the table's
    footnotes): data, centers, training, selection, PCA, extraction and evaluation."""
    logs = [f"{RESULTS}/logs/synth.log"] if SYNTH else []
    logs.append(f"{RESULTS}/logs/index/{TEST_SETS[test_set]}.log")
    if method == OFF_THE_SHELF or method in TRAINED:
        logs += [f"{RESULTS}/logs/index/{d}.log" for d in (TRAIN_SET, VAL_SET)]
        if not config["model"].get("centers"):
            logs.append(f"{RESULTS}/logs/cluster.log")
    if method == OFF_THE_SHELF:
        logs.append(f"{RESULTS}/logs/train/{OFF_THE_SHELF}.log")
    elif method == "sfrs" and method in TRAINED:
        logs += [f"{RESULTS}/logs/train/sfrs_gen{gen.number}.log" for gen in sfrs_generations()]
    elif method in TRAINED:
        logs.append(f"{RESULTS}/logs/train/{method}.log")
    if method in TRAINED:
        logs.append(f"{RESULTS}/logs/select/{method}.log")
    if fits_pca(method):
        logs += [f"{RESULTS}/logs/index/{TRAIN_SET}.log", f"{RESULTS}/logs/extract/{method}__train.log",
                 f"{RESULTS}/logs/pca/{method}.log"]
    logs += [f"{RESULTS}/logs/extract/{method}_{test_set}.log",
             f"{RESULTS}/logs/evaluate/{method}_{test_set}.log"]
    return list(dict.fromkeys(logs))


# ---------------------------------------------------------------------------------------------------------
# Inputs of the rules.

def index_inputs(wildcards):
    """The split file and the image folder (by age ignored: adding images does not re-index)."""
    source, images = split_file(wildcards.dataset), image_folder(wildcards.dataset)
    inputs = {"images": ancient(images)}
    if source is not None and not (images in BY_HAND and inside(source, images)):   # else with the folder
        inputs["source"] = source
    return inputs


def training_inputs(wildcards=None):
    return {"train": index_file(TRAIN_SET), "val": index_file(VAL_SET), **model_inputs()}


def extract_precision():
    precision = config["evaluate"].get("precision")
    return f"--precision {precision}" if precision else ""


def extract_test_inputs(wildcards):
    inputs = {"model": model_file(wildcards.method), "index": index_file(TEST_SETS[wildcards.test_set])}
    if fits_pca(wildcards.method):
        inputs["pca"] = f"{RESULTS}/pca/{wildcards.method}.h5"
    return inputs


# Warnings that jobs of this run logged are repeated at the end, where a person looks (the jobs' logs
# hold them; the table footnotes the numbers they fed). Called by the Snakefile's onsuccess and onerror.
RUN_STARTED = time.time()


def repeat_job_warnings():
    print(warnings_summary(logs_written_since(f"{RESULTS}/logs", RUN_STARTED)), file=sys.stderr, end="")


# ---------------------------------------------------------------- evaluate.every_checkpoint (selection.smk)

EVERY_CHECKPOINT = config["evaluate"].get("every_checkpoint", EVERY_CHECKPOINT_DEFAULT)


def run_epochs(method, generation):
    """The epochs of one training run: the option its run uses (SFRS: the schedule's generation), else
    `vpr train`'s default."""
    if method == "sfrs":
        run = sfrs_generations()[generation]
        options, key = run.options, run.epochs_option
    else:
        options, key = {**config["training"], **config["methods"][method]}, "epochs"
    return int(options.get(key, getattr(TrainConfig(), key)))


def run_dir(method, generation):
    return f"{RESULTS}/train/sfrs/gen{generation}" if method == "sfrs" else f"{RESULTS}/train/{method}"


def epoch_checkpoints(method):
    """(generation, epoch, checkpoint name) of every epoch checkpoint of a trained method."""
    generations = range(len(sfrs_generations())) if method == "sfrs" else [0]
    return [(g, e, f"g{g}_e{e}" if method == "sfrs" else f"e{e}")
            for g in generations for e in range(run_epochs(method, g))]


def checkpoint_source(wildcards):
    """The run's last.pth (written after every epoch checkpoint) and the epoch checkpoint's path."""
    g, e = (int(x) for x in re.fullmatch(r"(?:g(\d+)_)?e(\d+)", wildcards.ckpt).groups(default="0"))
    folder = run_dir(wildcards.method, g)
    name = f"checkpoint_g{g}_e{e}.pth" if wildcards.method == "sfrs" else f"checkpoint_e{e}.pth"
    return f"{folder}/last.pth", f"{folder}/{name}"


def checkpoint_folder(method, ckpt):
    return f"{RESULTS}/checkpoints/{method}/{ckpt}"


def selection_targets():
    if not EVERY_CHECKPOINT:
        return []
    return [f"{RESULTS}/selection/{m}.{ext}" for m in TRAINED for ext in ("csv", "md", "png")]


def selection_recalls(method):
    return {(g, e, t): f"{checkpoint_folder(method, name)}/{t}_recall.csv"
            for g, e, name in epoch_checkpoints(method) for t in TEST_SETS}
