rule evaluate:
    input:
        unpack(evaluate_inputs),
        settings=settings("evaluate"),
    output:
        predictions=update("results/eval/{model}/{task}/{method}/predictions.jsonl"),
        metrics=update("results/eval/{model}/{task}/{method}/metrics.json"),
    log:
        "results/logs/evaluate/{model}-{task}-{method}.log",
    # A model job takes every core: model jobs never share the machine, so latencies are clean.
    threads: workflow.cores
    resources:
        gpu=1,
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic evaluate --params params.yaml --model {wildcards.model} --task {wildcards.task}"
        " --method {wildcards.method} --log {log}"
