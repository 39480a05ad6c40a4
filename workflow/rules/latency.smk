rule latency:
    input:
        unpack(latency_inputs),
        settings=settings("latency"),
    output:
        latency=update("results/latency/{model}/{task}.json"),
    log:
        "results/logs/latency/{model}-{task}.log",
    # Timings: the job takes every core, so no other model job shares the machine while it measures.
    threads: workflow.cores
    resources:
        gpu=1,
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic latency --params params.yaml --model {wildcards.model} --task {wildcards.task} --log {log}"
