# Not update(): a new cache replaces the old one, which can be large; the extraction resumes from
# the shards it finished (results/partial/, kept under a fingerprint of their settings) when it is
# interrupted, and DVC's cache holds every recorded version (`dvc checkout`).
rule extract_teacher:
    input:
        unpack(model_inputs),
        settings=settings("extract-teacher"),
    output:
        teacher=directory("results/teacher/{model}/{task}"),
    log:
        "results/logs/extract-teacher/{model}-{task}.log",
    # A model job takes every core: model jobs never share the machine, so latencies are clean.
    threads: workflow.cores
    resources:
        gpu=1,
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic extract-teacher --params params.yaml --model {wildcards.model} --task {wildcards.task} --log {log}"
