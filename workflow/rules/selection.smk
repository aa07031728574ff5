# evaluate.every_checkpoint (off by default: it multiplies the evaluation cost by the number of epochs):
# every epoch checkpoint of every trained method (SFRS: of every generation) gets its own PCA-whitening,
# is evaluated on every test set, and `vpr selection` reports validation against test per checkpoint
# (results/selection/<method>.csv, .md, .png). `vpr train` keeps every epoch's checkpoint in its run
# directory (checkpoint_e<E>.pth; SFRS checkpoint_g<G>_e<E>.pth); those files are not declared outputs of
# the training rules, so these jobs wait for the run's last.pth, written after all of them. The input
# functions are in common.smk.

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
        "vpr extract --checkpoint {params.checkpoint:q} --index {input.index:q} --out {output:q} "
        "--batch-size {params.batch} --workers {params.workers} {params.precision} {params.device} > {log:q} 2>&1"


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
        "vpr fit-pca --features {input:q} --out {output:q} --dim {params.dim} --samples {params.samples} "
        "{params.whiten} > {log:q} 2>&1"


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
        "vpr extract --checkpoint {params.checkpoint:q} --pca {input.pca:q} --index {input.index:q} --out {output:q} "
        "--batch-size {params.batch} --workers {params.workers} {params.precision} {params.device} > {log:q} 2>&1"


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
        "vpr evaluate --index {input.index:q} --features {input.features:q} --out {output.recall:q} "
        "--rankings {output.rankings:q} --recall-at {params.ns} > {log:q} 2>&1"


rule selection_report:
    input:
        logs=lambda wc: list(training_logs(wc.method).values()),
        recall=lambda wc: list(selection_recalls(wc.method).values()),
        rankings=lambda wc: [p.replace("_recall.csv", "_rankings.h5") for p in selection_recalls(wc.method).values()],
        selected=f"{RESULTS}/models/{{method}}.pth",
    output:
        csv=f"{RESULTS}/selection/{{method}}.csv",
        md=report(f"{RESULTS}/selection/{{method}}.md", caption="../report/selection.rst",
                  category="Model selection", labels={"method": "{method}", "figure": "table"}),
        png=report(f"{RESULTS}/selection/{{method}}.png", caption="../report/selection.rst",
                   category="Model selection", labels={"method": "{method}", "figure": "curves"}),
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
        "vpr selection --method {wildcards.method:q} {params.logs} {params.recall} --selected {input.selected:q} "
        "--out-csv {output.csv:q} --out-md {output.md:q} --out-plot {output.png:q} > {log:q} 2>&1"
