"""The site keys of a Slurm run, checked before anything is submitted.

``workflow/profiles/slurm/config.yaml`` ships with placeholders (``<account>``, ``<cpu-partition>``,
``<gpu-partition>``, ``<gpus>``) for what differs from one cluster to the next; everything else in
it works as it is. When Snakemake runs with the slurm executor, the Snakefile's ``onstart`` calls
:func:`check_site_keys` on every rule it may submit, and a key that is still a placeholder or missing
stops the run with one line naming it, before the first ``sbatch``.

Site keys (Snakemake resources the slurm executor plugin turns into sbatch options):

- ``slurm_partition`` (every submitted rule): ``sbatch -p``; the model rules take a GPU partition;
- ``slurm_account``: ``sbatch -A``; delete the line where the site has no accounts (the plugin then
  submits without one);
- the GPU request of the model rules (:data:`MODEL_RULES`), in the site's syntax: ``gpu: 1``
  (``sbatch --gpus=1``; ``gpu_model: a100`` adds the type) or ``gres: "gpu:1"`` (``--gres``);
  ``gpu: 0`` runs them on CPU nodes.
"""

from __future__ import annotations

from mimic.errors import MimicError

MODEL_RULES = ("embed", "extract_teacher", "extract_teacher_part", "train", "evaluate", "evaluate_part", "latency")
PROFILE = "workflow/profiles/slurm/config.yaml"
HINTS = {
    "slurm_partition": "the partition to submit to (`sinfo -s` lists them)",
    "slurm_account": "the account to charge (`sacctmgr show assoc user=$USER`), or delete the line where "
                     "your site has no accounts",
    "gpu": "GPUs per job as `gpu: 1` (sbatch --gpus), or replace it by `gres: \"gpu:1\"` where your site "
           "requests GPUs by --gres; `gpu: 0` on a partition without GPUs",
}


def is_placeholder(value) -> bool:
    return isinstance(value, str) and value.strip().startswith("<") and value.strip().endswith(">")


def site_problems(rules: dict[str, dict]) -> list[str]:
    """One line per site key that is missing or still a placeholder, for ``rules``: rule name -> its
    resources (the raw values of the profile: ``default-resources`` under ``set-resources``)."""
    problems = []
    for name, resources in sorted(rules.items()):
        wanted = ["slurm_partition", "slurm_account"]
        if name in MODEL_RULES:
            wanted.append("gpu" if "gres" not in resources or "gpu" in resources else "gres")
        for key in wanted:
            value = resources.get(key)
            if key == "slurm_partition" and value in (None, ""):
                problems.append(f"rule {name}: no slurm_partition; set {HINTS[key]}")
            elif key in ("gpu", "gres") and value is None:
                problems.append(f"rule {name}: no GPU request (gpu or gres); set {HINTS['gpu']}")
            elif is_placeholder(value):
                problems.append(f"rule {name}: {key} is still the placeholder {value!r}; set "
                                f"{HINTS.get(key, HINTS['gpu'])}")
    return problems


def check_site_keys(rules: dict[str, dict], profile: str = PROFILE) -> None:
    """Raise :class:`MimicError` (one line: the first problem and how many more) unless every site key is set."""
    problems = site_problems(rules)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise MimicError(f"slurm site keys in {profile}: {problems[0]}{more}")


def profile_value(value):
    """A rule's resource as the profile wrote it. Snakemake 9.2x wraps every value (``.raw``); earlier 9.x
    keeps numbers bare and turns strings into a closure that evaluates them (``val``: the string)."""
    import inspect

    if hasattr(value, "raw"):
        return value.raw
    if callable(value):
        written = inspect.getclosurevars(value).nonlocals.get("val")
        if isinstance(written, str):
            return written
    return value


def snakemake_rule_resources(workflow) -> dict[str, dict]:
    """The raw resource values of every rule Snakemake may submit (not local rules), as the profile gave them."""
    out = {}
    for rule in workflow.rules:
        if workflow.is_local(rule):
            continue
        out[rule.name] = {k: profile_value(v) for k, v in rule.resources.items() if not k.startswith("_")}
    return out
