# The configuration used, the results table (with the published numbers beside ours) and the plots; the
# table and plots go into --report.


localrules: resolved_config


rule resolved_config:
    output:
        f"{RESULTS}/config.yaml",
    params:
        # As a parameter, a changed configuration makes the file out of date (rerun trigger "params").
        text=yaml.safe_dump(dict(config), sort_keys=False),
    log:
        f"{RESULTS}/logs/config.log",
    run:
        Path(output[0]).write_text(f"# the configuration of this run ({config_source()})\n{params.text}")


rule table:
    input:
        recall=[recall_file(m, t) for m in METHODS for t in TEST_SETS],
        # read by --compare-to (the paired test), found beside each recall CSV
        rankings=[rankings_file(m, t) for m in METHODS for t in TEST_SETS],
    output:
        md=report(f"{RESULTS}/table.md", caption="../report/table.rst", category="Results",
                  labels={"figure": "table"}),
        csv=f"{RESULTS}/table.csv",
    params:
        recall=" ".join(f"--recall {m} {t} {shlex.quote(recall_file(m, t))}" for m in METHODS for t in TEST_SETS),
        compare=table_baseline(),
        # the jobs' logs: a number computed by a step that logged a warning gets a footnote
        step_logs=" ".join(f"--step-log {m} {t} {shlex.quote(log)}" for m in METHODS for t in TEST_SETS
                           for log in step_logs(m, t)),
    log:
        f"{RESULTS}/logs/table.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr table {params.recall} {params.compare} {params.step_logs} --out-md {output.md:q} "
        "--out-csv {output.csv:q} > {log:q} 2>&1"


rule plot_recall:
    input:
        lambda wc: [recall_file(m, wc.test_set) for m in METHODS],
    output:
        report(f"{RESULTS}/plots/recall_{{test_set}}.png", caption="../report/recall.rst", category="Recall@N",
               labels={"data set": "{test_set}"}),
    wildcard_constraints:
        test_set=alternatives(TEST_SETS),
    params:
        recall=lambda wc: " ".join(f"--recall {m} {shlex.quote(recall_file(m, wc.test_set))}" for m in METHODS),
    log:
        f"{RESULTS}/logs/plots/recall_{{test_set}}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr plot recall {params.recall} --dataset {wildcards.test_set:q} --title {wildcards.test_set:q} "
        "--out {output:q} > {log:q} 2>&1"


rule plot_training:
    input:
        lambda wc: list(training_logs(wc.method).values()),
    output:
        report(f"{RESULTS}/plots/training_{{method}}.png", caption="../report/training.rst", category="Training",
               labels={"method": "{method}"}),
    wildcard_constraints:
        method=alternatives(TRAINED),
    params:
        logs=lambda wc: " ".join(f"--log {shlex.quote(label)} {shlex.quote(path)}"
                                 for label, path in training_logs(wc.method).items()),
    log:
        f"{RESULTS}/logs/plots/training_{{method}}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr plot training {params.logs} --out {output:q} > {log:q} 2>&1"


rule plot_examples:
    input:
        index=lambda wc: index_file(TEST_SETS[wc.test_set]),
        rankings=rankings_file(EXAMPLES, "{test_set}"),
    output:
        report(f"{RESULTS}/plots/examples_{{test_set}}.png", caption="../report/examples.rst",
               category="Retrieval examples",
               labels={"data set": "{test_set}", "model": EXAMPLES}),
    wildcard_constraints:
        test_set=alternatives(TEST_SETS),
    log:
        f"{RESULTS}/logs/plots/examples_{{test_set}}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr plot examples --index {input.index:q} --rankings {input.rankings:q} --out {output:q} > {log:q} 2>&1"
