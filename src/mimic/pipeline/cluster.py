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

Next to it, :func:`check_requests_fit` compares every such rule's ``cpus_per_task`` and memory with the largest node
of its partition (``sinfo``), so a request no node can hold is one line too, instead of a job pending forever.
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


# ---- requests larger than any node -------------------------------------------------------------------------------
#
# Slurm accepts a job whose request no node of its partition can hold and leaves it pending forever (or refuses it
# with a message Snakemake buries in its log). Before the first sbatch, the Snakefile's onstart compares each rule's
# request with the largest node of its partition (`sinfo`) and stops with one line naming the rule, the resource,
# the request, the largest node and the profile key to change.

SINFO_FORMAT = "%P %c %m"  # partition ("*" marks the default), CPUs and memory (MB) of one node


class OversizedRequest(MimicError, ValueError):
    """A rule asks for more CPUs or memory than any node of its partition has, or for a partition that is not there."""


def read_sinfo() -> str | None:
    """``sinfo -N`` in :data:`SINFO_FORMAT` (one line per node and partition); ``None`` where sinfo is not available
    or cannot reach the controller (then nothing is checked: sbatch reports it)."""
    import subprocess

    try:
        done = subprocess.run(["sinfo", "-h", "-N", "-o", SINFO_FORMAT], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def parse_nodes(sinfo: str) -> tuple[dict[str, list[tuple[int, int]]], str | None]:
    """The nodes of each partition as (CPUs, memory MB), and the default partition, from :func:`read_sinfo`'s text."""
    nodes: dict[str, list[tuple[int, int]]] = {}
    default = None
    for line in sinfo.splitlines():
        fields = line.split()
        if len(fields) != 3:
            continue
        partition, cpus, mem = fields
        if partition.endswith("*"):
            partition = default = partition[:-1]
        nodes.setdefault(partition, []).append((_number(cpus), _number(mem)))
    return nodes, default


def _number(text: str) -> int:
    """sinfo's count ("16", "16+" for a range of nodes: the smallest): 0 where it is unknown ("N/A")."""
    digits = text.rstrip("+")
    return int(digits) if digits.isdigit() else 0


def _request(value) -> int | None:
    """A resource as a whole number, or ``None`` where it is unset or computed per job (then it is not checked)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def oversized_requests(rules: dict[str, dict], nodes: dict[str, list[tuple[int, int]]],
                       default: str | None) -> list[str]:
    """One line per rule whose partition does not exist or whose request (``cpus_per_task``; ``mem_mb``, or
    ``mem_mb_per_cpu`` x CPUs, which sbatch takes in its place) no node of its partition holds."""
    problems = []
    for name, resources in sorted(rules.items()):
        partition = resources.get("slurm_partition") or default
        if not isinstance(partition, str) or is_placeholder(partition):
            continue  # no partition to compare with: the site-keys check names it
        if partition not in nodes:
            problems.append(f"rule {name}: partition {partition!r} does not exist (`sinfo -s` lists "
                            f"{', '.join(sorted(nodes)) or 'none'}); set slurm_partition under set-resources.{name}")
            continue
        problem = _too_large(name, partition, resources, nodes[partition])
        if problem:
            problems.append(problem)
    return problems


def _too_large(name: str, partition: str, resources: dict, nodes: list[tuple[int, int]]) -> str | None:
    cpus = _request(resources.get("cpus_per_task")) or 1
    per_cpu = _request(resources.get("mem_mb_per_cpu"))
    key, mem = ("mem_mb_per_cpu", per_cpu * cpus) if per_cpu else ("mem_mb", _request(resources.get("mem_mb")) or 0)
    most_cpus, most_mem = max(c for c, _ in nodes), max(m for _, m in nodes)
    where = f"the largest node of partition {partition!r}"
    if cpus > most_cpus:
        return (f"rule {name}: cpus_per_task {cpus} is more than {where} has ({most_cpus} CPUs); lower "
                f"cpus_per_task under set-resources.{name}")
    if mem > most_mem:
        asked = f"mem_mb_per_cpu {per_cpu} x {cpus} CPUs = {mem} MB" if per_cpu else f"mem_mb {mem}"
        return f"rule {name}: {asked} is more than {where} has ({most_mem} MB); lower {key} under set-resources.{name}"
    if not any(c >= cpus and m >= mem for c, m in nodes):
        return (f"rule {name}: no node of partition {partition!r} has both {cpus} CPUs and {mem} MB; lower "
                f"cpus_per_task or {key} under set-resources.{name}")
    return None


def check_requests_fit(rules: dict[str, dict], sinfo: str | None, profile: str = PROFILE) -> None:
    """Raise :class:`OversizedRequest` (one line: the first problem and how many more) when a rule's request is larger
    than any node of its partition; nothing is checked where ``sinfo`` is ``None`` (no sinfo on this machine)."""
    if sinfo is None:
        return
    problems = oversized_requests(rules, *parse_nodes(sinfo))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise OversizedRequest(f"slurm request larger than any node, in {profile}: {problems[0]}{more}")
