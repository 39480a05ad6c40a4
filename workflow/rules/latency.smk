rule latency:
    input:
        unpack(latency_inputs),
        settings=settings("latency"),
    output:
        latency=update("results/latency/{model}/{task}.json"),
    log:
        "results/logs/latency/{model}-{task}.log",
    # Timings: a model job takes every core it is given (model_threads), so no other model job shares
    # the machine while it measures.
    threads: model_threads
    params:
        params_file=PARAMS_FILE,  # params.yaml, or this run's overrides
        seed=FIRST_SEED,  # timing does not depend on the data drawn: the first run seed only
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic latency --params {params.params_file} --model {wildcards.model} --task {wildcards.task} --seed {params.seed} --log {log}"
