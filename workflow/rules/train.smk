rule train:
    input:
        unpack(train_inputs),
        settings=settings("train"),
    output:
        weights=update("results/checkpoints/{model}/{task}/seed-{seed}/{method}/mimic.safetensors"),
        shift_config=update("results/checkpoints/{model}/{task}/seed-{seed}/{method}/mimic_config.json"),
        train_log=update("results/checkpoints/{model}/{task}/seed-{seed}/{method}/train_log.csv"),
        summary=update("results/checkpoints/{model}/{task}/seed-{seed}/{method}/train_summary.json"),
    wildcard_constraints:
        method=TRAINED_METHODS,
    log:
        "results/logs/train/seed-{seed}/{model}-{task}-{method}.log",
    threads: model_threads
    params:
        params_file=PARAMS_FILE,  # params.yaml, or this run's overrides (common.smk)
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic train --params {params.params_file} --model {wildcards.model} --task {wildcards.task}"
        " --seed {wildcards.seed} --method {wildcards.method} --log {log}"
