# Model -> PCA-whitening fitted on the training split (unless the model has its own) -> descriptors of each
# test set -> Recall@N.


rule extract_train:
    input:
        model=lambda wc: model_file(wc.method),
        index=index_file(TRAIN_SET) if TRAIN_SET else [],
    output:
        temp(f"{RESULTS}/features/{{method}}/_train.h5"),
    wildcard_constraints:
        method=alternatives([m for m in METHODS if fits_pca(m)]),
    params:
        batch=config["evaluate"]["batch_size"],
        workers=config["evaluate"]["workers"],
        precision=extract_precision(),
        sha256=lambda wc: checksum_flag(wc.method),
        device=lambda wc, resources: device_flag(resources),
    threads: 2
    resources:
        gpu=1 if config["use_gpu"] else 0,
    log:
        f"{RESULTS}/logs/extract/{{method}}__train.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr extract --checkpoint {input.model:q} {params.sha256} --index {input.index:q} --out {output:q} "
        "--batch-size {params.batch} --workers {params.workers} {params.precision} {params.device} > {log:q} 2>&1"


rule fit_pca:
    input:
        f"{RESULTS}/features/{{method}}/_train.h5",
    output:
        f"{RESULTS}/pca/{{method}}.h5",
    params:
        dim=lambda wc: config["pca"]["dim"],
        samples=lambda wc: config["pca"]["samples"],
        whiten=lambda wc: "" if config["pca"]["whiten"] else "--no-whiten",
    log:
        f"{RESULTS}/logs/pca/{{method}}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr fit-pca --features {input:q} --out {output:q} --dim {params.dim} --samples {params.samples} "
        "{params.whiten} > {log:q} 2>&1"


rule extract_test:
    input:
        unpack(extract_test_inputs),
    output:
        f"{RESULTS}/features/{{method}}/{{test_set}}.h5",
    wildcard_constraints:
        method=alternatives(METHODS),
        test_set=alternatives(TEST_SETS),
    params:
        pca=lambda wc, input: f"--pca {shlex.quote(input.pca)}" if "pca" in input.keys() else "",
        batch=config["evaluate"]["batch_size"],
        workers=config["evaluate"]["workers"],
        precision=extract_precision(),
        sha256=lambda wc: checksum_flag(wc.method),
        device=lambda wc, resources: device_flag(resources),
    threads: 2
    resources:
        gpu=1 if config["use_gpu"] else 0,
    log:
        f"{RESULTS}/logs/extract/{{method}}_{{test_set}}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr extract --checkpoint {input.model:q} {params.sha256} {params.pca} --index {input.index:q} "
        "--out {output:q} "
        "--batch-size {params.batch} --workers {params.workers} {params.precision} {params.device} > {log:q} 2>&1"


rule evaluate:
    input:
        index=lambda wc: index_file(TEST_SETS[wc.test_set]),
        features=f"{RESULTS}/features/{{method}}/{{test_set}}.h5",
    output:
        recall=f"{RESULTS}/{{method}}/{{test_set}}_recall.csv",
        rankings=rankings_file("{method}", "{test_set}"),
    wildcard_constraints:
        method=alternatives(METHODS),
        test_set=alternatives(TEST_SETS),
    params:
        ns=" ".join(str(n) for n in config["evaluate"]["recall_at"]),
    log:
        f"{RESULTS}/logs/evaluate/{{method}}_{{test_set}}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr evaluate --index {input.index:q} --features {input.features:q} --out {output.recall:q} "
        "--rankings {output.rankings:q} --recall-at {params.ns} > {log:q} 2>&1"
