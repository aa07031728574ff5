# Helpers shared by all rules: data locations, targets, training flags and the torchrun launcher.
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError

RESULTS = "results"
BASELINES = ("netvlad", "sare_ind", "sare_joint")
# Test set name -> the index split it is evaluated on.
TEST_SPLITS = {"pitts30k": "pitts30k_test", "pitts250k": "pitts250k_test", "tokyo": "tokyo247"}
# Index split -> (format, data set, .mat file name).
SPLITS = {
    "pitts30k_train": ("pitts", "pitts", "pitts30k_train.mat"),
    "pitts30k_val": ("pitts", "pitts", "pitts30k_val.mat"),
    "pitts30k_test": ("pitts", "pitts", "pitts30k_test.mat"),
    "pitts250k_test": ("pitts", "pitts", "pitts250k_test.mat"),
    "tokyo247": ("tokyo247", "tokyo", "tokyo247.mat"),
}
TRAIN_SPLIT, VAL_SPLIT = "pitts30k_train", "pitts30k_val"
HOW_TO_GET_DATA = (
    "Download the NetVLAD .mat split files and the Pittsburgh / Tokyo 24/7 images and lay them out as in "
    "README.md, section 'Data' (or point data.pitts_root / data.tokyo_root in the config at them); for a "
    "run without downloads use config/demo.yaml, which generates a synthetic data set."
)

TRAINED = list(config["methods"])
# Every evaluated model: the trained methods, and the untrained starting point when asked for.
METHODS = (["untrained"] if config.get("untrained", False) else []) + TRAINED
TEST_SETS = list(config["test_sets"])
SYNTH = config["data"].get("synth")


def data_root(dataset):
    """The raw-data root of 'pitts' or 'tokyo' (the folder holding the .mat files)."""
    if SYNTH:
        return f"{SYNTH['out']}/{dataset}/raw"
    return config["data"][f"{dataset}_root"]


def mat_file(split):
    _, dataset, name = SPLITS[split]
    return f"{data_root(dataset)}/{name}"


def needed_splits():
    return [TRAIN_SPLIT, VAL_SPLIT, *(TEST_SPLITS[t] for t in TEST_SETS)]


def check_inputs_exist():
    """Fail at start-up, naming every missing raw file and how to get it (not as a missing-input error)."""
    missing = [] if SYNTH else [mat_file(s) for s in needed_splits() if not Path(mat_file(s)).is_file()]
    for key in ("trunk", "centers"):
        path = config["model"].get(key)
        if path and not Path(path).is_file():
            missing.append(path)
    if missing:
        listing = "\n  ".join(missing)
        raise WorkflowError(f"missing input data:\n  {listing}\n{HOW_TO_GET_DATA}")


check_inputs_exist()


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


def train_flags(method, generation=None):
    """Flags of `vpr train` for one method: shared training options, then the method's own."""
    options = {k: config["model"][k] for k in MODEL_KEYS}
    options.update(config["train"])
    own = {k: v for k, v in config["methods"][method].items() if k != "generations"}
    options.update(own)
    if method == "sfrs":
        options.update(method="sfrs", generation=generation)
    return cli_flags(options)


def sfrs_generations():
    return int(config["methods"]["sfrs"].get("generations", 4))


def trunk_flag():
    return f"--trunk {shlex.quote(config['model']['trunk'])}" if config["model"].get("trunk") else ""


def centers_file():
    return config["model"].get("centers") or f"{RESULTS}/centers.h5"


def processes_per_node(resources):
    """Worker processes per node: the GPUs of one node, else the `cpu_procs` resource (default 1)."""
    nodes = max(int(resources.get("nodes", 1) or 1), 1)
    gres = str(resources.get("gres", "") or "")
    if gres.startswith("gpu"):
        return int(gres.split(":")[-1])          # gres is per node: gpu:N or gpu:TYPE:N
    gpus = int(resources.get("gpu", 0) or 0)     # --gpus is per job
    if gpus:
        return max(gpus // nodes, 1)
    return int(resources.get("cpu_procs", 1) or 1)


def torchrun(resources):
    """The launcher of a GPU rule: one torchrun per node, the process count read from the resources."""
    nodes = max(int(resources.get("nodes", 1) or 1), 1)
    per_node = processes_per_node(resources)
    if nodes == 1:
        return f"torchrun --standalone --nnodes=1 --nproc-per-node={per_node} -m vpr.cli"
    # Several nodes: the job (resources mpi='srun', tasks=nodes) starts one torchrun per node, joined by a
    # c10d rendezvous on the first node of the allocation. The Slurm plugin's job step runs the rule
    # without SLURM_JOB_NODELIST (it keeps only the job ID): then squeue names the nodes.
    nodelist = '${SLURM_JOB_NODELIST:-$(squeue -h -o %N -j "$SLURM_JOB_ID")}'
    head = f'$(scontrol show hostnames "{nodelist}" | head -n 1)'
    return (f"srun --nodes={nodes} --ntasks-per-node=1 --kill-on-bad-exit=1 torchrun --nnodes={nodes} "
            f"--nproc-per-node={per_node} --rdzv-backend=c10d --rdzv-endpoint={head}:29500 "
            f"--rdzv-id=$SLURM_JOB_ID -m vpr.cli")


def model_file(method):
    if method == "untrained":
        return f"{RESULTS}/train/untrained/initial.pth"
    return f"{RESULTS}/models/{method}.pth"


def recall_file(method, test_set):
    return f"{RESULTS}/{method}/{test_set}_recall.csv"


def all_targets():
    return [
        *(recall_file(m, t) for m in METHODS for t in TEST_SETS),
        f"{RESULTS}/table.md",
        f"{RESULTS}/table.csv",
        *(f"{RESULTS}/plots/recall_{t}.png" for t in TEST_SETS),
        *(f"{RESULTS}/plots/training_{m}.png" for m in TRAINED),
        *(f"{RESULTS}/plots/examples_{t}.png" for t in TEST_SETS),
    ]


def teacher_checkpoint(wildcards):
    """SFRS generation g >= 1 learns from the last checkpoint of generation g - 1."""
    g = int(wildcards.generation)
    return [f"{RESULTS}/train/sfrs/gen{g - 1}/last.pth"] if g >= 1 else []


def selection_candidates(wildcards):
    """The checkpoints `vpr select` chooses from: every SFRS generation, or the one baseline run."""
    if wildcards.method == "sfrs":
        return [f"{RESULTS}/train/sfrs/gen{g}/model_best.pth" for g in range(sfrs_generations())]
    return [f"{RESULTS}/train/{wildcards.method}/model_best.pth"]


def training_logs(method):
    """Label -> log.csv of the runs of one method (every SFRS generation)."""
    if method == "sfrs":
        return {f"sfrs g{g}": f"{RESULTS}/train/sfrs/gen{g}/log.csv" for g in range(sfrs_generations())}
    return {method: f"{RESULTS}/train/{method}/log.csv"}
