rule prepare:
    output:
        train="data/{task}/train.parquet",
        support="data/{task}/support.parquet",
        eval="data/{task}/eval.parquet",
        meta="data/{task}/meta.json",
    params:
        seed=config["seed"],
        task=lambda w: config["tasks"][w.task],
    log:
        "results/logs/prepare/{task}.log",
    benchmark:
        "results/benchmarks/prepare/{task}.tsv"
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic prepare --params params.yaml --task {wildcards.task} --log {log}"


rule sample_icd:
    input:
        unpack(task_files),
    output:
        icd="data/{task}/icd.json",
    params:
        icd=config["icd"],
    log:
        "results/logs/sample-icd/{task}.log",
    benchmark:
        "results/benchmarks/sample-icd/{task}.tsv"
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic sample-icd --params params.yaml --task {wildcards.task} --log {log}"
