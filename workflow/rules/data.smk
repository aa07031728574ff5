# Inputs from outside -> one index file per data set. What is missing is downloaded, unpacked from a
# downloaded archive, generated (the synthetic demo data), or asked of a person by a job that fails with
# one line naming what to put where and the page to get it from.

if SYNTH:

    rule synth:
        output:
            mats=synth_outputs()["files"],
            images=[directory(f) for f in synth_outputs()["folders"]],
            truth=synth_outputs()["truth"],
        params:
            out=lambda wc, output: Path(output.truth).parent,
            preset=SYNTH["preset"],
            seed=SYNTH.get("seed", 0),
        log:
            f"{RESULTS}/logs/synth.log",
        threads: 2
        conda:
            "../envs/vpr.yaml"
        shell:
            "vpr synth --preset {params.preset} --seed {params.seed} --workers {threads} --out {params.out:q} --force"
            " > {log:q} 2>&1"


if TO_DOWNLOAD:

    localrules: download   # on the machine running Snakemake: cluster nodes may have no internet

    rule download:
        output:
            "{download}",
        wildcard_constraints:
            download=alternatives(TO_DOWNLOAD),
        params:
            url=lambda wc: TO_DOWNLOAD[wc.download][0],
            sha256=lambda wc: (f"--sha256 {TO_DOWNLOAD[wc.download][1]}" if TO_DOWNLOAD[wc.download][1]
                               else ""),
        log:
            f"{RESULTS}/logs/fetch/download.{{download}}.log",
        conda:
            "../envs/vpr.yaml"
        shell:
            "vpr fetch --url {params.url:q} {params.sha256} --out {output:q} > {log:q} 2>&1 "
            "|| {{ cat {log:q} >&2; exit 2; }}"


if TO_UNPACK:

    localrules: unpack

    rule unpack:
        input:
            lambda wc: TO_UNPACK[wc.member],
        output:
            "{member}",
        wildcard_constraints:
            member=alternatives(TO_UNPACK),
        log:
            f"{RESULTS}/logs/fetch/unpack.{{member}}.log",
        conda:
            "../envs/vpr.yaml"
        shell:
            "vpr fetch --archive {input:q} --out {output:q} > {log:q} 2>&1 || {{ cat {log:q} >&2; exit 2; }}"


if BY_HAND:

    localrules: by_hand

    rule by_hand:
        output:
            "{by_hand}",
        priority: 100     # first: a run without the data stops at once with the instruction
        wildcard_constraints:
            by_hand=alternatives(BY_HAND),
        params:
            what=lambda wc: by_hand_instruction(wc.by_hand)[0],
            page=lambda wc: by_hand_instruction(wc.by_hand)[1] or "",
        log:
            f"{RESULTS}/logs/fetch/by_hand.{{by_hand}}.log",
        conda:
            "../envs/vpr.yaml"
        shell:
            "vpr fetch --manual --what {params.what:q} --page {params.page:q} --out {output:q} > {log:q} 2>&1 "
            "|| {{ cat {log:q} >&2; exit 2; }}"


rule index:
    input:
        unpack(index_inputs),
    output:
        f"{RESULTS}/index/{{dataset}}.h5",
    params:
        format=lambda wc: DATASETS[wc.dataset]["format"],
        source=lambda wc: index_source_flags(wc.dataset),
        root=lambda wc: DATASETS[wc.dataset]["root"],
        split=lambda wc: f"--split {index_split(wc.dataset)}" if index_split(wc.dataset) else "",
        drop=lambda wc: ("--drop-unmatched-queries" if DATASETS[wc.dataset].get("drop_unmatched_queries")
                         else ""),
    wildcard_constraints:
        dataset=alternatives(DATASETS),
    log:
        f"{RESULTS}/logs/index/{{dataset}}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr index --format {params.format} {params.source} --root {params.root:q} {params.split} "
        "{params.drop} --out {output:q} > {log:q} 2>&1"


rule cluster:
    input:
        unpack(lambda wc: {k: v for k, v in model_inputs().items() if k == "trunk"}),
        index=index_file(TRAIN_SET) if TRAIN_SET else [],
    output:
        f"{RESULTS}/centers.h5",
    params:
        model=lambda wc: cli_flags({k: config["model"][k] for k in ("backbone", "num_clusters", "image_size")}),
        cluster=lambda wc: cli_flags(config.get("cluster", {})),
        trunk=trunk_flag,
        device=lambda wc, resources: device_flag(resources),
    threads: 2
    resources:
        gpu=1 if config["use_gpu"] else 0,
    log:
        f"{RESULTS}/logs/cluster.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr cluster --index {input.index:q} --out {output:q} {params.model} {params.cluster} {params.trunk} "
        "{params.device} > {log:q} 2>&1"
