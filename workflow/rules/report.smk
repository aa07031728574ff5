# The results table (with the published numbers beside ours) and the plots; all go into --report.


rule table:
    input:
        [recall_file(m, t) for m in METHODS for t in TEST_SETS],
    output:
        md=report(f"{RESULTS}/table.md", category="Results", labels={"figure": "table"}),
        csv=f"{RESULTS}/table.csv",
    params:
        recall=" ".join(f"--recall {m} {t} {recall_file(m, t)}" for m in METHODS for t in TEST_SETS),
    log:
        f"{RESULTS}/logs/table.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr table {params.recall} --out-md {output.md} --out-csv {output.csv} > {log} 2>&1"


rule plot_recall:
    input:
        lambda wc: [recall_file(m, wc.test_set) for m in METHODS],
    output:
        report(f"{RESULTS}/plots/recall_{{test_set}}.png", category="Recall@N",
               labels={"data set": "{test_set}"}),
    params:
        recall=lambda wc: " ".join(f"--recall {m} {recall_file(m, wc.test_set)}" for m in METHODS),
    log:
        f"{RESULTS}/logs/plots/recall_{{test_set}}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr plot recall {params.recall} --dataset {wildcards.test_set} --title {wildcards.test_set} "
        "--out {output} > {log} 2>&1"


rule plot_training:
    input:
        lambda wc: list(training_logs(wc.method).values()),
    output:
        report(f"{RESULTS}/plots/training_{{method}}.png", category="Training",
               labels={"method": "{method}"}),
    params:
        logs=lambda wc: " ".join(f"--log {shlex.quote(label)} {path}"
                                 for label, path in training_logs(wc.method).items()),
    log:
        f"{RESULTS}/logs/plots/training_{{method}}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr plot training {params.logs} --out {output} > {log} 2>&1"


rule plot_examples:
    input:
        index=lambda wc: f"{RESULTS}/index/{TEST_SPLITS[wc.test_set]}.h5",
        rankings=f"{RESULTS}/{TRAINED[-1]}/{{test_set}}_rankings.h5",
    output:
        report(f"{RESULTS}/plots/examples_{{test_set}}.png", category="Retrieval examples",
               labels={"data set": "{test_set}"}),
    log:
        f"{RESULTS}/logs/plots/examples_{{test_set}}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr plot examples --index {input.index} --rankings {input.rankings} --out {output} > {log} 2>&1"
