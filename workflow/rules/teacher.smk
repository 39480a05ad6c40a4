rule extract_teacher:
    input:
        unpack(teacher_inputs),
    output:
        teacher=directory("results/teacher/{model}/{task}"),
    params:
        model=lambda w: config["models"][w.model],
        icd=config["icd"],
        teacher=config["teacher"],
    log:
        "results/logs/extract-teacher/{model}-{task}.log",
    benchmark:
        "results/benchmarks/extract-teacher/{model}-{task}.tsv"
    # A model job takes every core: model jobs never share the machine, so latencies are clean.
    threads: workflow.cores
    resources:
        gpu=1,
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic extract-teacher --params params.yaml --model {wildcards.model} --task {wildcards.task} --log {log}"
