# evaluate.every_checkpoint (off by default: it multiplies the evaluation cost by the number of epochs):
# every epoch checkpoint of every trained method (SFRS: of every generation) gets its own PCA-whitening,
# is evaluated on every test set, and `vpr selection` reports validation against test per checkpoint
# (results/selection/<method>.csv, .md, .png). `vpr train` keeps every epoch's checkpoint in its run
# directory (checkpoint_e<E>.pth; SFRS checkpoint_g<G>_e<E>.pth); those files are not declared outputs of
# the training rules, so these jobs wait for the run's last.pth, written after all of them.

from vpr.selection import EVERY_CHECKPOINT_DEFAULT

EVERY_CHECKPOINT = config["evaluate"].get("every_checkpoint", EVERY_CHECKPOINT_DEFAULT)


def run_epochs(method, generation):
    """The epochs of one training run: the method's option, else training's, else `vpr train`'s default."""
    options = {**config["training"], **config["methods"][method]}
    key = "gen0_epochs" if method == "sfrs" and generation == 0 else "epochs"
    return int(options.get(key, getattr(TrainConfig(), key)))


def run_dir(method, generation):
    return f"{RESULTS}/train/sfrs/gen{generation}" if method == "sfrs" else f"{RESULTS}/train/{method}"


def epoch_checkpoints(method):
    """(generation, epoch, checkpoint name) of every epoch checkpoint of a trained method."""
    generations = range(sfrs_generations()) if method == "sfrs" else [0]
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


rule extract_train_checkpoint:
    input:
        run=lambda wc: checkpoint_source(wc)[0],
        index=index_file(TRAIN_SET) if TRAIN_SET else [],
    output:
        temp(f"{checkpoint_folder('{method}', '{ckpt}')}/_train.h5"),
    wildcard_constraints:
        method=alternatives(TRAINED),
        ckpt=r"(g\d+_)?e\d+",
    params:
        checkpoint=lambda wc: checkpoint_source(wc)[1],
        batch=config["evaluate"]["batch_size"],
        workers=config["evaluate"]["workers"],
        precision=extract_precision(),
        device=lambda wc, resources: device_flag(resources),
    threads: 2
    resources:
        gpu=1 if config["use_gpu"] else 0,
    log:
        f"{RESULTS}/logs/checkpoints/{{method}}_{{ckpt}}__train.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr extract --checkpoint {params.checkpoint:q} --index {input.index} --out {output} "
        "--batch-size {params.batch} --workers {params.workers} {params.precision} {params.device} > {log} 2>&1"


rule fit_pca_checkpoint:
    input:
        f"{checkpoint_folder('{method}', '{ckpt}')}/_train.h5",
    output:
        f"{checkpoint_folder('{method}', '{ckpt}')}/pca.h5",
    wildcard_constraints:
        method=alternatives(TRAINED),
        ckpt=r"(g\d+_)?e\d+",
    params:
        dim=lambda wc: config["pca"]["dim"],
        samples=lambda wc: config["pca"]["samples"],
        whiten=lambda wc: "" if config["pca"]["whiten"] else "--no-whiten",
    log:
        f"{RESULTS}/logs/checkpoints/{{method}}_{{ckpt}}_pca.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr fit-pca --features {input} --out {output} --dim {params.dim} --samples {params.samples} "
        "{params.whiten} > {log} 2>&1"


rule extract_test_checkpoint:
    input:
        run=lambda wc: checkpoint_source(wc)[0],
        index=lambda wc: index_file(TEST_SETS[wc.test_set]),
        pca=f"{checkpoint_folder('{method}', '{ckpt}')}/pca.h5",
    output:
        temp(f"{checkpoint_folder('{method}', '{ckpt}')}/{{test_set}}.h5"),
    wildcard_constraints:
        method=alternatives(TRAINED),
        ckpt=r"(g\d+_)?e\d+",
        test_set=alternatives(TEST_SETS),
    params:
        checkpoint=lambda wc: checkpoint_source(wc)[1],
        batch=config["evaluate"]["batch_size"],
        workers=config["evaluate"]["workers"],
        precision=extract_precision(),
        device=lambda wc, resources: device_flag(resources),
    threads: 2
    resources:
        gpu=1 if config["use_gpu"] else 0,
    log:
        f"{RESULTS}/logs/checkpoints/{{method}}_{{ckpt}}_{{test_set}}_extract.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr extract --checkpoint {params.checkpoint:q} --pca {input.pca} --index {input.index} --out {output} "
        "--batch-size {params.batch} --workers {params.workers} {params.precision} {params.device} > {log} 2>&1"


rule evaluate_checkpoint:
    input:
        index=lambda wc: index_file(TEST_SETS[wc.test_set]),
        features=f"{checkpoint_folder('{method}', '{ckpt}')}/{{test_set}}.h5",
    output:
        recall=f"{checkpoint_folder('{method}', '{ckpt}')}/{{test_set}}_recall.csv",
        rankings=f"{checkpoint_folder('{method}', '{ckpt}')}/{{test_set}}_rankings.h5",
    wildcard_constraints:
        method=alternatives(TRAINED),
        ckpt=r"(g\d+_)?e\d+",
        test_set=alternatives(TEST_SETS),
    params:
        ns=" ".join(str(n) for n in config["evaluate"]["recall_at"]),
    log:
        f"{RESULTS}/logs/checkpoints/{{method}}_{{ckpt}}_{{test_set}}_evaluate.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr evaluate --index {input.index} --features {input.features} --out {output.recall} "
        "--rankings {output.rankings} --recall-at {params.ns} > {log} 2>&1"


def selection_recalls(method):
    return {(g, e, t): f"{checkpoint_folder(method, name)}/{t}_recall.csv"
            for g, e, name in epoch_checkpoints(method) for t in TEST_SETS}


rule selection_report:
    input:
        logs=lambda wc: list(training_logs(wc.method).values()),
        recall=lambda wc: list(selection_recalls(wc.method).values()),
        rankings=lambda wc: [p.replace("_recall.csv", "_rankings.h5") for p in selection_recalls(wc.method).values()],
        selected=f"{RESULTS}/models/{{method}}.pth",
    output:
        csv=f"{RESULTS}/selection/{{method}}.csv",
        md=report(f"{RESULTS}/selection/{{method}}.md", category="Model selection",
                  labels={"method": "{method}", "figure": "table"}),
        png=report(f"{RESULTS}/selection/{{method}}.png", category="Model selection",
                   labels={"method": "{method}", "figure": "curves"}),
    wildcard_constraints:
        method=alternatives(TRAINED),
    params:
        logs=lambda wc, input: " ".join(f"--training-log {shlex.quote(p)}" for p in input.logs),
        recall=lambda wc: " ".join(f"--recall {g} {e} {t} {shlex.quote(p)}"
                                   for (g, e, t), p in selection_recalls(wc.method).items()),
    log:
        f"{RESULTS}/logs/selection/{{method}}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr selection --method {wildcards.method} {params.logs} {params.recall} --selected {input.selected} "
        "--out-csv {output.csv} --out-md {output.md} --out-plot {output.png} > {log} 2>&1"
