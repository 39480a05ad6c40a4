rule prepare:
    input:
        settings=settings("prepare"),
    output:
        train=update("data/{task}/seed-{seed}/train.parquet"),
        support=update("data/{task}/seed-{seed}/support.parquet"),
        eval=update("data/{task}/seed-{seed}/eval.parquet"),
        meta=update("data/{task}/seed-{seed}/meta.json"),
    log:
        "results/logs/prepare/seed-{seed}/{task}.log",
    params:
        params_file=PARAMS_FILE,  # params.yaml, or this run's overrides (common.smk)
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic prepare --params {params.params_file} --task {wildcards.task} --seed {wildcards.seed} --log {log}"


rule embed:
    input:
        unpack(task_files),
        settings=settings("embed"),
    output:
        embeddings=update("data/{task}/seed-{seed}/embeddings.safetensors"),
    log:
        "results/logs/embed/seed-{seed}/{task}.log",
    threads: embed_threads
    params:
        params_file=PARAMS_FILE,  # params.yaml, or this run's overrides (common.smk)
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic embed --params {params.params_file} --task {wildcards.task} --seed {wildcards.seed} --log {log}"


rule sample_icd:
    input:
        unpack(task_files),
        embeddings="data/{task}/seed-{seed}/embeddings.safetensors",
        settings=settings("sample-icd"),
    output:
        icd=update("data/{task}/seed-{seed}/icd.json"),
    log:
        "results/logs/sample-icd/seed-{seed}/{task}.log",
    params:
        params_file=PARAMS_FILE,  # params.yaml, or this run's overrides (common.smk)
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic sample-icd --params {params.params_file} --task {wildcards.task} --seed {wildcards.seed} --log {log}"
