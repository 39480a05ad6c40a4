"""The fault list of issue 10, injected into the miniature pipeline, under Snakemake and DVC.

One workspace (a copy of workflow/, dvc.yaml and the shipped miniature model; params.yaml shrunk
to a few queries of one task; a DVC repository) is built by `snakemake all`. Then, in order:

- the shared state: `dvc status` is clean, an edit reruns under `dvc repro` only the stages it
  affects, and Snakemake has nothing left to do;
- every bad value of params.yaml, under both tools: non-zero exit, one line naming the key, no
  stage started (so no model loaded), every output byte for byte as before;
- damaged files (a teacher shard, the checkpoint, icd.json, a parquet table, the model's weights):
  the stage that reads it fails with one line naming the file, the other outputs stay as they were;
- training that diverges (lr 1e6), under both tools: the step is named, the checkpoint is kept;
- kill -9 of the whole process group during extraction and during training: nothing is lost,
  `snakemake --unlock` works without flags, the next run resumes the extraction from its finished
  shards and reruns the interrupted training; a deleted checkpoint is trained again.

Each fault's exit status, message and seconds to failure go into a table printed at the end
(``-s``) and, with MIMIC_FAULT_TABLE=<path>, written as markdown.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
pytest.importorskip("snakemake")
pytest.importorskip("dvc")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL, TASK = "mini-idefics2", "shapes-vqa"
CHECKPOINT = f"results/checkpoints/{MODEL}/{TASK}/seed-0/mimic"
TEACHER = f"results/teacher/{MODEL}/{TASK}/seed-0"
PARTIAL = f"results/partial/teacher/{MODEL}/{TASK}/seed-0"
TRAIN_LOG = f"results/logs/train/seed-0/{MODEL}-{TASK}-mimic.log"
EXTRACT_LOG = f"results/logs/extract-teacher/seed-0/{MODEL}-{TASK}.log"
# Not outputs: attempt records, resumable work, the digest cache of the model files.
NOT_OUTPUTS = ("results/logs/", "results/partial/", "results/.file-digests.json")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO) ")


def shrink(params: dict) -> dict:
    """The smallest run that has every stage: one task, zero-shot, the ICL reference, MimIC."""
    params["run"] = {"models": [MODEL], "tasks": [TASK], "seeds": [0], "untrained": ["zero-shot"], "trained": ["mimic"]}
    params["tasks"][TASK].update(n_train=8, n_support=16, n_eval=6)
    params["icd"].update(shots=4, draws=2)
    params["methods"]["mimic"]["train"].update(epochs=2, batch_size=4)
    params["teacher"].update(shard_size=2, batch_size=2)  # 8 shards: an extraction can be killed midway
    params["eval"].update(batch_size=6)
    return params


@dataclass
class Run:
    command: str
    returncode: int
    output: str
    seconds: float
    stderr: str = ""

    def stderr_lines(self) -> int:
        """What a failure adds for the reader on stderr: for a `mimic` command, every line but its progress log
        (``<date> <time> INFO ...``); under Snakemake or DVC, beside their own job reports, the distinct error
        lines (a command's `mimic <command>: error: ...`, the Snakefile's `params.yaml: ...`, DVC's `ERROR: ...`).
        Tracebacks count too."""
        if self.command.startswith("mimic"):
            return sum(1 for line in self.stderr.splitlines() if line.strip() and not LOG_LINE.match(line))
        errors = set(re.findall(r"^(?:mimic [\w-]+: error: |params\.yaml: |ERROR: ).*$", self.stderr, flags=re.M))
        return len(errors) + self.stderr.count("Traceback")


@dataclass
class Row:
    fault: str
    tool: str
    returncode: int
    message: str
    seconds: float
    kept: str
    stderr_lines: int | str = ""
    lost: int = 0


TABLE: list[Row] = []


class Workspace:
    def __init__(self, root: Path):
        self.root = root
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}

    # -- running ------------------------------------------------------------------------------

    def argv(self, tool: str, *args: str) -> list[str]:
        return {
            "snakemake": [sys.executable, "-m", "snakemake"],
            "dvc": [sys.executable, "-m", "dvc"],
            "mimic": [str(BIN / "mimic")],
        }[tool] + list(args)

    def run(self, tool: str, *args: str, timeout: float = 900) -> Run:
        start = time.monotonic()
        done = subprocess.run(self.argv(tool, *args), cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        return Run(" ".join([tool, *args]), done.returncode, done.stdout + done.stderr, time.monotonic() - start,
                   done.stderr)

    def start(self, tool: str, *args: str) -> subprocess.Popen:
        """A run in a process group of its own, to be killed as a whole (kill -9)."""
        return subprocess.Popen(self.argv(tool, *args), cwd=self.root, env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    def all(self) -> Run:
        """`snakemake all` (the workflow profile supplies every flag), which must succeed."""
        done = self.run("snakemake", "all")
        assert done.returncode == 0, done.output[-4000:]
        return done

    # -- state --------------------------------------------------------------------------------

    def outputs(self) -> dict[str, str]:
        """sha256 of every output (data/, results/) and of dvc.lock."""
        files = [self.root / "dvc.lock", *(p for d in ("data", "results") for p in (self.root / d).rglob("*"))]
        out = {}
        for path in files:
            rel = path.relative_to(self.root).as_posix()
            if path.is_file() and not rel.startswith(NOT_OUTPUTS):
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        return out

    def logs(self) -> dict[str, int]:
        return {p.relative_to(self.root).as_posix(): p.stat().st_mtime_ns
                for p in (self.root / "results" / "logs").rglob("*.log")}

    def params(self) -> dict:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def write_params(self, params: dict) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    @contextmanager
    def edited(self, mutate: Callable[[dict], None] | str):
        """params.yaml changed by ``mutate`` (or replaced by a text), then restored as it was."""
        path = self.root / "params.yaml"
        text = path.read_text()
        if isinstance(mutate, str):
            path.write_text(mutate)
        else:
            params = self.params()
            mutate(params)
            self.write_params(params)
        try:
            yield
        finally:
            path.write_text(text)

    @contextmanager
    def damaged(self, rel: str, damage: Callable[[bytes], bytes | None], restore: str = "bytes"):
        """A file damaged (None: deleted), then restored: with its bytes and mtime, or ``restore="dvc"``
        by `dvc checkout <file>` as the error message advises."""
        path = self.root / rel
        data, stat = path.read_bytes(), path.stat()
        new = damage(data)
        if new is None:
            path.unlink()
        else:
            path.write_bytes(new)
        try:
            yield
        finally:
            if restore == "dvc":
                done = self.run("dvc", "checkout", "--force", rel)
                assert done.returncode == 0, done.output
                assert path.read_bytes() == data
            else:
                path.write_bytes(data)
                os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    def converge(self, before: dict[str, str]) -> set[str]:
        """After a fault is undone: `snakemake all`, which may run the job that failed once more (it
        recorded it as made from the failing inputs) and so what follows it. Returns the jobs it ran;
        afterwards nothing is left to do, and the deterministic outputs (data, teacher cache,
        checkpoint) are byte for byte the ones of ``before``: the reruns remade the same results."""
        ran = set(re.findall(r"^(?:local)?rule (\w+):$", self.all().output, flags=re.M)) - {"all"}
        self.up_to_date()
        after = self.outputs()
        deterministic = ("data/", TEACHER, CHECKPOINT + "/mimic")
        assert {k: v for k, v in after.items() if k.startswith(deterministic)} == {
            k: v for k, v in before.items() if k.startswith(deterministic)}
        return ran

    def up_to_date(self) -> None:
        """Both tools agree that there is nothing to do."""
        snake = self.run("snakemake", "--dry-run", "all")
        assert "Nothing to be done" in snake.output, snake.output[-3000:]
        status = self.run("dvc", "status")
        assert status.output.strip().endswith("Data and pipelines are up to date."), status.output


def error_line(run: Run) -> str:
    """The one line of a failure: `mimic <command>: error: ...`, or a Snakefile's own line, or
    (where DVC refuses params.yaml or dvc.yaml itself, before any stage) DVC's first line."""
    mimic_lines = [line for line in run.output.splitlines() if re.match(r"^mimic [\w-]+: error: ", line)]
    if mimic_lines:
        assert len(mimic_lines) == 1, mimic_lines
        return mimic_lines[0]
    if run.command.startswith("dvc") and "Running stage" not in run.output:
        return next(line for line in run.output.splitlines() if line.startswith("ERROR: "))
    lines = [line for line in run.output.splitlines() if line.strip() and not line.startswith("Using workflow")]
    assert len(lines) == 1, run.output  # Snakemake stopped while reading the Snakefile: one line
    return lines[0]


def check_failure(ws: Workspace, fault: str, tool: str, run: Run, names: str, before: dict[str, str],
                  changed: tuple[str, ...] = ()) -> str:
    """Non-zero exit, no traceback, one line naming ``names``, every output as it was (but ``changed``)."""
    assert run.returncode != 0, run.output[-3000:]
    assert "Traceback" not in run.output, run.output[-3000:]
    line = error_line(run)
    own = line.startswith("ERROR: ")  # DVC's own message (several lines): the names may be further down
    assert names in (run.output if own else line), run.output if own else line
    after = ws.outputs()
    lost = sorted(k for k in before if not k.startswith(changed) and before[k] != after.get(k))
    assert not lost, f"{fault} under {tool}: outputs changed or deleted: {lost}"
    TABLE.append(Row(fault, tool, run.returncode, line, run.seconds, "all byte-identical"
                     + (f" (but {', '.join(changed)})" if changed else ""), run.stderr_lines(), len(lost)))
    return line


@pytest.fixture(scope="module")
def ws(tmp_path_factory, pipeline_copy) -> Workspace:
    params = shrink(yaml.safe_load((REPO / "params.yaml").read_text()))
    workspace = Workspace(pipeline_copy(tmp_path_factory.mktemp("faults"), params, MODEL))
    assert workspace.run("dvc", "init", "--no-scm").returncode == 0
    workspace.all()
    yield workspace
    header = ("fault", "tool", "exit", "stderr lines", "message (one line)", "s to failure", "outputs lost", "outputs")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [f"| {r.fault} | {r.tool} | {r.returncode} | {r.stderr_lines} | `{r.message}` | {r.seconds:.1f} "
              f"| {r.lost} | {r.kept} |" for r in TABLE]
    print("\n" + "\n".join(lines))
    if os.environ.get("MIMIC_FAULT_TABLE"):
        Path(os.environ["MIMIC_FAULT_TABLE"]).write_text("\n".join(lines) + "\n")


# -- one state --------------------------------------------------------------------------------------


def test_snakemake_runs_dvc_versions(ws):
    """Snakemake -> dvc status clean -> edit -> dvc repro (only what the edit affects) -> Snakemake: nothing."""
    ws.up_to_date()
    before = ws.outputs()
    with ws.edited(lambda p: p["methods"]["mimic"]["train"].update(lr=3.0e-3)):
        repro = ws.run("dvc", "repro")
        assert repro.returncode == 0, repro.output[-3000:]
        ran = set(re.findall(r"Running stage '([^']+)'", repro.output))
        assert ran == {"validate", f"train@{MODEL}-{TASK}-0-mimic", f"evaluate-trained@{MODEL}-{TASK}-0-mimic",
                       f"latency@{MODEL}-{TASK}", "report"}
        ws.up_to_date()  # Snakemake has nothing to do after DVC ran them
        after = ws.outputs()
        assert after[f"{CHECKPOINT}/mimic.safetensors"] != before[f"{CHECKPOINT}/mimic.safetensors"]
        assert all(after[k] == before[k] for k in before if k.startswith("data/") or k.startswith(TEACHER))
    # lr back: both tools rerun the mimic stages; DVC's run restores the first checkpoint bit for bit?
    # (training is deterministic on the CPU) - Snakemake reruns, then DVC has nothing left to do
    ws.all()
    ws.up_to_date()
    assert ws.outputs()[f"{CHECKPOINT}/mimic.safetensors"] == before[f"{CHECKPOINT}/mimic.safetensors"]


# -- bad values in params.yaml ----------------------------------------------------------------------


def _set(path: str, value):
    def mutate(params):
        *parents, last = path.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[last] = value

    return mutate


PARAMS_FAULTS = {  # fault -> (edit, what the line names[, what DVC's own message names])
    "unknown key methods.mimic.train.learning_rate": (_set("methods.mimic.train.learning_rate", 1.0e-3),
                                                      "methods.mimic.train.learning_rate: unknown key"),
    "lr: fast": (_set("methods.mimic.train.lr", "fast"), "methods.mimic.train.lr = 'fast'"),
    "epochs: -1": (_set("methods.mimic.train.epochs", -1), "methods.mimic.train.epochs = -1"),
    "n_eval: 0": (_set(f"tasks.{TASK}.n_eval", 0), f"tasks.{TASK}.n_eval = 0"),
    # dvc.yaml's matrices put mimic into two stages: DVC itself refuses the overlapping outputs
    "mimic listed in run.untrained": (_set("run.untrained", ["zero-shot", "mimic"]), "run.untrained[1] = 'mimic'",
                                      f"evaluate-untrained@{MODEL}-{TASK}-0-mimic"),
    "icd.shots: 600 (pool of 16)": (_set("icd.shots", 600), f"icd.shots = 600: more than tasks.{TASK}.n_support"),
    "lr: .inf": (_set("methods.mimic.train.lr", float("inf")), "methods.mimic.train.lr = .inf"),
    "lr: .nan": (_set("methods.mimic.train.lr", float("nan")), "methods.mimic.train.lr = .nan"),
    # DVC reads params.yaml itself (the matrices) and reports the YAML error in its own words
    "YAML syntax error": ("seed: [0\n", "params.yaml: line 2: expected ',' or ']'", "line: 2"),
}


@pytest.mark.parametrize("tool", ["snakemake", "dvc"])
@pytest.mark.parametrize("fault", list(PARAMS_FAULTS))
def test_a_bad_value_stops_everything_before_any_stage_starts(ws, fault, tool):
    mutate, names, *dvc_names = PARAMS_FAULTS[fault]
    names = dvc_names[0] if tool == "dvc" and dvc_names else names
    if isinstance(mutate, str):  # a whole text: the valid file with a broken line in front
        mutate = mutate + (ws.root / "params.yaml").read_text().replace("seed: 0\n", "", 1)
    before, logs = ws.outputs(), ws.logs()
    with ws.edited(mutate):
        run = ws.run(*(("snakemake", "all") if tool == "snakemake" else ("dvc", "repro")))
    check_failure(ws, fault, tool, run, names, before)
    assert ws.logs() == logs  # no stage started: no model was loaded
    if tool == "dvc":  # validate, or DVC's own check of its files, stopped it: no other stage ran
        assert run.output.count("Running stage") == (0 if dvc_names else 1)


@pytest.mark.parametrize("tool", ["snakemake", "dvc"])
def test_deleted_model_weights_stop_everything(ws, tool):
    before, logs = ws.outputs(), ws.logs()
    with ws.damaged(f"models/{MODEL}/model.safetensors", lambda data: None):
        run = ws.run(*(("snakemake", "all") if tool == "snakemake" else ("dvc", "repro")))
    check_failure(ws, "model.safetensors deleted", tool, run, f"models.{MODEL}.path", before)
    assert ws.logs() == logs
    ws.up_to_date()


# -- damaged files ----------------------------------------------------------------------------------


def garbage(data: bytes) -> bytes:
    return bytes(b ^ 0x5A for b in data)  # same size, other bytes


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


FILE_FAULTS = {  # fault -> (file, damage, the command that reads it)
    "teacher shard, same-size garbage": (f"{TEACHER}/shard-00000.safetensors", garbage, "train"),
    "teacher shard truncated": (f"{TEACHER}/shard-00001.safetensors", truncated, "train"),
    "checkpoint weights, same-size garbage": (f"{CHECKPOINT}/mimic.safetensors", garbage, "evaluate"),
    "checkpoint weights truncated": (f"{CHECKPOINT}/mimic.safetensors", truncated, "evaluate"),
    "icd.json truncated": (f"data/{TASK}/seed-0/icd.json", truncated, "train"),
    "train.parquet truncated": (f"data/{TASK}/seed-0/train.parquet", truncated, "sample-icd"),
}


@pytest.mark.parametrize("fault", list(FILE_FAULTS))
def test_a_damaged_file_fails_naming_it_and_keeps_the_other_outputs(ws, fault):
    rel, damage, command = FILE_FAULTS[fault]
    names = ["--task", TASK] if command == "sample-icd" else ["--model", MODEL, "--task", TASK, "--method", "mimic"]
    before = ws.outputs()
    with ws.damaged(rel, damage):
        run = ws.run("mimic", command, "--params", "params.yaml", *names)
        check_failure(ws, fault, f"mimic {command}", run, rel, before, changed=(rel,))
    ws.up_to_date()


def test_a_damaged_checkpoint_under_snakemake_keeps_every_output(ws):
    """Snakemake sees the newer checkpoint and reruns its evaluation, which fails naming the file;
    update() restores the evaluation's previous outputs. `dvc checkout <file>`, as the message says,
    restores the checkpoint, and nothing is left to do."""
    rel = f"{CHECKPOINT}/mimic.safetensors"
    before = ws.outputs()
    with ws.damaged(rel, garbage, restore="dvc"):
        run = ws.run("snakemake", "all")
        check_failure(ws, "checkpoint weights, same-size garbage", "snakemake", run, rel, before, changed=(rel,))
    assert ws.converge(before) <= {"evaluate", "latency", "report"}


def test_a_truncated_icd_file_under_snakemake_keeps_the_teacher_cache(ws):
    rel = f"data/{TASK}/seed-0/icd.json"
    before = ws.outputs()
    with ws.damaged(rel, truncated):
        run = ws.run("snakemake", "all")
        check_failure(ws, "icd.json truncated", "snakemake", run, rel, before, changed=(rel,))
    assert ws.converge(before) <= {"extract_teacher", "train", "evaluate", "latency", "report"}  # the failed job, after


# -- training that diverges -------------------------------------------------------------------------


@pytest.mark.parametrize("tool", ["snakemake", "dvc"])
def test_diverging_training_names_the_step_and_keeps_the_checkpoint(ws, tool):
    before = ws.outputs()
    # lr 1e6 over 10 epochs (20 steps): the shift's weights overflow at step 13
    with ws.edited(lambda p: p["methods"]["mimic"]["train"].update(lr=1.0e6, epochs=10)):
        run = ws.run(*(("snakemake", "all") if tool == "snakemake" else ("dvc", "repro")))
        line = check_failure(ws, "lr: 1.0e+6 (NaN training)", tool, run, "training diverged at step", before,
                             changed=("results/settings/", "dvc.lock"))
        if tool == "snakemake":  # the old checkpoint, put back, is not taken for the result of lr 1e6
            assert "rule train:" in ws.run("snakemake", "--dry-run", "all").output
    assert line.startswith("mimic train: error: training diverged at step ")
    if tool == "dvc":  # validate recorded the edited settings; back to the first ones
        assert ws.run("dvc", "repro").returncode == 0
        ws.up_to_date()
    else:
        assert ws.converge(before) <= {"train", "evaluate", "latency", "report"}  # the failed job and what follows


# -- kill -9 ----------------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the run ended before the moment to kill it"
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def kill9(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def finished_shards(ws: Workspace) -> dict:
    try:
        return json.loads((ws.root / PARTIAL / "progress.json").read_text())["shards"]
    except (OSError, ValueError, KeyError):
        return {}


def test_kill_during_extraction_keeps_everything_and_the_next_run_resumes(ws):
    params = ws.params()
    params["teacher"]["target"] = "layer"  # a new cache to extract (kept for the tests below)
    ws.write_params(params)
    before = ws.outputs()
    start = time.monotonic()
    process = ws.start("snakemake", "all")
    wait_for(lambda: len(finished_shards(ws)) >= 2, process)
    kill9(process)
    seconds = time.monotonic() - start
    done = finished_shards(ws)
    kept = {name: (ws.root / PARTIAL / name).read_bytes() for name in done}
    after = ws.outputs()
    assert {k: v for k, v in after.items() if not k.startswith("results/settings/")} == {
        k: v for k, v in before.items() if not k.startswith("results/settings/")}
    TABLE.append(Row("kill -9 during extraction", "snakemake", -9, f"{len(done)} of 8 shards finished",
                     seconds, "all byte-identical (old cache kept)"))

    unlock = ws.run("snakemake", "--unlock")  # no --cores needed
    assert unlock.returncode == 0, unlock.output
    ws.all()
    log = (ws.root / EXTRACT_LOG).read_text()
    assert re.search(rf"resumed: {len(done)} of 8 shard\(s\) reused", log), log
    for name, data in kept.items():
        assert (ws.root / TEACHER / name).read_bytes() == data  # reused, not recomputed
    assert json.loads((ws.root / TEACHER / "manifest.json").read_text())["target"] == "layer"
    assert not (ws.root / PARTIAL).exists()
    ws.up_to_date()


def test_a_partial_extraction_of_other_settings_is_discarded(ws):
    params = ws.params()
    params["teacher"]["target"] = "attn"
    ws.write_params(params)
    process = ws.start("snakemake", "all")
    wait_for(lambda: len(finished_shards(ws)) >= 1, process)
    kill9(process)
    assert ws.run("snakemake", "--unlock").returncode == 0
    params["teacher"]["target"] = "mlp"  # other settings than the partial shards'
    ws.write_params(params)
    ws.all()
    log = (ws.root / EXTRACT_LOG).read_text()
    assert "made under other settings (target: attn -> mlp)" in log
    assert "resumed:" not in log and '"reused_shards": 0' in log
    assert json.loads((ws.root / TEACHER / "manifest.json").read_text())["target"] == "mlp"
    ws.up_to_date()


@pytest.mark.parametrize("tool", ["snakemake", "dvc"])
def test_kill_during_training_keeps_the_checkpoint_and_the_next_run_trains(ws, tool):
    params = ws.params()
    train = params["methods"]["mimic"]["train"]
    train.update(lr=train["lr"] / 2, epochs=10)  # a new checkpoint to train, 20 steps long
    ws.write_params(params)
    before = ws.outputs()
    log = ws.root / TRAIN_LOG
    stamp = log.stat().st_mtime_ns
    start = time.monotonic()
    process = ws.start(*(("snakemake", "all") if tool == "snakemake" else ("dvc", "repro")))
    def training() -> bool:  # the log is this run's (Snakemake removes a job's old log first) and at step 0
        try:
            return log.stat().st_mtime_ns != stamp and " step 0 " in log.read_text()
        except FileNotFoundError:
            return False

    wait_for(training, process)
    kill9(process)
    seconds = time.monotonic() - start
    after = ws.outputs()
    edited = ("results/settings/", "dvc.lock")  # the edit's settings (and, under DVC, validate's lock entry)
    lost = sorted(k for k in before if not k.startswith(edited) and before[k] != after.get(k))
    assert not lost
    assert "checkpoint written" not in log.read_text()
    TABLE.append(Row("kill -9 during training", tool, -9, "killed after step 0", seconds,
                     "all byte-identical (old checkpoint kept)"))
    if tool == "snakemake":
        assert ws.run("snakemake", "--unlock").returncode == 0
        ws.all()
    else:
        assert ws.run("dvc", "repro").returncode == 0
    assert "checkpoint written" in log.read_text()  # the interrupted training ran again
    assert ws.outputs()[f"{CHECKPOINT}/mimic.safetensors"] != before[f"{CHECKPOINT}/mimic.safetensors"]
    ws.up_to_date()


def test_a_deleted_checkpoint_is_trained_again(ws):
    shutil.rmtree(ws.root / CHECKPOINT)
    dry = ws.run("snakemake", "--dry-run", "all")
    assert "Nothing to be done" not in dry.output and "rule train:" in dry.output
    ws.all()
    assert (ws.root / CHECKPOINT / "mimic.safetensors").is_file()
    ws.up_to_date()


# -- demonstrations that are not in the data ---------------------------------------------------------


@pytest.mark.parametrize("tool", ["mimic", "snakemake"])
def test_an_unknown_demonstration_id_is_one_line_naming_it(ws, tool):
    rel = f"data/{TASK}/seed-0/icd.json"

    def unknown(data: bytes) -> bytes:
        icd = json.loads(data)
        icd["train"][sorted(icd["train"])[0]][0][0] = "no-such-id-00000"
        return json.dumps(icd).encode()

    before = ws.outputs()
    with ws.damaged(rel, unknown):
        args = ("train", "--params", "params.yaml", "--model", MODEL, "--task", TASK, "--method", "mimic")
        run = ws.run("mimic", *args) if tool == "mimic" else ws.run("snakemake", "all")
        line = check_failure(ws, "icd.json names a demonstration not in the data",
                             "mimic train" if tool == "mimic" else tool, run, rel, before, changed=(rel,))
    assert "'no-such-id-00000'" in line and "mimic sample-icd" in line
    if tool == "snakemake":
        ws.converge(before)
    ws.up_to_date()


# -- kill -9 in the middle of recording and of every writing command ---------------------------------

RECORD_DUE = ".dvc/tmp/mimic-record-due"


def _record_started(process: subprocess.Popen) -> bool:
    import psutil

    def command(child) -> str:
        try:
            return " ".join(child.cmdline())
        except psutil.Error:  # ended meanwhile
            return ""

    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        return False
    return any("mimic record" in command(c) for c in children)


@pytest.mark.parametrize("delay", [0.2, 1.0, 1.8])
def test_a_kill_during_mimic_record_is_repaired_by_the_next_snakemake(ws, delay):
    """`snakemake all` after an edit, killed (whole process group, -9) ``delay`` seconds into the `mimic record`
    of its onsuccess: dvc.lock is rewritten by rename, so it is whole (the previous record or a newer one), and
    the record owed is made by the next `snakemake all` before it plans, although it has no job to run."""
    params = ws.params()
    params["methods"]["mimic"]["train"]["lr"] *= 1.5  # train, its evaluation, latency and report to rerun
    ws.write_params(params)
    process = ws.start("snakemake", "all")
    wait_for(lambda: _record_started(process), process)
    time.sleep(delay)
    kill9(process)
    lock = ws.root / "dvc.lock"
    stages = yaml.safe_load(lock.read_text())["stages"]  # whole: it parses
    assert (ws.root / RECORD_DUE).exists() or not ws.run("dvc", "status").output.count("changed")
    before = ws.outputs()
    assert ws.run("snakemake", "--unlock").returncode == 0  # Snakemake's own lock, left by the kill
    assert (ws.root / RECORD_DUE).exists() or not ws.run("dvc", "status").output.count("changed")
    run = ws.run("snakemake", "all")
    assert run.returncode == 0 and "Nothing to be done" in run.output, run.output[-3000:]
    assert not (ws.root / RECORD_DUE).exists()
    ws.up_to_date()
    assert {k: v for k, v in ws.outputs().items() if k != "dvc.lock"} == {
        k: v for k, v in before.items() if k != "dvc.lock"}
    TABLE.append(Row(f"kill -9 {delay} s into the mimic record of snakemake all", "snakemake", -9,
                     f"dvc.lock whole ({len(stages)} stages); the next snakemake all recorded the rest", delay,
                     "all byte-identical; dvc status clean after the next run", 0, 0))


def test_an_unreadable_dvc_rwlock_is_repaired_by_the_next_snakemake(ws):
    rwlock = ws.root / ".dvc" / "tmp" / "rwlock"
    rwlock.parent.mkdir(parents=True, exist_ok=True)
    rwlock.write_text("")  # a DVC process killed while writing it: DVC refuses every command
    assert ws.run("dvc", "status").returncode != 0
    (ws.root / RECORD_DUE).write_text("")  # a record owed: the next snakemake repairs it
    before = ws.outputs()
    run = ws.run("snakemake", "all")
    assert run.returncode == 0, run.output[-3000:]
    ws.up_to_date()
    assert ws.outputs() == before


def _commands(ws: Workspace) -> list[list[str]]:
    """Every writing command of the pipeline, as Snakemake would run it (one per subcommand), and DVC's first
    stage, `mimic validate` (which writes the settings files; the Snakefile writes them itself)."""
    plan = ws.run("snakemake", "--dry-run", "--forceall", "--printshellcmds", "all").output
    commands = {"validate": ["validate", "--params", "params.yaml"]}
    for line in plan.splitlines():
        line = line.removeprefix("Shell command: ").strip()
        if line.startswith("mimic "):
            argv = line.split(" > ")[0].split()
            commands.setdefault(argv[1], argv[1:])
    return list(commands.values())


def _whole(path: Path) -> bool:
    """A file that parses in its format (what atomic writes guarantee after any kill)."""
    data = path.read_bytes()
    try:
        if path.suffix == ".json":
            json.loads(data)
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in data.splitlines()]
        elif path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                [f.get_tensor(k) for k in f.keys()]  # noqa: SIM118
        elif path.suffix == ".png":
            return data.startswith(b"\x89PNG") and data.rstrip().endswith(b"IEND\xaeB`\x82")
        elif path.suffix == ".parquet":
            return data[:4] == data[-4:] == b"PAR1"
        elif path.suffix in (".csv", ".md", ".yaml"):
            return data.endswith(b"\n")
    except Exception:  # noqa: BLE001 - any parse error: a partial file
        return False
    return True


def test_a_kill_at_random_points_of_every_writing_command_loses_nothing(ws):
    """Each command killed (whole process group, -9) at random moments of its run: every output is the
    previous one or a whole new one (here: the same bytes, as the settings did not change; the files that
    carry times are whole), and the next `snakemake all` leaves both tools with nothing to do."""
    import random

    rng = random.Random(23)
    commands = _commands(ws)
    assert {c[0] for c in commands} >= {"validate", "prepare", "sample-icd", "extract-teacher", "train", "evaluate",
                                        "latency", "report"}, commands
    before = ws.outputs()
    timing = ("timing.json", "train_summary.json", "summary.csv", "summary.md", "results/metrics.json",
              ".png", "results/latency/")
    for argv in commands:
        start = time.monotonic()
        assert ws.run("mimic", *argv).returncode == 0  # the same settings: the same bytes again
        seconds = time.monotonic() - start
        for _ in range(2):
            start = time.monotonic()
            process = ws.start("mimic", *argv)
            moment = start + rng.uniform(0.5, 0.99) * seconds  # a random point of its second half (writes)
            while process.poll() is None and time.monotonic() < moment:
                time.sleep(0.01)
            killed = process.poll() is None
            kill9(process) if killed else None
            after = ws.outputs()
            broken = [k for k in after if not _whole(ws.root / k)]
            lost = sorted(k for k in before if k not in after or (after[k] != before[k] and not k.endswith(timing)
                                                                     and not k.startswith(timing)))
            assert not broken and not lost, (argv, broken, lost)
            TABLE.append(Row(f"kill -9 during mimic {argv[0]}", "mimic", -9 if killed else 0,
                             f"killed after {time.monotonic() - start:.1f} s" if killed else "finished before the kill",
                             time.monotonic() - start, "all whole, deterministic ones byte-identical", 0, 0))
    assert ws.run("snakemake", "--unlock").returncode == 0
    # by hand, the commands wrote new timing files (timing.json, the latency json, the report's figures): the
    # record of them is `mimic record`, as after any command run by hand
    assert ws.run("mimic", "record", "--params", "params.yaml").returncode == 0
    ws.converge(before)


# -- full disks and outputs on another file system ---------------------------------------------------


@contextmanager
def tmpfs_over(ws: Workspace, rel: str, size: str, keep: bool = True, copy_in: bool = True):
    """A small tmpfs mounted over the folder ``rel`` (its files copied in with ``copy_in``, mtimes kept; the
    tmpfs' files copied back out when unmounted with ``keep``, else the folder's own files put back); skipped
    where mounting is not possible (not root, no rights to mount)."""
    folder = ws.root / rel
    folder.mkdir(parents=True, exist_ok=True)
    saved = ws.root.parent / f"saved-{folder.name}"
    shutil.rmtree(saved, ignore_errors=True)
    shutil.copytree(folder, saved, copy_function=shutil.copy2)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs over {rel}: {(done.stderr.strip() or 'not root').splitlines()[-1]}")
    try:
        if copy_in:
            shutil.copytree(saved, folder, copy_function=shutil.copy2, dirs_exist_ok=True)
        yield folder
    finally:
        if keep:
            shutil.rmtree(saved)
            shutil.copytree(folder, saved, copy_function=shutil.copy2)
        subprocess.run(["umount", "-l", str(folder)], check=True)
        shutil.rmtree(folder)
        shutil.copytree(saved, folder, copy_function=shutil.copy2)
        shutil.rmtree(saved)


@pytest.mark.parametrize("tool", ["mimic", "snakemake"])
def test_a_full_work_disk_stops_the_extraction_after_its_first_shard_in_one_line(ws, tool):
    """results/partial on a volume with room for one shard of eight: the estimate after the first shard stops
    the extraction with one line; the teacher cache and everything after it are as they were."""
    shard = (ws.root / TEACHER / "shard-00000.safetensors").stat().st_size
    before = ws.outputs()
    with ws.edited(lambda p: p["teacher"].update(target="attn")), \
            tmpfs_over(ws, "results/partial", f"{(shard // 4096 + 8) * 4}k", keep=False, copy_in=False):
        args = ("extract-teacher", "--params", "params.yaml", "--model", MODEL, "--task", TASK)
        run = ws.run("mimic", *args) if tool == "mimic" else ws.run("snakemake", "all")
        line = check_failure(ws, "results/partial full (room for 1 of 8 shards)", tool, run,
                             "needs about", before, changed=("results/settings/", "dvc.lock"))
    assert "teacher cache" in line and "free" in line
    if tool == "snakemake":
        assert ws.converge(before) <= {"extract_teacher", "train", "evaluate", "latency", "report"}
    ws.up_to_date()


def test_a_teacher_cache_on_another_file_system_is_swapped_in(ws):
    """results/teacher on another volume than results/partial (a scratch disk): the cache is copied beside
    its place and swapped in by rename; a rerun then has nothing to do."""
    before = ws.outputs()
    with tmpfs_over(ws, f"results/teacher/{MODEL}", "64m"):
        with ws.edited(lambda p: p["teacher"].update(target="attn")):
            ws.all()
            manifest = json.loads((ws.root / TEACHER / "manifest.json").read_text())
            assert manifest["target"] == "attn" and not (ws.root / PARTIAL).exists()
            assert [p.name for p in (ws.root / TEACHER).parent.iterdir()] == ["seed-0"]  # nothing hidden left
        ws.all()  # back to the first settings: extracted again, across the file systems again
        assert json.loads((ws.root / TEACHER / "manifest.json").read_text())["target"] == ws.params()["teacher"][
            "target"]
    assert {k: v for k, v in ws.outputs().items() if k.startswith(TEACHER)} == {
        k: v for k, v in before.items() if k.startswith(TEACHER)}
    TABLE.append(Row("results/teacher on another file system", "snakemake", 0, "cache copied beside, renamed in",
                     0.0, "teacher cache replaced, nothing hidden left", 0, 0))
    ws.up_to_date()


def test_a_full_disk_under_an_evaluation_keeps_its_previous_outputs(ws):
    """The evaluation's folder on a volume without room for a new file: one line naming it, the previous
    predictions and metrics kept; the rerun on a roomy disk completes."""
    folder = f"results/eval/{MODEL}/{TASK}/seed-0/zero-shot"
    pages = sum(-(-p.stat().st_size // 4096) for p in (ws.root / folder).iterdir() if p.is_file())
    before = ws.outputs()
    with tmpfs_over(ws, folder, f"{4 * pages}k", keep=False):  # room for the files there, not one page more
        run = ws.run("mimic", "evaluate", "--params", "params.yaml", "--model", MODEL, "--task", TASK,
                     "--method", "zero-shot")
        line = check_failure(ws, "evaluation folder full", "mimic evaluate", run, "no space left writing", before,
                             changed=("results/settings/", "dvc.lock", "results/parts/"))
    assert folder in line
    ws.converge(before)
    ws.up_to_date()
