"""The pipeline through a real Slurm: a single-node cluster on this machine (tools/local-slurm.sh:
Debian's slurm-wlm and munge, controller and node on 127.0.0.1, no accounting).

The shipped profile (workflow/profiles/slurm) with its site keys filled in for that cluster runs the
pipeline on the smallest settings with the teacher extraction and every evaluation split into 4 jobs
(teacher.jobs = eval.jobs = 4); the outputs are compared with a local `snakemake --cores 2 all` of
the same params in one job each: the teacher cache and the MimIC checkpoint byte for byte, the same
predictions and scores. The shipped profile as it is (placeholders) stops before submitting anything,
with one line naming the key to fill in.

Skips, saying why, where Slurm cannot be brought up: not root and no running cluster, or the
packages cannot be installed (.ci/run installs them where it can).
"""

from __future__ import annotations

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
    return out.returncode == 0 and any(s.strip() in ("idle", "mixed", "allocated") for s in out.stdout.split())


@pytest.fixture(scope="module")
def slurm():
    """A running single-node Slurm (started here, and stopped after, when it was not running)."""
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
