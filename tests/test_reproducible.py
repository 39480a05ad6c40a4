"""Two identical runs of the pipeline give identical bytes (issue 23).

The smallest run that has every stage kind (tests/test_faults.py's ``shrink``: prepare, embed with RICES'
embedding model, sample-icd, extract-teacher, train, evaluate of zero-shot, ICL and MimIC, latency, report)
runs twice, each in a fresh workspace of its own (another directory, another PYTHONHASHSEED), and every file
under data/ and results/ must have the same bytes in both, except this short list:

- not outputs: the logs (results/logs/: attempt records, with times and memory) and the digest cache of the
  model files (results/.file-digests.json: keyed by absolute path and inode);
- the timing files, where the measurements of wall time and memory live: each evaluation's timing.json and the
  latency stage's json (results/latency/); each checkpoint's train_summary.json is compared without its
  ``seconds`` and ``teacher_seconds``;
- the report's figures derived from them: summary.csv is compared without its latency columns, metrics.json
  without its latency ratios, summary.md without the table columns that show latency, and the score-vs-latency
  plot (results/plots/score_vs_latency.png) is not compared. The other plots show no latency.

Each evaluation's metrics.json records the project's commit (``provenance``), the same for the same commit: it
is compared without it only when a commit lands in this checkout between the two runs.

So after a rerun of identical work DVC (which compares bytes) sees a change in those files only.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_faults import shrink  # the smallest run with every stage

from mimic.io.provenance import project_commit

pytestmark = pytest.mark.slow
pytest.importorskip("snakemake")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL = "mini-idefics2"
COMPARED = ("data", "results")
NOT_OUTPUTS = ("results/logs/", "results/.file-digests.json")
# Timing files: wall time and memory of the run that made them.
TIMING = (
    re.compile(r"results/eval/[^/]+/[^/]+/seed-\d+/[^/]+/timing\.json"),
    re.compile(r"results/latency/[^/]+/[^/]+\.json"),
    re.compile(r"results/plots/score_vs_latency\.png"),  # drawn from the latency stage's timings
)
EVAL_METRICS = re.compile(r"results/eval/[^/]+/[^/]+/seed-\d+/[^/]+/metrics\.json")
TRAIN_SUMMARY = re.compile(r"results/checkpoints/[^/]+/[^/]+/seed-\d+/[^/]+/train_summary\.json")


def is_timing(rel: str) -> bool:
    return rel.startswith(NOT_OUTPUTS) or any(p.fullmatch(rel) for p in TIMING)


def without_latency_csv(data: bytes) -> bytes:
    rows = list(csv.reader(io.StringIO(data.decode())))
    keep = [i for i, name in enumerate(rows[0]) if "latency" not in name]
    assert len(keep) < len(rows[0]), "summary.csv has no latency column: update this test"
    return "\n".join(",".join(row[i] for i in keep) for row in rows).encode()


def without_keys(data: bytes, timed) -> bytes:
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not timed(k)}
        return node

    return json.dumps(strip(json.loads(data)), sort_keys=True).encode()


def without_latency_json(data: bytes) -> bytes:
    return without_keys(data, lambda key: "latency" in key)


def without_seconds(data: bytes) -> bytes:
    return without_keys(data, lambda key: key in ("seconds", "teacher_seconds"))


def without_project(data: bytes) -> bytes:
    return without_keys(data, lambda key: key == "project")


def without_latency_md(data: bytes) -> bytes:
    """summary.md without the table columns that show latency (ms per query, the ratio to zero-shot)."""
    out, drop = [], None
    for line in data.decode().splitlines():
        if not line.startswith("|"):
            drop = None
            out.append(line)
            continue
        cells = line.strip().strip("|").split("|")
        if drop is None:  # a table's header
            drop = {i for i, c in enumerate(cells) if re.search(r"latency|ms/query|ratio to", c)}
        out.append("|".join(c for i, c in enumerate(cells) if i not in drop))
    return "\n".join(out).encode()


COMPARE = {"results/summary.csv": without_latency_csv, "results/metrics.json": without_latency_json,
           "results/summary.md": without_latency_md}


def run_pipeline(root: Path, hash_seed: str) -> float:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONHASHSEED": hash_seed,
           "DVC_NO_ANALYTICS": "1"}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "all"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    return time.monotonic() - start


def outputs(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for top in COMPARED for p in sorted((root / top).rglob("*")) if p.is_file()}


def test_two_runs_give_the_same_bytes(tmp_path, pipeline_copy):
    params = shrink(yaml.safe_load((REPO / "params.yaml").read_text()))
    assert params["icd"].get("embedding"), "the default params no longer embed for RICES: the test misses embed"
    commit = project_commit()
    runs = []
    for name, hash_seed in (("first", "1"), ("second", "2")):
        root = pipeline_copy(tmp_path / name, params, MODEL)
        seconds = run_pipeline(root, hash_seed)
        print(f"{name} run: {seconds:.0f} s")
        runs.append(outputs(root))
    first, second = runs
    assert first.keys() == second.keys(), f"files made by one run only: {sorted(first.keys() ^ second.keys())}"
    for rel in ("data/shapes-vqa/seed-0/embeddings.safetensors", "results/summary.csv", "results/metrics.json"):
        assert rel in first, f"{rel} was not made: the run misses a stage"
    moved = project_commit() != commit  # a commit in this checkout between the runs: provenance names another
    if moved:
        print(f"the project's commit moved during the test ({commit} -> {project_commit()}): each evaluation's "
              "metrics.json is compared without provenance.project")
    compared = [rel for rel in sorted(first) if not is_timing(rel)]
    differ = []
    for rel in compared:
        a, b = first[rel], second[rel]
        strip = COMPARE.get(rel) or (without_seconds if TRAIN_SUMMARY.fullmatch(rel) else None)
        if moved and EVAL_METRICS.fullmatch(rel):
            strip = without_project
        if strip:
            a, b = strip(a), strip(b)
        if a != b:
            differ.append(f"{rel} ({hashlib.sha256(first[rel]).hexdigest()[:12]} != "
                          f"{hashlib.sha256(second[rel]).hexdigest()[:12]})")
    print(f"{len(compared)} files compared, {len(first) - len(compared)} timing files and logs not compared")
    print("\n".join(["differ:", *differ]) if differ else "no file differs")
    assert not differ, "files that differ between two identical runs:\n" + "\n".join(differ)
    assert any(TIMING[0].fullmatch(rel) for rel in first), "no evaluation wrote a timing.json"
