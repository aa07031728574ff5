# Raw data -> one index file per split (and, for the demo, the synthetic raw data itself).


if SYNTH:

    rule synth:
        output:
            mats=[mat_file(s) for s in SPLITS],
            truth=f"{SYNTH['out']}/synth_truth.json",
        params:
            out=lambda wc, output: Path(output.truth).parent,
            preset=SYNTH["preset"],
            seed=SYNTH.get("seed", 0),
        log:
            f"{RESULTS}/logs/synth.log",
        conda:
            "../envs/vpr.yaml"
        shell:
            "vpr synth --preset {params.preset} --seed {params.seed} --out {params.out} --force > {log} 2>&1"


rule index:
    input:
        mat=lambda wc: mat_file(wc.split),
    output:
        f"{RESULTS}/index/{{split}}.h5",
    params:
        format=lambda wc: SPLITS[wc.split][0],
        root=lambda wc: data_root(SPLITS[wc.split][1]),
    wildcard_constraints:
        split="|".join(SPLITS),
    log:
        f"{RESULTS}/logs/index/{{split}}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr index --format {params.format} --mat {input.mat} --root {params.root} --out {output} > {log} 2>&1"


rule cluster:
    input:
        index=f"{RESULTS}/index/{TRAIN_SPLIT}.h5",
    output:
        f"{RESULTS}/centers.h5",
    params:
        model=cli_flags({k: config["model"][k] for k in ("backbone", "num_clusters", "image_size")}),
        cluster=cli_flags(config["cluster"]),
        trunk=trunk_flag(),
    threads: 2
    resources:
        gpu=1 if config["use_gpu"] else 0,
    log:
        f"{RESULTS}/logs/cluster.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr cluster --index {input.index} --out {output} {params.model} {params.cluster} {params.trunk} "
        "> {log} 2>&1"
