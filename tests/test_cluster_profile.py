"""The Slurm profile's site keys (mimic.pipeline.cluster): the shipped profile names every one of them as a
placeholder, and the check accepts it once they are filled in, in either GPU request syntax.

Resources are resolved as Snakemake resolves them: ``default-resources`` under the rule's
``set-resources`` (the model rules share one block through a YAML anchor). tests/test_slurm.py
runs the check through Snakemake on a real Slurm.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mimic.errors import MimicError
from mimic.pipeline.cluster import MODEL_RULES, check_site_keys, site_problems

REPO = Path(__file__).resolve().parents[1]
SUBMITTED = ("prepare", "sample_icd", "merge_teacher", "merge_evaluate", *MODEL_RULES)


def resolved(profile: dict) -> dict[str, dict]:
    return {rule: {**profile["default-resources"], **profile["set-resources"].get(rule, {})} for rule in SUBMITTED}


SHIPPED = (REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text()


@pytest.fixture
def profile() -> dict:
    return yaml.safe_load(SHIPPED)


def filled(**replace: str) -> dict:
    """The shipped profile with its placeholders replaced in the text, as a user edits it."""
    text = SHIPPED
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return yaml.safe_load(text)


def test_the_shipped_profile_names_every_site_key(profile):
    problems = site_problems(resolved(profile))
    flagged = {(line.split(":")[0], line.split(": ")[1].split(" ")[0]) for line in problems}
    expected = {(f"rule {r}", key) for r in SUBMITTED for key in ("slurm_account", "slurm_partition")}
    expected |= {(f"rule {r}", "gpu") for r in MODEL_RULES}
    assert flagged == expected
    assert any(line.startswith("rule train: gpu is still the placeholder '<gpus>'; set GPUs per job as `gpu: 1`")
               for line in problems)
    with pytest.raises(MimicError) as err:
        check_site_keys(resolved(profile))
    assert str(err.value).startswith("slurm site keys in workflow/profiles/slurm/config.yaml: rule embed: ")
    assert str(err.value).endswith(f"(and {len(problems) - 1} more)") and "\n" not in str(err.value)
    # the shipped profile asks for a GPU on every model rule and on nothing else
    rules = resolved(profile)
    assert {r for r in SUBMITTED if "gpu" in rules[r] or "gres" in rules[r]} == set(MODEL_RULES)
    assert profile["slurm-status-command"] == "squeue"


@pytest.mark.parametrize("gpu_request", ["gpu: 1", "gpu: 2\n    gpu_model: a100", 'gres: "gpu:1"', "gpu: 0"])
def test_a_filled_in_profile_passes_in_either_gpu_syntax(gpu_request):
    profile = filled(**{"<account>": "lab42", "<cpu-partition>": "cpu", "<gpu-partition>": "gpu",
                        "gpu: <gpus>": gpu_request})
    rules = resolved(profile)
    assert site_problems(rules) == []
    check_site_keys(rules)
    assert {r for r in SUBMITTED if rules[r]["slurm_partition"] == "gpu"} == set(MODEL_RULES)
    assert rules["train"]["runtime"] == 480 and rules["evaluate"]["runtime"] == 240


def test_no_account_and_missing_keys():
    # a site without accounts: the line deleted
    profile = filled(**{"  slurm_account: <account>": "", "<cpu-partition>": "cpu", "<gpu-partition>": "gpu",
                        "gpu: <gpus>": "gpu: 1"})
    rules = resolved(profile)
    assert site_problems(rules) == []
    del rules["evaluate_part"]["gpu"]
    rules["merge_teacher"]["slurm_partition"] = ""
    assert site_problems(rules) == [
        "rule evaluate_part: no GPU request (gpu or gres); set GPUs per job as `gpu: 1` (sbatch --gpus), or replace "
        "it by `gres: \"gpu:1\"` where your site requests GPUs by --gres; `gpu: 0` on a partition without GPUs",
        "rule merge_teacher: no slurm_partition; set the partition to submit to (`sinfo -s` lists them)",
    ]


def test_profile_values_are_read_back_as_written_under_the_installed_snakemake():
    """Snakemake 9.2x wraps a rule's resources in Resource (.raw), earlier 9.x turns a string into a
    closure that evaluates it: either way the check sees the text of the profile."""
    import snakemake.resources as resources

    from mimic.pipeline.cluster import profile_value

    if hasattr(resources, "eval_resource_expression"):  # Snakemake < 9.2x
        stored = {"slurm_account": resources.eval_resource_expression("<account>"), "runtime": 60}
    else:
        stored = {"slurm_account": resources.Resource("slurm_account", "<account>"),
                  "runtime": resources.Resource("runtime", 60)}
    read = {k: profile_value(v) for k, v in stored.items()}
    assert read == {"slurm_account": "<account>", "runtime": 60}
    assert site_problems({"prepare": {"slurm_partition": "local", **read}}) == [
        "rule prepare: slurm_account is still the placeholder '<account>'; set the account to charge "
        "(`sacctmgr show assoc user=$USER`), or delete the line where your site has no accounts"]


# ---- requests larger than any node (check_requests_fit) ----------------------------------------------------------

# `sinfo -h -N -o "%P %c %m"` of a small site: a CPU partition (the default) of two node kinds, a GPU partition
SINFO = """\
cpu* 32 128000
cpu* 64 64000
gpu 16 500000
gpu 16 500000
"""


def fit_rules(**overrides: dict) -> dict[str, dict]:
    """Every submitted rule of the shipped profile, filled in for the SINFO site, with ``overrides`` per rule."""
    rules = resolved(filled(**{"<account>": "lab42", "<cpu-partition>": "cpu", "<gpu-partition>": "gpu",
                               "gpu: <gpus>": "gpu: 1"}))
    for rule, resources in overrides.items():
        rules[rule].update(resources)
    return rules


def test_the_shipped_sizes_fit_and_the_nodes_are_read_per_partition():
    from mimic.pipeline.cluster import check_requests_fit, oversized_requests, parse_nodes

    nodes, default = parse_nodes(SINFO + "garbage line\n")
    assert default == "cpu" and nodes == {"cpu": [(32, 128000), (64, 64000)], "gpu": [(16, 500000)] * 2}
    assert oversized_requests(fit_rules(), nodes, default) == []
    check_requests_fit(fit_rules(), SINFO)
    check_requests_fit(fit_rules(train={"mem_mb": 10**9}), None)  # no sinfo here: not checked


@pytest.mark.parametrize(("override", "line"), [
    ({"cpus_per_task": 17}, "rule train: cpus_per_task 17 is more than the largest node of partition 'gpu' has "
                            "(16 CPUs); lower cpus_per_task under set-resources.train"),
    ({"mem_mb": 500001}, "rule train: mem_mb 500001 is more than the largest node of partition 'gpu' has "
                         "(500000 MB); lower mem_mb under set-resources.train"),
    ({"mem_mb_per_cpu": 40000, "cpus_per_task": 16},
     "rule train: mem_mb_per_cpu 40000 x 16 CPUs = 640000 MB is more than the largest node of partition 'gpu' has "
     "(500000 MB); lower mem_mb_per_cpu under set-resources.train"),
    ({"slurm_partition": "cpu", "cpus_per_task": 48, "mem_mb": 100000},
     "rule train: no node of partition 'cpu' has both 48 CPUs and 100000 MB; lower cpus_per_task or mem_mb under "
     "set-resources.train"),
    ({"slurm_partition": "gpu-big"}, "rule train: partition 'gpu-big' does not exist (`sinfo -s` lists cpu, gpu); "
                                     "set slurm_partition under set-resources.train"),
])
def test_a_request_no_node_holds_is_one_line_naming_rule_resource_and_key(override, line):
    from mimic.pipeline.cluster import OversizedRequest, check_requests_fit, oversized_requests, parse_nodes

    assert oversized_requests(fit_rules(train=override), *parse_nodes(SINFO)) == [line]
    with pytest.raises(OversizedRequest) as err:
        check_requests_fit(fit_rules(train=override), SINFO)
    assert str(err.value) == f"slurm request larger than any node, in workflow/profiles/slurm/config.yaml: {line}"
    assert isinstance(err.value, MimicError)


def test_a_rule_without_partition_takes_the_default_one_and_each_problem_is_counted():
    from mimic.pipeline.cluster import OversizedRequest, check_requests_fit, oversized_requests, parse_nodes

    rules = fit_rules(prepare={"slurm_partition": None, "mem_mb": 128001}, train={"cpus_per_task": 99})
    assert [line.split(":")[0] for line in oversized_requests(rules, *parse_nodes(SINFO))] == [
        "rule prepare", "rule train"]
    assert "partition 'cpu' has (128000 MB)" in oversized_requests(rules, *parse_nodes(SINFO))[0]
    with pytest.raises(OversizedRequest, match=r"^slurm request larger than any node, in .*: rule prepare: .*"
                                               r" \(and 1 more\)$"):
        check_requests_fit(rules, SINFO)
    # sizes Snakemake computes per job (a callable, an expression) and placeholders are not compared
    assert oversized_requests(fit_rules(train={"mem_mb": "2 * input.size_mb", "slurm_partition": "<gpu-partition>"}),
                              *parse_nodes(SINFO)) == []
