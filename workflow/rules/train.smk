rule train:
    input:
        unpack(train_inputs),
    output:
        weights="results/checkpoints/{model}/{task}/{method}/mimic.safetensors",
        shift_config="results/checkpoints/{model}/{task}/{method}/mimic_config.json",
        train_log="results/checkpoints/{model}/{task}/{method}/train_log.csv",
        summary="results/checkpoints/{model}/{task}/{method}/train_summary.json",
    wildcard_constraints:
        method=TRAINED_METHODS,
    params:
        method=lambda w: config["methods"][w.method],
        model=lambda w: config["models"][w.model],
        icd=config["icd"],
        teacher=config["teacher"],
    log:
        "results/logs/train/{model}-{task}-{method}.log",
    benchmark:
        "results/benchmarks/train/{model}-{task}-{method}.tsv"
    # A model job takes every core: model jobs never share the machine, so latencies are clean.
    threads: workflow.cores
    resources:
        gpu=1,
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic train --params params.yaml --model {wildcards.model} --task {wildcards.task}"
        " --method {wildcards.method} --log {log}"
