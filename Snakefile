"""MimIC pipeline (Snakemake). Everything it computes comes from params.yaml.

    snakemake --cores 4 all                             # or: --profile workflow/profiles/local
    snakemake --profile workflow/profiles/slurm all     # on a Slurm cluster (edit the template first)

Every rule calls one `mimic` subcommand (the same command a user runs by hand) and holds no
logic; dvc.yaml declares the same stages for `dvc repro` (tests/test_pipeline_declarations.py
fails when the two drift apart). Each rule's `params:` carries the params.yaml values its
command reads, so Snakemake's `params` rerun trigger reruns exactly the affected jobs.
Run it where `mimic` is importable and on PATH: the project's .venv (`. .venv/bin/activate`).
"""

from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "params.yaml"


# Friendly one-line errors and the cross-references (mimic.params), then Snakemake's own check.
include: "workflow/rules/common.smk"


validate(config, "workflow/schemas/params.schema.yaml", set_default=False)


include: "workflow/rules/data.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/mini.smk"


rule all:
    default_target: True
    localrule: True
    input:
        rules.report.output,
