"""What the rules need to know about params.yaml; all of it comes from mimic.pipeline.params and mimic.pipeline.stages."""

import re
from pathlib import Path

from mimic.pipeline.paths import part_name
from mimic.pipeline.params import (
    ICL_REFERENCE,
    ParamsError,
    check_run_tools,
    is_trained,
    run_methods,
    run_seeds,
    trained_methods,
)
from mimic.pipeline.presets import run_params_file
from mimic.pipeline.dvc import forget_replaced_outputs, forget_resplit_outputs, record_due
from mimic.pipeline.stages import preview_settings, settings_file, write_settings


def read_only_invocation() -> bool:
    """Whether this Snakemake only plans or reads (-n, --lint, --report, --summary, graphs): then nothing is written."""
    from snakemake.cli import get_argument_parser

    try:
        args, _ = get_argument_parser().parse_known_args(sys.argv[1:])
    except BaseException:  # noqa: BLE001 - an invocation we cannot read (the API, a job step): a real run
        return False
    modes = ("dryrun", "lint", "report", "summary", "detailed_summary", "dag", "rulegraph", "filegraph")
    return any(getattr(args, mode, None) for mode in modes)


READ_ONLY = read_only_invocation()

# `snakemake --configfile other.yaml` (or --config key=value): Snakemake lays it over params.yaml; the merged
# params are checked in full (as `mimic preset` does) and written beside params.yaml for the commands of this run
# (mimic.pipeline.presets.run_params_file). Such a run is not recorded in DVC, which reads params.yaml only.
OVERRIDDEN = config != PARAMS
PARAMS_FILE = "params.yaml"
if OVERRIDDEN:
    try:
        PARAMS_FILE = str(run_params_file(config, "params.yaml with --configfile/--config overrides",
                                          write=not READ_ONLY))
        check_run_tools(config)
    except MimicError as err:
        sys.exit(str(err))

# Each job's settings file (its rerun trigger, shared with DVC), rewritten where its content changed. A dry run
# writes nothing: a changed settings file is given to its jobs as a stand-in under a temporary directory instead.
STAND_INS = {}
try:
    if READ_ONLY:
        STAND_INS = preview_settings(config)
    else:
        write_settings(config)
except ParamsError as err:
    sys.exit(str(err))
# A record in DVC that an earlier run owes (killed in the middle of `mimic record`, or before it): made now, before
# planning, so a run with nothing to do repairs it too. Not while another Snakemake holds this directory (its own
# record follows), not in a job step, a dry run or a run with overrides (which DVC does not record).
if not READ_ONLY and not OVERRIDDEN and workflow.is_main_process and not any(Path(".snakemake/locks").glob("*")):
    RECORD_DUE = record_due()
    if RECORD_DUE:
        print(f"mimic: recording in DVC first: {RECORD_DUE}", file=sys.stderr)
        shell("mimic record --params params.yaml")
# Outputs that `dvc repro` / `dvc checkout` replaced since Snakemake made them are judged by mtime
# alone, not by the input checksums Snakemake recorded for the ones it made (mimic.pipeline.dvc).
# Also in a dry run: these records (Snakemake's own state, under .snakemake/) no longer describe
# the outputs, and the real run drops them too, so the plan is the real run's.
forget_replaced_outputs()
# Outputs made under another teacher.jobs / eval.jobs (by the other rule, or from another set of
# parts) are judged by mtime alone too: how the work was split does not change the results.
forget_resplit_outputs(config)


def teacher_jobs():
    return config["teacher"].get("jobs", 1)


def eval_jobs():
    return config["eval"].get("jobs", 1)


def part_files(folder, jobs, ext):
    """The parts of a split job (0-based numbers, as the part rules' wildcards)."""
    return [f"{folder}/{part_name(i, jobs, ext)}" for i in range(jobs)]


# A model job (embed, extract_teacher, train, evaluate, latency and their parts) takes every core it is
# given: locally Snakemake caps this at --cores (so model jobs never share the machine and latencies are
# clean), on a cluster the profile's cpus_per_task decides. models.<name>.threads, where set, is what torch uses.
MODEL_THREADS = 1024


def model_threads(wildcards):
    return config["models"][wildcards.model].get("threads") or MODEL_THREADS


def embed_threads(wildcards):
    """The embed job is a model job too: of icd.embedding's model (a key of `models`, or a CLIP hub id)."""
    return config["models"].get(config["icd"].get("embedding") or "", {}).get("threads") or MODEL_THREADS


def one_of(names):
    """A wildcard regex matching exactly these names (never anything when there are none)."""
    names = sorted(names, key=len, reverse=True)
    return "|".join(re.escape(name) for name in names) if names else "(?!)"


# Every run seed (run.seeds) is a replicate of the whole run: a seed-<s> level in data/ and results/
# (mimic.pipeline.paths); latency times the first seed only.
SEEDS = run_seeds(config)
FIRST_SEED = SEEDS[0]


wildcard_constraints:
    seed=r"\d+",
    part=r"\d{5}",
    jobs=r"\d{5}",
    model=one_of(config["models"]),
    task=one_of(config["tasks"]),
    method=one_of(config["methods"]),


TRAINED_METHODS = one_of(trained_methods(config))


def settings(stage):
    """The job's settings file (mimic.pipeline.stages): the params.yaml values its results depend on (in a dry run,
    its stand-in where it changed)."""

    def settings_input(w):
        path = settings_file(stage, **{k: v for k, v in w.items() if k in ("model", "task", "method", "seed")})
        return str(STAND_INS.get(path, path))

    return settings_input


def task_files(w, seed=None):
    """data/<task>/seed-<s>/{train,support,eval}.parquet and meta.json, as made by `mimic prepare`."""
    folder = f"data/{w.task}/seed-{w.seed if seed is None else seed}"
    return {
        "train": f"{folder}/train.parquet",
        "support": f"{folder}/support.parquet",
        "eval": f"{folder}/eval.parquet",
        "meta": f"{folder}/meta.json",
    }


def model_inputs(w, seed=None):
    """The prepared task and its demonstrations (a local model enters through its settings file's digest)."""
    return {**task_files(w, seed), "icd": f"data/{w.task}/seed-{w.seed if seed is None else seed}/icd.json"}


def train_inputs(w):
    inputs = model_inputs(w)
    # Every trained method depends on the cache, also one whose loss never reads it (HiFICL, LoRA,
    # CE-only): dvc.yaml's train matrix cannot tell the types apart, and both tools must rerun the same jobs.
    if config["teacher"]["mode"] == "cached":
        inputs["teacher"] = f"results/teacher/{w.model}/{w.task}/seed-{w.seed}/manifest.json"  # the cache (teacher.smk)
    return inputs


def evaluate_inputs(w):
    inputs = model_inputs(w)
    if is_trained(config, w.method):
        inputs["weights"] = f"results/checkpoints/{w.model}/{w.task}/seed-{w.seed}/{w.method}/mimic.safetensors"
        inputs["shift_config"] = f"results/checkpoints/{w.model}/{w.task}/seed-{w.seed}/{w.method}/mimic_config.json"
    if w.method != ICL_REFERENCE:
        inputs["icl_predictions"] = f"results/eval/{w.model}/{w.task}/seed-{w.seed}/{ICL_REFERENCE}/predictions.jsonl"
    return inputs


def evaluate_part_inputs(w):
    """A part of a split evaluation: what `mimic evaluate` reads, less the ICL reference (the merge compares)."""
    return {k: v for k, v in evaluate_inputs(w).items() if k != "icl_predictions"}


def latency_inputs(w):
    """The task, its demonstrations and the checkpoint of every trained method of the run (the first seed's)."""
    checkpoints = expand("results/checkpoints/{model}/{task}/seed-{seed}/{method}/{name}", model=w.model,
                         task=w.task, seed=FIRST_SEED, method=config["run"]["trained"],
                         name=["mimic.safetensors", "mimic_config.json"])
    return {**model_inputs(w, FIRST_SEED), "checkpoints": checkpoints}


def report_inputs(w):
    run = config["run"]
    return {
        "latency": expand("results/latency/{model}/{task}.json", model=run["models"], task=run["tasks"]),
        "metrics": expand(
            "results/eval/{model}/{task}/seed-{seed}/{method}/metrics.json",
            model=run["models"], task=run["tasks"], seed=SEEDS, method=run_methods(config),
        ),
        "predictions": expand(
            "results/eval/{model}/{task}/seed-{seed}/{method}/predictions.jsonl",
            model=run["models"], task=run["tasks"], seed=SEEDS, method=run_methods(config),
        ),
        "timing": expand(
            "results/eval/{model}/{task}/seed-{seed}/{method}/timing.json",
            model=run["models"], task=run["tasks"], seed=SEEDS, method=run_methods(config),
        ),
        "train_logs": expand(
            "results/checkpoints/{model}/{task}/seed-{seed}/{method}/train_log.csv",
            model=run["models"], task=run["tasks"], seed=SEEDS, method=run["trained"],
        ),
    }


def all_outputs(w):
    """Every output of the run, not only the report: Snakemake remakes a missing intermediate output
    (a deleted checkpoint, a teacher cache) only when a target asks for it, even if everything
    downstream of it is there."""
    run = config["run"]
    data = expand("data/{task}/seed-{seed}/{name}", task=run["tasks"], seed=SEEDS,
                  name=["train.parquet", "support.parquet", "eval.parquet", "meta.json", "icd.json"])
    teacher = expand("results/teacher/{model}/{task}/seed-{seed}/manifest.json", model=run["models"],
                     task=run["tasks"], seed=SEEDS)
    checkpoints = expand(
        "results/checkpoints/{model}/{task}/seed-{seed}/{method}/{name}", model=run["models"], task=run["tasks"],
        seed=SEEDS, method=run["trained"],
        name=["mimic.safetensors", "mimic_config.json", "train_log.csv", "train_summary.json"],
    )
    return {
        "data": data,
        "teacher": teacher if config["teacher"]["mode"] == "cached" else [],
        "checkpoints": checkpoints,
        **report_inputs(w),
    }
