# Training: NetVLAD/SARE baselines, SFRS one generation per job, then the model each method is tested with.
# Training jobs resume from their run directory's resume.pth, so a retried or re-run job continues
# where the interrupted one stopped (Slurm pre-emption, scancel, --rerun-incomplete). Snakemake reruns a
# job only when something changed or was asked for, so `--on-mismatch restart`: a state of other options
# or inputs is discarded and the run starts afresh (a finished one recreates deleted outputs).


rule train_baseline:
    input:
        unpack(training_inputs),
    output:
        best=f"{RESULTS}/train/{{method}}/model_best.pth",
        last=f"{RESULTS}/train/{{method}}/last.pth",
        log=f"{RESULTS}/train/{{method}}/log.csv",
    wildcard_constraints:
        method=alternatives(BASELINES),
    params:
        run_dir=lambda wc: f"{RESULTS}/train/{wc.method}",
        options=lambda wc: train_flags(wc.method),
        trunk=trunk_flag,
        launch=lambda wc, resources: torchrun(resources),
        device=lambda wc, resources: device_flag(resources),
        on_mismatch=TRAIN_ON_MISMATCH,
    threads: 2
    resources:
        gpu=1 if config["use_gpu"] else 0,
        nodes=1,
    retries: 2
    log:
        f"{RESULTS}/logs/train/{{method}}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "{params.launch} train --train-index {input.train:q} --val-index {input.val:q} "
        "--centers {input.centers:q} {params.trunk} --out {params.run_dir:q} {params.options} "
        "{params.device} {params.on_mismatch} >> {log:q} 2>&1"


rule initial_model:
    input:
        unpack(model_inputs),
    output:
        f"{RESULTS}/train/{OFF_THE_SHELF}/initial.pth",
    params:
        run_dir=lambda wc, output: Path(output[0]).parent,
        # The model and the shared training options only: no method's own options (e.g. sfrs' generation).
        options=lambda wc: cli_flags(shared_train_options()),
        trunk=trunk_flag,
    log:
        f"{RESULTS}/logs/train/{OFF_THE_SHELF}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr train --init-only --centers {input.centers:q} {params.trunk} --out {params.run_dir:q} {params.options} "
        "> {log:q} 2>&1"


rule train_sfrs:
    input:
        unpack(training_inputs),
        teacher=teacher_checkpoint,
    output:
        best=f"{RESULTS}/train/sfrs/{SFRS_RUN_DIR}/model_best.pth",
        last=f"{RESULTS}/train/sfrs/{SFRS_RUN_DIR}/last.pth",
        log=f"{RESULTS}/train/sfrs/{SFRS_RUN_DIR}/log.csv",
    wildcard_constraints:
        generation=alternatives([str(gen.number) for gen in sfrs_generations()] if "sfrs" in TRAINED else []),
    params:
        run_dir=lambda wc, output: str(Path(output.last).parent),
        options=lambda wc: train_flags("sfrs", int(wc.generation)),
        teacher=lambda wc, input: f"--teacher {shlex.quote(input.teacher[0])}" if input.teacher else "",
        trunk=trunk_flag,
        launch=lambda wc, resources: torchrun(resources),
        device=lambda wc, resources: device_flag(resources),
        on_mismatch=TRAIN_ON_MISMATCH,
    threads: 2
    resources:
        gpu=1 if config["use_gpu"] else 0,
        nodes=1,
    retries: 2
    log:
        f"{RESULTS}/logs/train/sfrs_gen{{generation}}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "{params.launch} train --train-index {input.train:q} --val-index {input.val:q} "
        "--centers {input.centers:q} {params.trunk} {params.teacher} --out {params.run_dir:q} {params.options} "
        "{params.device} {params.on_mismatch} >> {log:q} 2>&1"


rule select_model:
    input:
        selection_candidates,
    output:
        f"{RESULTS}/models/{{method}}.pth",
    wildcard_constraints:
        method=alternatives(TRAINED),
    log:
        f"{RESULTS}/logs/select/{{method}}.log",
    conda:
        "../envs/vpr.yaml"
    shell:
        "vpr select --checkpoints {input:q} --out {output:q} > {log:q} 2>&1"
