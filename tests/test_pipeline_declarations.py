"""workflow/Snakefile and dvc.yaml: they plan the whole DAG, pass lint and declare the same pipeline.

Snakemake runs as a subprocess on a copy of the workflow files (workflow/, params.yaml, dvc.yaml)
in a temporary directory, with a stand-in for the miniature model's directory (a config.json and
a weights file: their digest enters the model stages' settings files). Its jobs are read from the
dry run's ``--printshellcmds`` output; DVC's stages from DVC's own API (``dvc.repo.Repo``) on the
same files. The slow tests run both pipelines for real with a fake ``mimic`` on PATH and check
that editing one params.yaml key reruns the same commands in both, and only those, and that the
two tools share one state: what one ran, the other does not run again.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

pytest.importorskip("snakemake", reason="the pipeline tests need snakemake (pip install snakemake)")
pytest.importorskip("dvc", reason="the pipeline tests need dvc (pip install dvc)")

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("dvc.yaml", "params.yaml", "workflow")
# the default run: 2 tasks x 2 seeds; zero-shot, icl-1/2/4, icl-rices-1/4, icl and mimic; latency on the first seed
EXPECTED_JOBS = {"prepare": 4, "embed": 4, "sample_icd": 4, "extract_teacher": 4, "train": 4, "evaluate": 4 * 8,
                 "latency": 2, "report": 1, "all": 1}


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for model in params["run"]["models"]:
        path = params["models"][model].get("path")
        if path:  # stands in for the model's files
            (dest / path).mkdir(parents=True, exist_ok=True)
            (dest / path / "config.json").write_text("{}")
            (dest / path / "model.safetensors").write_bytes(b"weights")
    return dest


def snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


# -- Snakemake's jobs, from a dry run ----------------------------------------------------------


@dataclass
class Job:
    rule: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    command: str | None = None


_FIELD = re.compile(r"^    (input|output|log): (.*)$")


def parse_dry_run(text: str) -> list[Job]:
    """Jobs of ``snakemake -n --printshellcmds`` (Snakemake 8/9 text output)."""
    jobs: list[Job] = []
    for line in text.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            jobs.append(Job(m.group(1)))
        elif jobs and (m := _FIELD.match(line)):
            # a file's flags follow it in parentheses: "data/t/icd.json (update)"
            files = [re.sub(r" \(.*\)$", "", f.strip()) for f in m.group(2).split(",") if f.strip()]
            getattr(jobs[-1], {"input": "inputs", "output": "outputs", "log": "logs"}[m.group(1)]).extend(files)
        elif jobs and jobs[-1].command is None and (m := re.match(r"^(?:Shell command: )?(mimic .*)$", line)):
            jobs[-1].command = m.group(1).strip()
    return jobs


def plan(workdir: Path, target: str = "all") -> list[Job]:
    """The jobs of ``snakemake -n`` once `mimic validate` wrote the settings files (a dry run writes nothing: before
    that, it would show their stand-ins under a temporary directory as the jobs' settings inputs)."""
    validate = subprocess.run([str(Path(sys.executable).parent / "mimic"), "validate", "--params", "params.yaml"],
                              cwd=workdir, capture_output=True, text=True, timeout=300)
    assert validate.returncode == 0, validate.stderr
    result = snakemake(workdir, "--dry-run", "--printshellcmds", "--cores", "1", target)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = parse_dry_run(result.stdout + result.stderr)
    assert jobs, "no job found in the dry run's output:\n" + result.stdout + result.stderr
    return jobs


# -- DVC's stages, from DVC's own API ----------------------------------------------------------


@dataclass
class Stage:
    name: str
    command: str
    outputs: list[str]
    deps: list[str]
    params: list[str]
    persistent: list[str] = field(default_factory=list)


def dvc_stages(workdir: Path) -> list[Stage]:
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    if not (workdir / ".dvc").is_dir():
        Repo.init(str(workdir), no_scm=True).close()
    with Repo(str(workdir)) as repo:
        stages = []
        for stage in repo.index.stages:
            params = [p for d in stage.deps if isinstance(d, ParamsDependency) for p in (d.params or ["*"])]
            deps = [d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)]
            outs = [o.def_path for o in stage.outs]
            persistent = [o.def_path for o in stage.outs if o.persist]
            stages.append(Stage(stage.name, " ".join(stage.cmd.split()), outs, deps, params, persistent))
    return stages


# -- the comparison ----------------------------------------------------------------------------

VALIDATE = "mimic validate --params params.yaml"
SETTINGS_DIR = "results/settings"


def _under(path: str, dep: str) -> bool:
    return path == dep or path.startswith(dep.rstrip("/") + "/")


def differences(jobs: list[Job], stages: list[Stage], params: dict) -> list[str]:
    """Where the Snakemake jobs and the DVC stages disagree (empty when they agree).

    Compared per command line: the outputs (Snakemake's output files vs DVC's outs, metrics and
    plots; logs are not DVC outputs: they record attempts, failures included) and the inputs
    (Snakemake's input files vs DVC's deps, a DVC directory dep covering the files under it),
    less what dvc.yaml documents it cannot declare: the train logs of the report (reached
    through evaluate-trained). DVC's first stage, ``mimic validate``, writes the settings files
    that the Snakefile writes when it is read: it must be the only stage Snakemake lacks, and
    every settings file a job reads must be under its output.
    """
    problems: list[str] = []
    snake = {}
    for job in jobs:
        if job.rule == "all":
            continue
        if job.command is None:
            problems.append(f"snakemake job of rule {job.rule} has no shell command")
            continue
        if job.command in snake:
            problems.append(f"snakemake runs {job.command!r} twice")
        snake[job.command] = job
    dvc = {}
    for stage in stages:
        if stage.command in dvc:
            problems.append(f"dvc runs {stage.command!r} twice")
        dvc[stage.command] = stage

    for command in sorted(set(snake) - set(dvc)):
        problems.append(f"only snakemake runs: {command}")
    for command in sorted(set(dvc) - set(snake) - {VALIDATE}):
        problems.append(f"only dvc runs: {command}")
    validate = dvc.get(VALIDATE)
    if validate is None:
        problems.append(f"dvc has no `{VALIDATE}` stage")
    elif validate.outputs != [SETTINGS_DIR]:
        problems.append(f"dvc stage validate writes {validate.outputs}, not [{SETTINGS_DIR!r}]")

    for stage in stages:
        for key in stage.params:
            node = params
            for part in key.split(".") if key != "*" else []:
                node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                problems.append(f"dvc stage {stage.name}: params key {key} is not in params.yaml")
        if sorted(stage.persistent) != sorted(stage.outputs):
            problems.append(f"dvc stage {stage.name}: outputs not persist: true (dvc would delete them before "
                            f"the stage runs): {sorted(set(stage.outputs) - set(stage.persistent))}")

    for command in sorted(set(snake) & set(dvc)):
        job, stage = snake[command], dvc[command]
        # extract_teacher declares the cache's manifest (Snakemake never deletes the cache), dvc its directory
        made = {next((d for d in stage.outputs if _under(p, d)), p) for p in job.outputs}
        declared = set(stage.outputs)
        if made != declared:
            problems.append(
                f"{command}: outputs differ; "
                f"snakemake only {sorted(made - declared)}, dvc only {sorted(declared - made)}"
            )
        inputs = {
            path
            for path in job.inputs
            if not (job.rule == "report" and path.startswith("results/checkpoints/"))
        }
        settings = [p for p in inputs if p.startswith(SETTINGS_DIR + "/")]
        if len(settings) != 1:
            problems.append(f"{command}: reads {len(settings)} settings files, not one")
        uncovered = sorted(p for p in inputs if not any(_under(p, d) for d in stage.deps))
        unused = sorted(d for d in stage.deps if not any(_under(p, d) for p in inputs))
        if uncovered or unused:
            problems.append(
                f"{command}: inputs differ; not a dvc dep {uncovered}, dvc dep of no snakemake input {unused}"
            )
    return problems


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("workflow"))


@pytest.fixture(scope="module")
def jobs(workflow) -> list[Job]:
    return plan(workflow)


@pytest.fixture(scope="module")
def params(workflow) -> dict:
    return yaml.safe_load((workflow / "params.yaml").read_text())


def test_dry_run_plans_the_whole_dag(jobs):
    assert Counter(job.rule for job in jobs) == EXPECTED_JOBS
    for job in jobs:
        if job.rule != "all":
            assert job.command and job.command.startswith("mimic ")
            assert " --params params.yaml " in job.command
            assert job.logs and all(log.startswith("results/logs/") for log in job.logs)
            assert f"--log {job.logs[0]}" in job.command
    commands = {job.command for job in jobs}
    for seed in (0, 1):  # each seed's own job, its own log
        assert (
            f"mimic train --params params.yaml --model mini-idefics2 --task shapes-names-vqa --seed {seed} "
            f"--method mimic --log results/logs/train/seed-{seed}/mini-idefics2-shapes-names-vqa-mimic.log"
        ) in commands
    # the evaluation of a seed reads that seed's checkpoint and data; latency the first seed's
    for job in jobs:
        if job.rule in ("evaluate", "train", "extract_teacher"):
            seed = re.search(r"--seed (\d+)", job.command).group(1)
            assert all(f"/seed-{seed}" in p for p in job.inputs + job.outputs), job.command
        if job.rule == "latency":
            assert " --seed 0 " in job.command and all("seed-1" not in p for p in job.inputs)
    trained = [job for job in jobs if job.rule == "evaluate" and "--method mimic " in job.command]
    zero = [job for job in jobs if job.rule == "evaluate" and "--method zero-shot " in job.command]
    icl = [job for job in jobs if job.rule == "evaluate" and "--method icl " in job.command]
    # the checkpoint only for trained methods, the ICL predictions for every method but icl
    assert all(any(p.endswith("/mimic/mimic.safetensors") for p in job.inputs) for job in trained)
    assert not any("checkpoints" in p for job in zero + icl for p in job.inputs)
    assert all(any(p.endswith("/icl/predictions.jsonl") for p in job.inputs) for job in trained + zero)
    assert not any(p.endswith("predictions.jsonl") for job in icl for p in job.inputs)


def test_lint_passes(workflow):
    result = snakemake(workflow, "--lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakemake_and_dvc_declare_the_same_pipeline(workflow, jobs, params):
    stages = dvc_stages(workflow)
    assert len(stages) == sum(EXPECTED_JOBS.values()) - 1 + 1  # all but rule `all`, and validate
    assert differences(jobs, stages, params) == []
    validate = next(s for s in stages if s.name == "validate")
    assert validate.params == ["*"]  # all of params.yaml: `dvc params diff` shows every change
    assert all(s.params == [] for s in stages if s.name != "validate")  # the settings files carry them


def test_a_drift_in_dvc_yaml_is_caught(workflow, jobs, params, tmp_path):
    original = yaml.safe_load((workflow / "dvc.yaml").read_text())

    def drifted(mutate) -> list[str]:
        copy_dir = tmp_path / f"dvc-{len(list(tmp_path.iterdir()))}"
        copy_dir.mkdir()
        shutil.copy2(workflow / "params.yaml", copy_dir / "params.yaml")
        data = copy.deepcopy(original)
        mutate(data["stages"])
        (copy_dir / "dvc.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        return differences(jobs, dvc_stages(copy_dir), params)

    cmd = drifted(lambda s: s["sample-icd"].update(cmd=s["sample-icd"]["cmd"].replace("--task", "--shots 1 --task")))
    assert any(p.startswith("only dvc runs: mimic sample-icd --params params.yaml --shots 1") for p in cmd)
    assert any(p.startswith("only snakemake runs: mimic sample-icd") for p in cmd)

    out = drifted(lambda s: s["prepare"]["outs"].pop())  # meta.json
    assert any("outputs differ; snakemake only ['data/shapes-names-vqa/seed-0/meta.json']" in p for p in out)

    key = drifted(lambda s: s["train"].update(params=["method.${item.method}"]))  # a typo
    stage = "train@mini-idefics2-shapes-names-vqa-0-mimic"
    assert f"dvc stage {stage}: params key method.mimic is not in params.yaml" in key

    setting = drifted(lambda s: s["train"]["deps"].__setitem__(0, "results/settings/train/${item.task}.json"))
    assert any(p.startswith("mimic train ") and "not a dvc dep ['results/settings/train/mini-idefics2/" in p
               for p in setting)

    kept = drifted(lambda s: s["train"]["outs"][0].update({next(iter(s["train"]["outs"][0])): {"persist": False}}))
    assert any("outputs not persist: true" in p and p.endswith("/mimic/mimic.safetensors']") for p in kept)

    dep = drifted(lambda s: s["evaluate-untrained"]["deps"].pop())  # the ICL predictions
    assert any("--method zero-shot" in p and "not a dvc dep" in p and "icl/predictions.jsonl" in p for p in dep)


def test_a_drift_in_the_snakefile_is_caught(workflow, params, tmp_path):
    drifted = copy_workflow(tmp_path / "drifted")
    rules = drifted / "workflow" / "rules" / "train.smk"
    line = 'train_log=update("results/checkpoints/{model}/{task}/seed-{seed}/{method}/train_log.csv"),'
    extra = 'optimizer=update("results/checkpoints/{model}/{task}/seed-{seed}/{method}/optimizer.pt"),'
    assert line in rules.read_text()
    rules.write_text(rules.read_text().replace(line, f"{line}\n        {extra}"))
    problems = differences(plan(drifted), dvc_stages(workflow), params)
    trained, tasks, seeds = params["run"]["trained"], params["run"]["tasks"], params["run"]["seeds"]
    assert len(problems) == len(tasks) * len(seeds) * len(trained)  # every train job of each task and seed
    assert all("outputs differ; snakemake only ['results/checkpoints/mini-idefics2/" in p for p in problems)
    assert sorted(p.rsplit("/", 2)[1] for p in problems) == sorted(trained * len(tasks) * len(seeds))
    assert all(p.endswith("/optimizer.pt'], dvc only []") for p in problems)


def test_online_teacher_differs_only_as_dvc_yaml_documents(params, tmp_path):
    """dvc.yaml cannot make the teacher cache conditional: with teacher.mode online, Snakemake
    skips extract-teacher while `dvc repro` still builds the (unused) cache."""
    online = copy_workflow(tmp_path / "online")
    data = yaml.safe_load((online / "params.yaml").read_text())
    data["teacher"]["mode"] = "online"
    (online / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    problems = differences(plan(online), dvc_stages(online), data)
    teacher_jobs = [p for p in problems if p.startswith("only dvc runs: mimic extract-teacher ")]
    teacher_deps = "not a dvc dep [], dvc dep of no snakemake input ['results/teacher/mini-idefics2/"  # the cache
    train_deps = [p for p in problems if p.startswith("mimic train ") and teacher_deps in p]
    tasks = len(data["run"]["tasks"]) * len(data["run"]["seeds"])  # each task on each seed
    assert len(teacher_jobs) == tasks and len(train_deps) == tasks * len(data["run"]["trained"])
    assert sorted(problems) == sorted(teacher_jobs + train_deps)


# -- the rerun triggers and the shared state, both tools for real with a fake `mimic` ----------

FAKE_MIMIC = textwrap.dedent(
    '''
    """A stand-in for `mimic`: each stage writes its declared outputs with fresh content.

    `validate` and `record` are the real ones (they decide what reruns and what DVC records).
    """
    import argparse, os, sys, uuid
    from pathlib import Path

    stage, argv = sys.argv[1], sys.argv[2:]
    parser = argparse.ArgumentParser()
    for option in ("--params", "--model", "--task", "--seed", "--method", "--log"):
        parser.add_argument(option)
    a = parser.parse_args(argv)
    with open(os.environ["FAKE_MIMIC_CALLS"], "a") as fh:
        fh.write(" ".join(["mimic", stage, *argv]) + "\\n")
    if stage in ("validate", "record"):
        from mimic.cli import main
        sys.exit(main(sys.argv[1:]))
    task = f"{a.task}/seed-{a.seed}"
    outputs = {
        "prepare": [f"data/{task}/{f}" for f in ("train.parquet", "support.parquet", "eval.parquet", "meta.json")],
        "embed": [f"data/{task}/embeddings.safetensors"],
        "sample-icd": [f"data/{task}/icd.json"],
        "extract-teacher": [f"results/teacher/{a.model}/{task}/manifest.json"],
        "train": [f"results/checkpoints/{a.model}/{task}/{a.method}/{f}"
                  for f in ("mimic.safetensors", "mimic_config.json", "train_log.csv", "train_summary.json")],
        "evaluate": [f"results/eval/{a.model}/{task}/{a.method}/{f}" for f in ("predictions.jsonl", "metrics.json",
                                                                                  "timing.json")],
        "latency": [f"results/latency/{a.model}/{a.task}.json"],
        "report": ["results/summary.csv", "results/summary.md", "results/metrics.json"]
        + [f"results/plots/{f}.png" for f in ("score_by_method", "training_curves", "score_vs_shots",
                                                        "score_vs_latency")],
    }[stage]
    for path in [*outputs, a.log]:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(uuid.uuid4().hex)
    '''
)
BOOKKEEPING = ("validate", "record")  # not stages of the results: left out of the commands a run ran


class FakePipeline:
    """A workflow copy where `mimic` is FAKE_MIMIC; each run reports the stage commands it executed."""

    def __init__(self, root: Path, tool: str, run: dict, dvc: bool | None = None):
        self.tool = tool
        self.dir = copy_workflow(root / "work")
        bin_dir = root / "bin"
        bin_dir.mkdir()
        (bin_dir / "mimic").write_text(f"#!{sys.executable}\n{FAKE_MIMIC}")
        (bin_dir / "mimic").chmod(0o755)
        self.calls = root / "calls.txt"
        self.bookkeeping: list[str] = []
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "FAKE_MIMIC_CALLS": str(self.calls),
            "DVC_NO_ANALYTICS": "1",
        }
        self.edit("run", run)
        if tool == "dvc" if dvc is None else dvc:
            from dvc.repo import Repo

            Repo.init(str(self.dir), no_scm=True).close()

    def edit(self, key: str, value) -> None:
        path = self.dir / "params.yaml"
        data = yaml.safe_load(path.read_text())
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        assert node.get(last) != value, f"editing {key} to its current value {value!r} tests nothing"
        node[last] = value
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    def command(self, tool: str | None = None) -> list[str]:
        if (tool or self.tool) == "snakemake":
            return [sys.executable, "-m", "snakemake", "--cores", "4", "all"]
        return [sys.executable, "-m", "dvc", "repro"]

    def start(self, tool: str | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            self.command(tool),
            cwd=self.dir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def finish(self, process: subprocess.Popen) -> set[str]:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output
        self.output = output
        calls = self.calls.read_text().splitlines() if self.calls.exists() else []
        self.calls.unlink(missing_ok=True)
        self.bookkeeping = [c for c in calls if c.split()[1] in BOOKKEEPING]
        calls = [c for c in calls if c.split()[1] not in BOOKKEEPING]
        assert len(calls) == len(set(calls)), f"{self.tool} ran a command twice"
        return set(calls)

    def run(self, tool: str | None = None) -> set[str]:
        return self.finish(self.start(tool))

    def dvc(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=self.dir, env=self.env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


def run_both(*pipelines: FakePipeline) -> list[set[str]]:
    """Run the pipelines side by side; the commands each executed."""
    processes = [p.start() for p in pipelines]
    return [p.finish(process) for p, process in zip(pipelines, processes, strict=True)]


RUN = {"models": ["mini-idefics2"], "tasks": ["shapes-vqa"], "seeds": [0], "untrained": ["zero-shot", "icl-2"],
       "trained": ["mimic"]}


@pytest.mark.slow
def test_editing_a_param_reruns_the_same_jobs_in_snakemake_and_dvc(tmp_path):
    snake = FakePipeline(tmp_path / "snakemake", "snakemake", RUN)
    dvc = FakePipeline(tmp_path / "dvc", "dvc", RUN)

    everything, by_dvc = run_both(snake, dvc)
    assert everything == by_dvc
    assert Counter(c.split()[1] for c in everything) == {
        "prepare": 1,
        "embed": 1,
        "sample-icd": 1,
        "extract-teacher": 1,
        "train": 1,
        "evaluate": 4,
        "latency": 1,
        "report": 1,
    }
    assert run_both(snake, dvc) == [set(), set()]  # nothing changed, nothing runs

    def selected(stages: tuple[str, ...], method: str | None = None) -> set[str]:
        return {
            c
            for c in everything
            if c.split()[1] in stages
            and (method is None or f" --method {method} " in c or c.split()[1] in ("latency", "report"))
        }

    rounds = [
        {  # one training parameter: train, evaluate and report of that method only; and one ICL
            # baseline's shots: its evaluation (and the report), nothing else
            "methods.mimic.train.lr": 3.0e-3,  # differs from params.yaml's value
            "methods.icl-2.shots": 3,
        },
        {  # result-neutral settings: how the work is batched and where it runs
            "teacher.batch_size": 8,
            "eval.batch_size": 7,
            "models.mini-idefics2.threads": 2,
            "models.mini-idefics2.device": "cpu",
        },
        {  # the teacher: its cache and what is trained from it
            "teacher.target": "layer",
        },
        {  # the VQA metric variant: every evaluation (metrics.json names it) and the report, which rescores
            "eval.metric_variant": "reference",
        },
        {  # a second seed: its own jobs and the report; nothing of the first seed reruns, latency times the first
            "run.seeds": [0, 1],
        },
    ]
    expected = [
        # (the side-by-side latency times every method: a new checkpoint or other shots rerun it)
        selected(("train", "evaluate", "latency", "report"), "mimic") | selected(("evaluate",), "icl-2"),
        set(),
        selected(("extract-teacher",)) | selected(("train", "evaluate", "latency", "report"), "mimic"),
        selected(("evaluate", "report")),
        {c.replace("--seed 0 ", "--seed 1 ").replace("/seed-0/", "/seed-1/") for c in everything
         if c.split()[1] not in ("latency", "report")} | selected(("report",)),
    ]
    for edits, commands in zip(rounds, expected, strict=True):
        for key, value in edits.items():
            snake.edit(key, value)
            dvc.edit(key, value)
        for tool, ran in zip(("snakemake", "dvc"), run_both(snake, dvc), strict=True):
            assert ran == commands, (
                f"{tool} after editing {edits}: did not run {sorted(commands - ran)}, ran too {sorted(ran - commands)}"
            )


@pytest.mark.slow
def test_snakemake_and_dvc_share_one_state(tmp_path):
    """Snakemake runs, DVC versions: what one tool ran, the other does not run again, in either order."""
    work = FakePipeline(tmp_path / "shared", "snakemake", RUN, dvc=True)
    assert len(work.run("snakemake")) == 11  # prepare, embed, sample-icd, teacher, train, 4 evaluations, latency,
    # report
    assert "mimic record --params params.yaml" in work.bookkeeping  # the Snakefile's onsuccess
    assert work.dvc("status").strip() == "Data and pipelines are up to date."
    assert work.run("dvc") == set()  # `dvc repro` right after: up to date

    first = {p: p.read_bytes() for p in (work.dir / "results" / "checkpoints").rglob("*") if p.is_file()}
    first_lock, first_params = (work.dir / "dvc.lock").read_text(), (work.dir / "params.yaml").read_text()
    work.edit("methods.mimic.train.lr", 3.0e-3)
    ran = work.run("dvc")  # only the stages the edit affects
    assert {c.split()[1] for c in ran} == {"train", "evaluate", "latency", "report"}
    assert all("--method mimic" in c for c in ran if c.split()[1] not in ("latency", "report")) and len(ran) == 4
    mimic_jobs = ran
    assert work.run("snakemake") == set()  # Snakemake: nothing to do after DVC ran them
    assert work.dvc("status").strip() == "Data and pipelines are up to date."

    # Back to the first lr by hand: the outputs on disk are those of 3e-3, so both tools rerun them
    # (Snakemake must not trust the checksums it recorded for its own first run).
    work.edit("methods.mimic.train.lr", 5.0e-2)
    assert work.run("snakemake") == mimic_jobs
    assert work.run("dvc") == set()

    # An edit that ran nowhere, edited back: nothing to do (Snakemake's checksum of the settings file),
    # though its settings file was rewritten twice.
    work.edit("methods.mimic.train.lr", 4.0e-3)
    assert work.dvc("status").strip() != "Data and pipelines are up to date."
    subprocess.run(work.command("snakemake")[:-1] + ["--dry-run", "all"], cwd=work.dir, env=work.env, check=True,
                   capture_output=True)  # (writes the edited settings)
    work.edit("methods.mimic.train.lr", 5.0e-2)
    assert work.run("snakemake") == set()
    assert work.run("dvc") == set()

    work.edit("icd.seed", 1)  # and the other way round: Snakemake runs, DVC has nothing left to do
    assert len(work.run("snakemake")) == 9  # sample-icd and everything after it
    assert work.run("dvc") == set()

    (work.dir / "params.yaml").write_text(first_params)  # the first version, as `git checkout` would
    (work.dir / "dvc.lock").write_text(first_lock)
    work.dvc("checkout")  # DVC's cache brings back the checkpoint Snakemake made first
    assert {p: p.read_bytes() for p in first} == first
    assert work.run("dvc") == set()

    # and `dvc push` / `dvc pull` share it: a clone with the lock but neither cache nor outputs
    work.dvc("remote", "add", "-d", "store", str(tmp_path / "remote"))
    work.dvc("push")
    shutil.rmtree(work.dir / ".dvc" / "cache")
    shutil.rmtree(work.dir / "results" / "checkpoints")
    work.dvc("pull")
    assert {p: p.read_bytes() for p in first} == first
    assert work.dvc("status").strip() == "Data and pipelines are up to date."
