rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        predictions="results/eval/{model}/{task}/{method}/predictions.jsonl",
        metrics="results/eval/{model}/{task}/{method}/metrics.json",
    params:
        method=lambda w: config["methods"][w.method],
        model=lambda w: config["models"][w.model],
        icd=config["icd"],
        eval=config["eval"],
    log:
        "results/logs/evaluate/{model}-{task}-{method}.log",
    benchmark:
        "results/benchmarks/evaluate/{model}-{task}-{method}.tsv"
    # A model job takes every core: model jobs never share the machine, so latencies are clean.
    threads: workflow.cores
    resources:
        gpu=1,
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic evaluate --params params.yaml --model {wildcards.model} --task {wildcards.task}"
        " --method {wildcards.method} --log {log}"
