"""The pipeline through a real Slurm: a single-node cluster on this machine (tools/local-slurm.sh:
Debian's slurm-wlm and munge, controller and node on 127.0.0.1, no accounting).

The shipped profile (workflow/profiles/slurm) with its site keys filled in for that cluster runs the
pipeline on the smallest settings with the teacher extraction and every evaluation split into 4 jobs
(teacher.jobs = eval.jobs = 4); the outputs are compared with a local `snakemake --cores 2 all` of
the same params in one job each: the teacher cache and the MimIC checkpoint byte for byte, the same
predictions and scores. The shipped profile as it is (placeholders) stops before submitting anything,
with one line naming the key to fill in, and so does a request larger than the node.

What a failed job leaves: a train job cancelled while running (scancel) and an evaluation failing on both
attempts leave every file under data/ and results/ as it was (the profile's keep-incomplete), and the next
run redoes them. A job asking for one CPU sees one CPU (tools/local-slurm.sh confines jobs to their CPUs).

Skips, saying why, where Slurm cannot be brought up: not root and no running cluster, or the
packages cannot be installed (.ci/run installs them where it can).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
pytest.importorskip("snakemake")

REPO = Path(__file__).resolve().parents[1]
MODEL, TASK = "mini-idefics2", "shapes-caption"
METHODS = ("zero-shot", "icl", "mimic")


def _cluster_up() -> bool:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    # a node that takes jobs: idle, mixed, allocated, completing (with sinfo's suffixes: "mixed*", "idle~", ...)
    return out.returncode == 0 and any(s.startswith(("idle", "mix", "alloc", "comp")) for s in out.stdout.split())


@pytest.fixture(scope="module")
def slurm():
    """A running single-node Slurm (started here, and stopped after, when this fixture started it)."""
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
    if _cluster_up():
        yield
        return
    if os.geteuid() != 0:
        pytest.skip("no Slurm is running and starting one (tools/local-slurm.sh) needs root")
    started = subprocess.run(["bash", str(REPO / "tools" / "local-slurm.sh"), "start"], capture_output=True,
                             text=True, timeout=900)
    if started.returncode != 0:
        reason = (started.stderr.strip().splitlines() or ["no message"])[-1]
        pytest.skip(f"could not bring up a local Slurm: {reason}")
    yield
    if "already running" not in started.stdout:  # not one that someone else started (and uses)
        subprocess.run(["bash", str(REPO / "tools" / "local-slurm.sh"), "stop"], capture_output=True, timeout=120)


def _params(jobs: int) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["run"] = {"models": [MODEL], "tasks": [TASK], "seeds": [0], "untrained": ["zero-shot"], "trained": ["mimic"]}
    params["tasks"][TASK].update(n_train=8, n_support=16, n_eval=8)
    params["icd"].update(shots=4, draws=2)
    params["methods"]["mimic"]["train"].update(epochs=2, batch_size=4)
    # 16 samples in shards of 6, batches of 4 inside a shard: 5 batches; 8 queries in batches of 2: 4
    params["teacher"].update(shard_size=6, batch_size=4, jobs=jobs)
    params["eval"].update(batch_size=2, jobs=jobs)
    return params


def local_profile(shipped: str) -> str:
    """The shipped Slurm profile with its site keys filled in for the local cluster (no accounts, one
    partition, no GPU) and sizes that fit this machine; status checks every few seconds."""
    profile = yaml.safe_load(shipped)  # resolves the GPU rules' YAML anchor into each rule
    defaults = profile["default-resources"]
    del defaults["slurm_account"]
    defaults.update(slurm_partition="local", mem_mb=1000, cpus_per_task=1, runtime=30)
    for resources in profile["set-resources"].values():
        resources.update(slurm_partition="local", gpu=0, mem_mb=1000, cpus_per_task=1, runtime=30)
    profile.update({"latency-wait": 5, "retries": 0, "slurm-init-seconds-before-status-checks": 2})
    return yaml.safe_dump(profile, sort_keys=False)


def _snakemake(root: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def runs(slurm, tmp_path_factory, pipeline_copy):
    base = tmp_path_factory.mktemp("slurm")
    local = pipeline_copy(base / "local", _params(jobs=1), MODEL)
    start = time.monotonic()
    done = _snakemake(local, "--cores", "2", "all")
    assert done.returncode == 0, done.stderr[-3000:]
    local_s = time.monotonic() - start
    cluster = pipeline_copy(base / "cluster", _params(jobs=4), MODEL)
    shipped = (REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text()
    (cluster / "profile").mkdir()
    (cluster / "profile" / "config.yaml").write_text(local_profile(shipped))
    start = time.monotonic()
    done = _snakemake(cluster, "--profile", "profile", "all")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    print(f"local (1 job each): {local_s:.0f} s; Slurm (4 jobs each): {time.monotonic() - start:.0f} s")
    return local, cluster, done.stdout + done.stderr


def test_every_model_job_ran_on_slurm_split_in_four(runs):
    _, cluster, log = runs
    submitted = [line for line in log.splitlines() if "has been submitted with SLURM jobid" in line]
    # prepare, embed, sample_icd, 4 teacher parts and their merge, train, 4 parts and a merge per method, latency
    assert len(submitted) == 1 + 1 + 1 + 4 + 1 + 1 + 3 * (4 + 1) + 1, "\n".join(submitted)
    assert not (cluster / "results" / "parts").exists() or not any((cluster / "results" / "parts").rglob("part-*"))


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _predictions(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "latency_ms"} for row in rows]  # latency: measured


def test_slurm_outputs_equal_the_local_ones(runs):
    local, cluster, _ = runs
    teacher = Path("results/teacher") / MODEL / TASK / "seed-0"
    assert _tree(cluster / teacher) == _tree(local / teacher) and len(_tree(local / teacher)) == 5
    checkpoint = Path("results/checkpoints") / MODEL / TASK / "seed-0" / "mimic"
    for name in ("mimic.safetensors", "mimic_config.json", "train_log.csv"):
        assert (cluster / checkpoint / name).read_bytes() == (local / checkpoint / name).read_bytes(), name
    for method in METHODS:
        folder = Path("results/eval") / MODEL / TASK / "seed-0" / method

        assert _predictions(cluster / folder) == _predictions(local / folder) and len(_predictions(local / folder)) == 8
        ours, theirs = (json.loads((root / folder / "metrics.json").read_text()) for root in (cluster, local))
        assert ours["metrics"] == theirs["metrics"] and ours["score"] == theirs["score"]
        assert ours["icl_agreement"] == theirs["icl_agreement"]
    summary = [line.split(",")[:5] for line in (local / "results" / "summary.csv").read_text().splitlines()]
    assert [line.split(",")[:5] for line in (cluster / "results" / "summary.csv").read_text().splitlines()] == summary


def test_changing_the_split_reruns_nothing(runs):
    """teacher.jobs / eval.jobs are result-neutral: another split of finished outputs plans no job,
    although other rules (extract_teacher vs merge_teacher) or other parts made them."""
    local, cluster, _ = runs
    for root, jobs in ((cluster, 1), (cluster, 2), (local, 4), (local, 1)):
        params = yaml.safe_load((root / "params.yaml").read_text())
        before = yaml.safe_dump(params, sort_keys=False)
        params["teacher"]["jobs"] = params["eval"]["jobs"] = jobs
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        try:
            done = _snakemake(root, "--cores", "2", "-n", "all", timeout=300)
        finally:
            (root / "params.yaml").write_text(before)
        assert done.returncode == 0 and "Nothing to be done" in done.stdout + done.stderr, (
            f"{root.name}, jobs={jobs}: " + (done.stdout + done.stderr)[-3000:])


def test_the_shipped_profile_stops_before_submitting_until_its_site_keys_are_set(runs):
    _, cluster, _ = runs
    (cluster / "results" / "summary.md").unlink()  # something to do: the report
    done = _snakemake(cluster, "--profile", str(REPO / "workflow" / "profiles" / "slurm"), "all", timeout=300)
    assert done.returncode != 0
    assert "has been submitted" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("slurm site keys in ")]
    assert len(lines) == 1, done.stderr[-2000:]
    assert "workflow/profiles/slurm/config.yaml: rule " in lines[0] and "is still the placeholder '<" in lines[0]


# ---- what a failed job leaves (the profile's keep-incomplete), requests too large, CPUs of a job ----------------

def _outputs(root: Path) -> dict[str, str]:
    """sha256 of every file under data/ and results/, but logs, partial generations, the settings files (which
    follow params.yaml) and the cache of their digests: what a failed job must leave as it was."""
    skipped = ("results/logs/", "results/partial/", "results/settings/", "results/.file-digests.json")
    return {name: hashlib.sha256(p.read_bytes()).hexdigest() for folder in ("data", "results")
            for p in sorted((root / folder).rglob("*"))
            if p.is_file() and not (name := str(p.relative_to(root))).startswith(skipped)}


def _changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The files of ``before`` that are gone or differ in ``after``, and the files new in ``after``."""
    return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))


def _submitted(log: str, rule: str) -> int:
    """How many jobs of ``rule`` the run's log says it submitted (each has its log under slurm_logs/rule_<rule>/)."""
    return sum(1 for line in log.splitlines() if "has been submitted with SLURM jobid" in line
               and f"/rule_{rule}/" in line)


def _edit_params(root: Path, edit) -> str:
    """Apply ``edit`` to the params.yaml in ``root``; returns the text before, to write back."""
    before = (root / "params.yaml").read_text()
    params = yaml.safe_load(before)
    edit(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return before


def _running_job(rule: str, timeout: float = 300) -> str:
    """The Slurm job id of the first job of ``rule`` that squeue shows running (the plugin's comment names the rule)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-o", "%i|%T|%k"], capture_output=True, text=True, timeout=30).stdout
        for job_id, state, comment in (line.split("|", 2) for line in out.splitlines() if line.count("|") == 2):
            if state == "RUNNING" and comment.startswith(f"rule_{rule}"):
                return job_id
        time.sleep(1)
    raise AssertionError(f"no {rule} job running after {timeout} s: {out}")


def test_a_request_larger_than_the_node_is_one_line_before_submitting(runs):
    _, cluster, _ = runs
    memory = max(int(m) for m in subprocess.run(["sinfo", "-h", "-N", "-o", "%m"], capture_output=True, text=True,
                                                  timeout=30).stdout.split())
    profile = yaml.safe_load((cluster / "profile" / "config.yaml").read_text())
    profile["set-resources"]["train"]["mem_mb"] = memory + 1  # (--set-resources would replace every rule's block)
    (cluster / "oversized").mkdir(exist_ok=True)
    (cluster / "oversized" / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    (cluster / "results" / "summary.md").unlink(missing_ok=True)  # something to do: the report
    done = _snakemake(cluster, "--profile", "oversized", "all", timeout=300)
    assert done.returncode != 0
    assert "has been submitted" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("slurm request larger than any node")]
    assert lines == [f"slurm request larger than any node, in workflow/profiles/slurm/config.yaml: rule train: mem_mb "
                     f"{memory + 1} is more than the largest node of partition 'local' has ({memory} MB); lower mem_mb "
                     "under set-resources.train"], done.stderr[-2000:]


def test_a_cancelled_job_leaves_the_previous_outputs_and_the_next_run_redoes_it(runs):
    """scancel on a running train job (made slow by more epochs): the run fails, the previous checkpoint and every
    other output are as they were (keep-incomplete; the job restored its update() outputs), the next run would train
    again with the new params (the failed job is marked incomplete: Snakemake alone would take the kept checkpoint
    as made from them), and with the params put back it trains again and ends with the same checkpoint."""
    _, cluster, _ = runs
    before = _outputs(cluster)
    params = _edit_params(cluster, lambda p: p["methods"]["mimic"]["train"].update(epochs=5000))
    try:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        with (cluster / "cancelled.log").open("w") as log:
            run = subprocess.Popen([sys.executable, "-m", "snakemake", "--profile", "profile", "all"], cwd=cluster,
                                   env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
            try:
                job = _running_job("train")
                time.sleep(5)  # the job step is under way: its update() outputs set aside, training
                subprocess.run(["scancel", job], check=True, timeout=30)
                assert run.wait(timeout=300) != 0
            finally:
                if run.poll() is None:  # Snakemake cancels its Slurm jobs on SIGTERM
                    run.terminate()
                    run.wait(timeout=120)
        changed = _changed(before, _outputs(cluster))
        assert changed == [], f"{changed}\n" + (cluster / "cancelled.log").read_text()[-3000:]
        # with the new params still there, the kept checkpoint (of the old ones) is not taken as done: marked incomplete
        planned = _snakemake(cluster, "--profile", "profile", "-n", "all", timeout=300)
        assert planned.returncode == 0 and "\nrule train:" in planned.stdout + planned.stderr, (
            (planned.stdout + planned.stderr)[-3000:])
    finally:
        (cluster / "params.yaml").write_text(params)
    done = _snakemake(cluster, "--profile", "profile", "all")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert _submitted(done.stdout + done.stderr, "train") == 1
    checkpoint = [name for name in before if "/checkpoints/" in name and not name.endswith("train_summary.json")]
    assert checkpoint and {name: _outputs(cluster)[name] for name in checkpoint} == {n: before[n] for n in checkpoint}


def test_a_job_failing_every_attempt_leaves_the_previous_outputs_and_the_next_run_redoes_it(runs):
    """A damaged MimIC checkpoint (one byte flipped: its recorded sha256 no longer matches) fails MimIC's evaluation
    on both attempts (--retries 1); its previous predictions and metrics, and every other output, stay as they were.
    With the file put back as it was (bytes and mtime), the only reason left to run the evaluation is Snakemake's
    incomplete marker of the failed job: the next run (rerun-incomplete) redoes it."""
    _, cluster, _ = runs
    weights = cluster / "results" / "checkpoints" / MODEL / TASK / "seed-0" / "mimic" / "mimic.safetensors"
    good, stat = weights.read_bytes(), weights.stat()
    # eval.jobs = 1 (result-neutral): one evaluate job writes the update() outputs itself
    params = _edit_params(cluster, lambda p: p["eval"].update(jobs=1))
    try:
        before = _outputs(cluster)
        damaged = bytearray(good)
        damaged[len(good) // 2] ^= 0xFF
        try:
            weights.write_bytes(bytes(damaged))
            failed = _snakemake(cluster, "--profile", "profile", "--retries", "1", "all")
        finally:
            weights.write_bytes(good)
            os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        log = failed.stdout + failed.stderr
        assert failed.returncode != 0, log[-3000:]
        assert _submitted(log, "evaluate") == 2, log[-3000:]  # the failing job and its retry
        assert _changed(before, _outputs(cluster)) == [], log[-3000:]
        done = _snakemake(cluster, "--profile", "profile", "all")
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        assert _submitted(done.stdout + done.stderr, "evaluate") == 1
    finally:
        (cluster / "params.yaml").write_text(params)


def test_a_job_sees_only_the_cpus_it_asked_for(slurm, tmp_path):
    """The local Slurm confines a job to its CPUs (task/affinity): `sbatch -c 1` sees one CPU, whatever the node has."""
    out = tmp_path / "cpus.txt"
    python = "import os; print(len(os.sched_getaffinity(0)), os.cpu_count())"
    subprocess.run(["sbatch", "--wait", "-c", "1", "--mem", "100", "-o", str(out), "--wrap",
                    f"{sys.executable} -c '{python}'"], cwd=tmp_path, check=True, capture_output=True, timeout=120)
    seen, total = map(int, out.read_text().split())
    assert seen == 1, f"a job asking for 1 CPU may run on {seen} of the node's {total}"
