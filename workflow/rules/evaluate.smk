# Model -> PCA-whitening fitted on the training split -> descriptors of each test set -> Recall@N.


rule extract_train:
    input:
        model=lambda wc: model_file(wc.method),
        index=f"{RESULTS}/index/{TRAIN_SPLIT}.h5",
    output:
        temp(f"{RESULTS}/features/{{method}}/{TRAIN_SPLIT}.h5"),
    params:
        batch=config["evaluate"]["batch_size"],
        workers=config["evaluate"]["workers"],
    threads: 2
    resources:
        gpu=1 if config["use_gpu"] else 0,
    log:
        f"{RESULTS}/logs/extract/{{method}}_{TRAIN_SPLIT}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr extract --checkpoint {input.model} --index {input.index} --out {output} "
        "--batch-size {params.batch} --workers {params.workers} > {log} 2>&1"


rule fit_pca:
    input:
        f"{RESULTS}/features/{{method}}/{TRAIN_SPLIT}.h5",
    output:
        f"{RESULTS}/pca/{{method}}.h5",
    params:
        dim=config["pca"]["dim"],
        samples=config["pca"]["samples"],
        whiten="" if config["pca"]["whiten"] else "--no-whiten",
    log:
        f"{RESULTS}/logs/pca/{{method}}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr fit-pca --features {input} --out {output} --dim {params.dim} --samples {params.samples} "
        "{params.whiten} > {log} 2>&1"


rule extract_test:
    input:
        model=lambda wc: model_file(wc.method),
        pca=f"{RESULTS}/pca/{{method}}.h5",
        index=lambda wc: f"{RESULTS}/index/{TEST_SPLITS[wc.test_set]}.h5",
    output:
        f"{RESULTS}/features/{{method}}/{{test_set}}.h5",
    wildcard_constraints:
        test_set="|".join(TEST_SPLITS),
    params:
        batch=config["evaluate"]["batch_size"],
        workers=config["evaluate"]["workers"],
    threads: 2
    resources:
        gpu=1 if config["use_gpu"] else 0,
    log:
        f"{RESULTS}/logs/extract/{{method}}_{{test_set}}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr extract --checkpoint {input.model} --pca {input.pca} --index {input.index} --out {output} "
        "--batch-size {params.batch} --workers {params.workers} > {log} 2>&1"


rule evaluate:
    input:
        index=lambda wc: f"{RESULTS}/index/{TEST_SPLITS[wc.test_set]}.h5",
        features=f"{RESULTS}/features/{{method}}/{{test_set}}.h5",
    output:
        recall=f"{RESULTS}/{{method}}/{{test_set}}_recall.csv",
        rankings=f"{RESULTS}/{{method}}/{{test_set}}_rankings.h5",
    wildcard_constraints:
        test_set="|".join(TEST_SPLITS),
    params:
        ns=" ".join(str(n) for n in config["evaluate"]["recall_at"]),
    log:
        f"{RESULTS}/logs/evaluate/{{method}}_{{test_set}}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr evaluate --index {input.index} --features {input.features} --out {output.recall} "
        "--rankings {output.rankings} --recall-at {params.ns} > {log} 2>&1"
