# The declared output is the cache's manifest, not its directory: Snakemake never deletes (nor
# copies, as update() would) a cache that can be large. `mimic extract-teacher` builds the new
# cache in results/partial/ (resuming from the shards an interrupted run finished, kept under a
# fingerprint of their settings) and swaps it in only when complete, so a failing or killed job
# leaves the previous cache as it was. dvc.yaml declares the directory.
#
# teacher.jobs = N > 1 splits the extraction into N jobs (`--part I/N`, e.g. one per GPU of a cluster)
# and `mimic merge-teacher` joins their parts into the same cache, byte for byte. The parts are
# temp(): once merged they are deleted, and changing N reruns nothing that is done (see common.smk).
if teacher_jobs() == 1:

    rule extract_teacher:
        input:
            unpack(model_inputs),
            settings=settings("extract-teacher"),
        output:
            manifest=update("results/teacher/{model}/{task}/seed-{seed}/manifest.json"),
        log:
            "results/logs/extract-teacher/seed-{seed}/{model}-{task}.log",
        threads: model_threads
        params:
            params_file=PARAMS_FILE,  # params.yaml, or this run's overrides (common.smk)
        conda:
            "../envs/mimic.yaml"
        shell:
            "mimic extract-teacher --params {params.params_file} --model {wildcards.model} --task {wildcards.task} --seed {wildcards.seed} --log {log}"

else:

    rule extract_teacher_part:
        input:
            unpack(model_inputs),
            settings=settings("extract-teacher"),
        output:
            part=temp("results/parts/teacher/{model}/{task}/seed-{seed}/part-{part}-of-{jobs}.safetensors"),
        log:
            "results/logs/extract-teacher/seed-{seed}/{model}-{task}-part-{part}-of-{jobs}.log",
        threads: model_threads
        params:
            params_file=PARAMS_FILE,  # params.yaml, or this run's overrides
            part=lambda w: f"{int(w.part) + 1}/{int(w.jobs)}",
        conda:
            "../envs/mimic.yaml"
        shell:
            "mimic extract-teacher --params {params.params_file} --model {wildcards.model} --task {wildcards.task}"
            " --seed {wildcards.seed} --part {params.part} --log {log}"

    rule merge_teacher:
        input:
            unpack(model_inputs),
            settings=settings("extract-teacher"),
            parts=lambda w: part_files(f"results/parts/teacher/{w.model}/{w.task}/seed-{w.seed}", teacher_jobs(), "safetensors"),
        output:
            manifest=update("results/teacher/{model}/{task}/seed-{seed}/manifest.json"),
        log:
            "results/logs/extract-teacher/seed-{seed}/{model}-{task}-merge.log",
        params:
            params_file=PARAMS_FILE,  # params.yaml, or this run's overrides (common.smk)
        conda:
            "../envs/mimic.yaml"
        shell:
            "mimic merge-teacher --params {params.params_file} --model {wildcards.model} --task {wildcards.task} --seed {wildcards.seed} --log {log}"
