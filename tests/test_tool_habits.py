"""The habits DVC and Snakemake users bring, through the real tools on the miniature pipeline.

One workspace (a copy of workflow/, dvc.yaml and the shipped miniature model; params.yaml shrunk to one task; a
git and DVC repository) is built by `snakemake all` and committed as the README says (`git add -A && git commit`:
params.yaml, dvc.lock). Then:

- `snakemake -n` writes nothing, and an edit of a key of each stage kind is named alike by the three tools:
  after `mimic validate`, `dvc status` and `dvc repro --dry` name exactly the stages whose settings changed,
  which are the jobs `snakemake -n` plans for that reason, and Snakemake plans them and everything downstream of
  them in DVC's graph; a result-neutral key (eval.batch_size) reruns nothing in any of them;
- `dvc exp run --queue -S ...` twice, `dvc queue start`: a two-value sweep from the clean checkout, and
  `dvc exp show` (the README's columns) is one screen wide with the parameter and the headline metrics;
- `dvc metrics show` reads only results/metrics.json, numbers only; `dvc plots show` renders offline;
- `snakemake --report` holds every table and plot with its caption, rendered by headless Chromium;
- `snakemake all --configfile other.yaml` runs a second configuration (other.yaml laid over params.yaml).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_faults import shrink  # the smallest run with every stage

pytestmark = pytest.mark.slow
pytest.importorskip("snakemake")
pytest.importorskip("dvc")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL, TASK = "mini-idefics2", "shapes-vqa"
# Not the project's files: the tools' own state, which their read-only commands may refresh.
TOOL_STATE = (".git/", ".dvc/tmp/", ".dvc/cache/", ".snakemake/")
# What the README tells a user to run to see a sweep (tests/test_docs.py checks it is there).
EXP_SHOW = ("exp", "show", "--only-changed", "--drop", "results/|data/|Created|Executor", "--csv")


class Workspace:
    def __init__(self, root: Path):
        self.root = root
        identity = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                    for what, value in (("NAME", "Test"), ("EMAIL", "test@example.org"))}
        self.env = {**os.environ, **identity, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
                    "DVC_NO_ANALYTICS": "1"}

    def run(self, tool: str, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
        argv = {"snakemake": [sys.executable, "-m", "snakemake"], "dvc": [sys.executable, "-m", "dvc"],
                "mimic": [str(BIN / "mimic")], "git": ["git"]}[tool] + list(args)
        done = subprocess.run(argv, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    def files(self) -> dict[str, tuple[int, str]]:
        """Every project file (not the tools' own state): mtime and sha256."""
        out = {}
        for path in self.root.rglob("*"):
            rel = path.relative_to(self.root).as_posix()
            if path.is_file() and not rel.startswith(TOOL_STATE):
                out[rel] = (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        return out

    def edit(self, key: str, value) -> None:
        path = self.root / "params.yaml"
        params = yaml.safe_load(path.read_text())
        *parents, last = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        assert node[last] != value, f"{key} is already {value!r}: the edit would test nothing"
        node[last] = value
        path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def ws(tmp_path_factory, pipeline_copy) -> Workspace:
    params = shrink(yaml.safe_load((REPO / "params.yaml").read_text()))
    workspace = Workspace(pipeline_copy(tmp_path_factory.mktemp("habits"), params, MODEL))
    shutil.copy2(REPO / ".gitignore", workspace.root / ".gitignore")
    workspace.run("git", "init", "-q")
    workspace.run("dvc", "init", "-q")
    done = workspace.run("snakemake", "all")
    assert "dvc.lock is not committed: `git add -A && git commit`" in done.stdout + done.stderr  # mimic record says
    workspace.run("git", "add", "-A")
    workspace.run("git", "commit", "-q", "-m", "the miniature run")
    assert workspace.run("git", "status", "--porcelain").stdout == ""  # dvc.lock and params.yaml committed
    return workspace


# -- what an edit reruns ------------------------------------------------------------------------------------------


def snakemake_plan(ws: Workspace, *args: str) -> tuple[set[str], set[str]]:
    """(every command `snakemake -n` plans, the commands it plans because their settings changed)."""
    done = ws.run("snakemake", "-n", "--printshellcmds", "all", *args)
    planned, direct = set(), set()
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", done.stdout + done.stderr):
        command = next((m.group(1) for m in re.finditer(r"^(?:Shell command: )?(mimic .*)$", block, re.M)), None)
        if command is None:
            continue
        planned.add(" ".join(command.split()))
        inputs = next((line for line in block.splitlines() if line.strip().startswith("input:")), "")
        if "mimic-dry-run-settings-" in inputs:  # its settings file's stand-in (mimic.pipeline.stages.preview_settings)
            direct.add(" ".join(command.split()))
    return planned, direct


def dvc_stages(ws: Workspace):
    """{stage name: command} and {stage name: every stage downstream of it} from DVC's own API."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(ws.root)) as repo:
        graph = repo.index.graph  # edges: a stage -> the stages it depends on
        commands = {s.name: " ".join(s.cmd.split()) for s in graph.nodes if s.cmd}
        downstream = {s.name: {d.name for d in nx.ancestors(graph, s) if d.cmd} for s in graph.nodes
                      if s.cmd}
    return commands, downstream


EDITS = [  # (the first stage kind the edit reaches, key, new value)
    ("prepare", f"tasks.{TASK}.n_eval", 5),
    ("embed", "icd.embedding", None),
    ("sample-icd", "icd.seed", 1),
    ("extract-teacher", "teacher.shard_size", 3),
    ("train", "methods.mimic.train.lr", 2.0e-2),
    ("evaluate", "eval.max_new_tokens", {"vqa": 8, "caption": 20}),
    ("latency", "latency.rounds", 3),
    ("report", "eval.metric_variant", "reference"),
    ("nothing (result-neutral)", "eval.batch_size", 3),
]


@pytest.mark.parametrize(("kind", "key", "value"), EDITS, ids=[e[0] for e in EDITS])
def test_a_params_edit_is_named_alike_by_snakemake_and_dvc_and_the_dry_run_writes_nothing(ws, kind, key, value):
    commands, downstream = dvc_stages(ws)
    ws.edit(key, value)
    try:
        before = ws.files()
        planned, direct = snakemake_plan(ws)
        assert ws.files() == before, "snakemake -n wrote into the project"

        ws.run("mimic", "validate", "--params", "params.yaml")  # the settings files: what DVC's stages depend on
        status = json.loads(ws.run("dvc", "status", "--json").stdout or "{}")
        changed = {commands[name] for name in status if name != "validate"}
        dry = ws.run("dvc", "repro", "--dry")
        ran = re.finditer(r"Running stage '([^']+)':\n> (.*)", dry.stdout + dry.stderr)
        dry_run = {" ".join(m.group(2).split()) for m in ran if m.group(1) != "validate"}

        assert changed == dry_run == direct, kind
        names = {name for name, command in commands.items() if command in changed}
        assert planned == changed | {commands[d] for n in names for d in downstream[n]}, kind
        if kind.startswith("nothing"):
            assert planned == set()
        else:
            assert any(f"mimic {kind} " in c for c in changed), (kind, changed)
    finally:
        ws.run("git", "checkout", "--", "params.yaml")
        ws.run("mimic", "validate", "--params", "params.yaml")
    assert json.loads(ws.run("dvc", "status", "--json").stdout or "{}") == {}
    assert snakemake_plan(ws)[0] == set()


# -- experiments ------------------------------------------------------------------------------------------------


def test_a_dvc_experiment_sweep_runs_from_the_clean_checkout(ws):
    lrs = ("0.02", "0.1")
    for lr in lrs:
        ws.run("dvc", "exp", "run", "--queue", "-S", f"methods.mimic.train.lr={lr}")
    ws.run("dvc", "queue", "start", "-j", "1")
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = ws.run("dvc", "queue", "status").stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(5)
    if status.count("Success") != 2:
        names = re.findall(r"^\w+\s+(\S+)\s+.*\bFailed\b", status, re.M)
        logs = "".join(ws.run("dvc", "queue", "logs", name, check=False).stdout[-2000:] for name in names)
        pytest.fail(f"the sweep did not succeed:\n{status}\n{logs}")

    table = list(csv.DictReader(io.StringIO(ws.run("dvc", *EXP_SHOW).stdout)))
    columns = list(table[0])
    lr, score = "methods.mimic.train.lr", f"{MODEL}.{TASK}.mimic.score"
    assert lr in columns and score in columns and f"{MODEL}.{TASK}.mimic.gap_recovery" in columns
    assert len(columns) <= 12, columns  # one screen: the swept parameter and the headline figures
    experiments = [row for row in table if row["rev"] not in ("workspace", "master")]
    assert sorted(row[lr] for row in experiments) == sorted(lrs)
    assert all(row[score] not in ("", "-") for row in experiments)
    assert ws.run("git", "status", "--porcelain").stdout == ""  # the queue never touched the workspace


# -- metrics, plots, report ---------------------------------------------------------------------------------------


def _numbers_only(node) -> bool:
    if isinstance(node, dict):
        return all(_numbers_only(v) for v in node.values())
    return isinstance(node, int | float) and not isinstance(node, bool)


def test_dvc_metrics_are_the_run_metrics_file_and_numbers_only(ws):
    shown = json.loads(ws.run("dvc", "metrics", "show", "--json").stdout)
    files = shown[""]["data"]
    assert list(files) == ["results/metrics.json"]
    metrics = files["results/metrics.json"]["data"]
    assert _numbers_only(metrics)
    assert set(metrics[MODEL][TASK]) == {"zero-shot", "icl", "mimic"}
    evaluation = json.loads((ws.root / f"results/eval/{MODEL}/{TASK}/seed-0/mimic/metrics.json").read_text())
    assert metrics[MODEL][TASK]["mimic"]["score"] == round(evaluation["score"], 4)
    provenance = evaluation["provenance"]  # run metadata lives in each evaluation's metrics.json
    assert provenance["seed"] == 0 and provenance["versions"]["torch"] and provenance["versions"]["transformers"]


def test_dvc_plots_render_offline(ws):
    ws.run("dvc", "plots", "show", "-o", "dvc_plots")
    html = (ws.root / "dvc_plots" / "index.html").read_text()
    assert "<script" not in html and "http" not in html.replace("http-equiv", "")  # nothing fetched
    images = re.findall(r'<img src="([^"]+)"', html)
    declared = re.findall(r"^ *- results/plots/(\w+)\.png:", (ws.root / "dvc.yaml").read_text(), re.M)
    assert len(declared) == 4  # score_by_method, training_curves, score_vs_shots, score_vs_latency
    assert sorted(src.rsplit("plots_", 1)[-1].removesuffix(".png") for src in images) == sorted(declared)
    assert all((ws.root / "dvc_plots" / src).read_bytes()[:4] == b"\x89PNG" for src in images)
    shutil.rmtree(ws.root / "dvc_plots")


def chromium() -> str | None:
    return next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)


def test_the_snakemake_report_holds_every_table_and_plot(ws, tmp_path):
    before = ws.files()
    ws.run("snakemake", "--report", str(tmp_path / "report.html"))
    assert ws.files() == before  # making the report changes no result
    html = (tmp_path / "report.html").read_text()
    for name in ("summary.csv", "summary.md", "metrics.json", "score_by_method.png", "training_curves.png",
                 "score_vs_shots.png", "score_vs_latency.png"):
        assert name in html, name
    for caption in sorted((REPO / "workflow" / "report").glob("*.rst")):
        first_words = " ".join(caption.read_text().split()[:6])
        assert first_words in " ".join(html.split()), caption.name

    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium on PATH (.ci/run installs Debian's chromium): the report was not viewed")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,900",
             "--virtual-time-budget=10000"]
    url = (tmp_path / "report.html").as_uri()
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert "Plots" in dom and "Tables" in dom  # the rendered page lists the report's two categories
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    from PIL import Image

    with Image.open(shot) as image:
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # not a blank page


# -- a second configuration -----------------------------------------------------------------------------------------


def test_a_second_configuration_file_on_the_snakemake_command_line(ws):
    """`snakemake all --configfile other.yaml`: other.yaml laid over params.yaml, checked, run; not recorded in DVC
    (which reads params.yaml only); the plain `snakemake all` afterwards brings back params.yaml's run."""
    (ws.root / "bad.yaml").write_text("methods:\n  mimic:\n    train:\n      lr: fast\n")
    (ws.root / "other.yaml").write_text("methods:\n  mimic:\n    train:\n      lr: 0.1\n")
    before = ws.files()
    bad = ws.run("snakemake", "-n", "all", "--configfile", "bad.yaml", check=False)
    assert bad.returncode != 0 and "methods.mimic.train.lr" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr
    planned, _ = snakemake_plan(ws, "--configfile", "other.yaml")
    assert ws.files() == before  # the dry run wrote nothing, not even the run's params file
    stages = {c.split()[1] for c in planned}
    assert stages == {"train", "evaluate", "latency", "report"}, planned  # what the lr of mimic affects
    assert all(re.search(r"--params \.mimic-params-[0-9a-f]{12}\.yaml ", c) for c in planned)

    metrics_path, lock = ws.root / "results" / "metrics.json", (ws.root / "dvc.lock").read_bytes()
    baseline = json.loads(metrics_path.read_text())
    done = ws.run("snakemake", "all", "--configfile", "other.yaml")
    assert "not recorded in DVC" in done.stdout + done.stderr
    assert (ws.root / "dvc.lock").read_bytes() == lock
    (params_file,) = ws.root.glob(".mimic-params-*.yaml")
    expected = yaml.safe_load((ws.root / "params.yaml").read_text())
    expected["methods"]["mimic"]["train"]["lr"] = 0.1
    assert yaml.safe_load(params_file.read_text()) == expected
    overridden = json.loads(metrics_path.read_text())
    assert overridden[MODEL][TASK]["mimic"] != baseline[MODEL][TASK]["mimic"]

    ws.run("snakemake", "all")  # params.yaml's run again: the same four jobs, the first scores back
    assert json.loads(metrics_path.read_text())[MODEL][TASK]["mimic"]["score"] == \
        baseline[MODEL][TASK]["mimic"]["score"]
    assert json.loads(ws.run("dvc", "status", "--json").stdout or "{}") == {}

