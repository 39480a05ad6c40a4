# eval.jobs = N > 1 splits each method's evaluation into N jobs (`--part I/N`: whole batches of the
# evaluation queries) and `mimic merge-evaluate` joins their predictions and scores them once (corpus
# metrics such as CIDEr over all of them): the same predictions and scores as one job. The parts are
# temp(): once merged they are deleted, and changing N reruns nothing that is done (see common.smk).
if eval_jobs() == 1:

    rule evaluate:
        input:
            unpack(evaluate_inputs),
            settings=settings("evaluate"),
        output:
            predictions=update("results/eval/{model}/{task}/seed-{seed}/{method}/predictions.jsonl"),
            metrics=update("results/eval/{model}/{task}/seed-{seed}/{method}/metrics.json"),
            timing=update("results/eval/{model}/{task}/seed-{seed}/{method}/timing.json"),  # wall time, memory
        log:
            "results/logs/evaluate/seed-{seed}/{model}-{task}-{method}.log",
        threads: model_threads
        params:
            params_file=PARAMS_FILE,  # params.yaml, or this run's overrides (common.smk)
        conda:
            "../envs/mimic.yaml"
        shell:
            "mimic evaluate --params {params.params_file} --model {wildcards.model} --task {wildcards.task}"
            " --seed {wildcards.seed} --method {wildcards.method} --log {log}"

else:

    rule evaluate_part:
        input:
            unpack(evaluate_part_inputs),
            settings=settings("evaluate"),
        output:
            part=temp("results/parts/eval/{model}/{task}/seed-{seed}/{method}/part-{part}-of-{jobs}.json"),
        log:
            "results/logs/evaluate/seed-{seed}/{model}-{task}-{method}-part-{part}-of-{jobs}.log",
        threads: model_threads
        params:
            params_file=PARAMS_FILE,  # params.yaml, or this run's overrides
            part=lambda w: f"{int(w.part) + 1}/{int(w.jobs)}",
        conda:
            "../envs/mimic.yaml"
        shell:
            "mimic evaluate --params {params.params_file} --model {wildcards.model} --task {wildcards.task}"
            " --seed {wildcards.seed} --method {wildcards.method} --part {params.part} --log {log}"

    rule merge_evaluate:
        input:
            unpack(evaluate_inputs),
            settings=settings("evaluate"),
            parts=lambda w: part_files(f"results/parts/eval/{w.model}/{w.task}/seed-{w.seed}/{w.method}", eval_jobs(), "json"),
        output:
            predictions=update("results/eval/{model}/{task}/seed-{seed}/{method}/predictions.jsonl"),
            metrics=update("results/eval/{model}/{task}/seed-{seed}/{method}/metrics.json"),
            timing=update("results/eval/{model}/{task}/seed-{seed}/{method}/timing.json"),  # wall time, memory
        log:
            "results/logs/evaluate/seed-{seed}/{model}-{task}-{method}-merge.log",
        params:
            params_file=PARAMS_FILE,  # params.yaml, or this run's overrides (common.smk)
        conda:
            "../envs/mimic.yaml"
        shell:
            "mimic merge-evaluate --params {params.params_file} --model {wildcards.model} --task {wildcards.task}"
            " --seed {wildcards.seed} --method {wildcards.method} --log {log}"
