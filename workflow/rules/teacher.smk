# The declared output is the cache's manifest, not its directory: Snakemake never deletes (nor
# copies, as update() would) a cache that can be large. `mimic extract-teacher` builds the new
# cache in results/partial/ (resuming from the shards an interrupted run finished, kept under a
# fingerprint of their settings) and swaps it in only when complete, so a failing or killed job
# leaves the previous cache as it was. dvc.yaml declares the directory.
rule extract_teacher:
    input:
        unpack(model_inputs),
        settings=settings("extract-teacher"),
    output:
        manifest=update("results/teacher/{model}/{task}/manifest.json"),
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
