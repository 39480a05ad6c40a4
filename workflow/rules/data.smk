rule prepare:
    input:
        settings=settings("prepare"),
    output:
        train=update("data/{task}/train.parquet"),
        support=update("data/{task}/support.parquet"),
        eval=update("data/{task}/eval.parquet"),
        meta=update("data/{task}/meta.json"),
    log:
        "results/logs/prepare/{task}.log",
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic prepare --params params.yaml --task {wildcards.task} --log {log}"


rule embed:
    input:
        unpack(task_files),
        settings=settings("embed"),
    output:
        embeddings=update("data/{task}/embeddings.safetensors"),
    log:
        "results/logs/embed/{task}.log",
    threads: embed_threads
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic embed --params params.yaml --task {wildcards.task} --log {log}"


rule sample_icd:
    input:
        unpack(task_files),
        embeddings="data/{task}/embeddings.safetensors",
        settings=settings("sample-icd"),
    output:
        icd=update("data/{task}/icd.json"),
    log:
        "results/logs/sample-icd/{task}.log",
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic sample-icd --params params.yaml --task {wildcards.task} --log {log}"
