"""Why the pipeline keeps its own settings files (mimic.pipeline.stages) instead of each tool's parameter tracking.

The issue that moved the pipeline to each tool's own habits asked to keep hand-written bookkeeping only where a
test shows the tools cannot carry it. These tests show the two things they cannot, on minimal pipelines of the
same shape as ours; if one starts failing, the tool learned it, and mimic.pipeline.stages can shrink:

- DVC's ``params:`` cannot name an optional key: a stage whose key is absent from params.yaml is refused, while
  most keys a stage of ours depends on are optional (``models.<m>.shots``, ``models.<m>.train``, ``eval.stop``,
  ``tasks.<t>.stem``, ...), and whole sections would hold result-neutral keys (batch sizes, threads).
- Snakemake's ``params`` rerun trigger only knows the jobs Snakemake ran itself: an output that another tool
  (``dvc repro``) made is never rerun when its parameters change, so the two tools would disagree.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("snakemake")
pytest.importorskip("dvc")


def run(root: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=300,
                          env={"DVC_NO_ANALYTICS": "1", "PATH": "/usr/bin:/bin"})


def test_dvc_params_refuse_a_stage_whose_key_is_optional_and_absent(tmp_path):
    (tmp_path / "params.yaml").write_text("models:\n  m:\n    dtype: float32\n")  # no `shots`: it is optional
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  train:\n    cmd: echo trained > out.txt\n    params:\n      - models.m.dtype\n"
        "      - models.m.shots\n    outs:\n      - out.txt\n")
    assert run(tmp_path, sys.executable, "-m", "dvc", "init", "--no-scm", "-q").returncode == 0
    done = run(tmp_path, sys.executable, "-m", "dvc", "repro")
    assert done.returncode != 0 and "models.m.shots" in done.stdout + done.stderr
    assert not (tmp_path / "out.txt").exists()


def test_snakemake_params_trigger_does_not_see_an_output_another_tool_made(tmp_path):
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text('LR = config["lr"]\n\nrule train:\n    output: "out.txt"\n    params: lr=LR\n'
                         '    shell: "echo {params.lr} > {output}"\n')
    snakemake = [sys.executable, "-m", "snakemake", "--cores", "1", "--rerun-triggers", "mtime", "params"]
    assert run(tmp_path, *snakemake, "--config", "lr=1").returncode == 0
    changed = run(tmp_path, *snakemake, "-n", "--config", "lr=2")
    assert "rule train" in changed.stdout + changed.stderr  # its own job: the new lr reruns it
    (tmp_path / "out.txt").write_text("1\n")  # the same output, made by another tool (as `dvc repro` does)
    cleaned = run(tmp_path, *snakemake, "--config", "lr=1", "--cleanup-metadata", "out.txt")
    assert cleaned.returncode == 0, cleaned.stderr  # no record of it, as for every output DVC made
    blind = run(tmp_path, *snakemake, "-n", "--config", "lr=2")
    assert blind.returncode == 0 and "rule train" not in blind.stdout + blind.stderr
