"""Split jobs (teacher.jobs, eval.jobs) through the CLI on the shipped miniature model.

A teacher extraction split into parts (`mimic extract-teacher --part I/N`) and joined by
`mimic merge-teacher` is the single job's cache byte for byte (every shard, index.json and
manifest.json); an evaluation split into parts and joined by `mimic merge-evaluate` gives the
single job's predictions (latencies aside: they are measured) and the same scores, CIDEr included
(a corpus metric: computed once over the merged predictions). The merges refuse missing, duplicate
and mismatched parts with one line naming the file. The stages run in-process (``mimic.cli.main``)
in a scratch directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from mimic.cli import main
from mimic.commands.evaluate import part_queries
from mimic.training.teacher import batch_plan, part_batches

REPO = Path(__file__).resolve().parents[1]
MODEL = "mini-idefics2"
VQA, CAPTION = "shapes-vqa", "shapes-caption"


def _params(teacher_jobs: int = 1, eval_jobs: int = 1) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"][MODEL]["path"] = str(REPO / "models" / MODEL)
    params["run"].update(models=[MODEL], tasks=[VQA, CAPTION], untrained=["zero-shot"], trained=[])
    for task in (VQA, CAPTION):
        params["tasks"][task].update(n_train=7, n_support=16, n_eval=7)
    params["icd"].update(shots=4, draws=2)
    # 14 samples in shards of 6 (6, 6, 2), batches of 4 inside a shard (4+2, 4+2, 2): 5 batches
    params["teacher"].update(shard_size=6, batch_size=4, jobs=teacher_jobs)
    params["eval"].update(batch_size=2, jobs=eval_jobs)
    return params


def _run(params: dict, *argv: str) -> int:
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return main([*argv, "--params", "params.yaml"])


def _ok(params: dict, *argv: str) -> None:
    assert _run(params, *argv) == 0, argv


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Prepared tasks and demonstrations, shared by the tests (each copies them)."""
    root = tmp_path_factory.mktemp("split-data")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        params = _params()
        for task in (VQA, CAPTION):
            _ok(params, "prepare", "--task", task)
            _ok(params, "embed", "--task", task)
            _ok(params, "sample-icd", "--task", task)
    return root


@pytest.fixture
def workdir(prepared, tmp_path, monkeypatch):
    shutil.copytree(prepared / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_plan_splits_whole_batches_in_order():
    todo = list(range(14))
    plan = batch_plan(todo, 6, 4)
    assert plan == [[[0, 1, 2, 3], [4, 5]], [[6, 7, 8, 9], [10, 11]], [[12, 13]]]
    for jobs in (1, 2, 3, 5, 7):
        parts = [part_batches(plan, p, jobs) for p in range(jobs)]
        assert [b for part in parts for b in part] == [b for shard in plan for b in shard]
    assert [len(part_batches(plan, p, 7)) for p in range(7)] == [0, 1, 1, 0, 1, 1, 1]
    qids = [f"q{i}" for i in range(7)]
    assert [part_queries(qids, 2, p, 3) for p in range(3)] == [["q0", "q1"], ["q2", "q3"], ["q4", "q5", "q6"]]


def test_split_extraction_is_the_single_jobs_cache_byte_for_byte(workdir):
    teacher = Path("results/teacher") / MODEL / VQA / "seed-0"
    _ok(_params(), "extract-teacher", "--model", MODEL, "--task", VQA)
    single = _files(teacher)
    assert set(single) == {"shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors",
                           "index.json", "manifest.json"}
    shutil.rmtree(teacher)
    params = _params(teacher_jobs=3)
    for part in (1, 2, 3):
        _ok(params, "extract-teacher", "--model", MODEL, "--task", VQA, "--part", f"{part}/3")
    assert not teacher.exists()  # the parts alone are no cache
    _ok(params, "merge-teacher", "--model", MODEL, "--task", VQA)
    assert _files(teacher) == single


def test_split_evaluation_gives_the_single_jobs_predictions_and_scores(workdir):
    def outputs(method):
        folder = Path("results/eval") / MODEL / CAPTION / "seed-0" / method
        rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
        metrics = json.loads((folder / "metrics.json").read_text())
        timing = json.loads((folder / "timing.json").read_text())  # the measurements, in a file of their own
        assert list(timing["latency_ms"]) == sorted(r["id"] for r in rows) and timing["peak_memory_mb"] > 0
        assert not any("latency_ms" in row for row in rows) and "latency_ms_per_query" not in metrics
        return rows, metrics

    single = {}
    for method in ("icl", "zero-shot"):
        _ok(_params(), "evaluate", "--model", MODEL, "--task", CAPTION, "--method", method)
        single[method] = outputs(method)
    shutil.rmtree("results/eval")
    params = _params(eval_jobs=3)
    for method in ("icl", "zero-shot"):
        for part in (1, 2, 3):
            _ok(params, "evaluate", "--model", MODEL, "--task", CAPTION, "--method", method, "--part", f"{part}/3")
        _ok(params, "merge-evaluate", "--model", MODEL, "--task", CAPTION, "--method", method)
        rows, metrics = outputs(method)
        assert rows == single[method][0] and len(rows) == 7
        assert metrics == single[method][1]
    # CIDEr is a corpus metric (document frequencies over all references): the merge scores all
    # predictions at once, which the mean of the parts' CIDEr is not
    assert single["zero-shot"][1]["metrics"]["CIDEr"] > 0


def test_merges_refuse_missing_duplicate_and_mismatched_parts(workdir, capsys):
    params = _params(teacher_jobs=2, eval_jobs=2)
    parts = Path("results/parts/teacher") / MODEL / VQA / "seed-0"
    _ok(params, "extract-teacher", "--model", MODEL, "--task", VQA, "--part", "1/2")

    def refused(*argv: str, params: dict = params) -> str:
        capsys.readouterr()  # what earlier commands logged
        assert _run(params, *argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith(f"mimic {argv[0]}: error: ")
        return err

    err = refused("merge-teacher", "--model", MODEL, "--task", VQA)
    assert "part-00001-of-00002.safetensors is missing (part 2 of 2)" in err and "--part <i>/2" in err
    shutil.copy(parts / "part-00000-of-00002.safetensors", parts / "part-00001-of-00002.safetensors")
    err = refused("merge-teacher", "--model", MODEL, "--task", VQA)
    assert "part-00001-of-00002.safetensors holds part 0 of a 2-job split, not part 1 of 2" in err
    _ok(params, "extract-teacher", "--model", MODEL, "--task", VQA, "--part", "2/2")
    other = _params(teacher_jobs=2, eval_jobs=2)
    other["teacher"]["dtype"] = "float32"  # another cache: the parts were made for float16
    err = refused("merge-teacher", "--model", MODEL, "--task", VQA, params=other)
    assert "part-00000-of-00002.safetensors was extracted under other settings" in err
    assert not (Path("results/teacher") / MODEL / VQA / "seed-0").exists()
    _ok(params, "merge-teacher", "--model", MODEL, "--task", VQA)

    eparts = Path("results/parts/eval") / MODEL / VQA / "seed-0" / "icl"
    _ok(params, "evaluate", "--model", MODEL, "--task", VQA, "--method", "icl", "--part", "2/2")
    err = refused("merge-evaluate", "--model", MODEL, "--task", VQA, "--method", "icl")
    assert "part-00000-of-00002.json is missing: rerun `mimic evaluate" in err and "--part 1/2`" in err
    _ok(params, "evaluate", "--model", MODEL, "--task", VQA, "--method", "icl", "--part", "1/2")
    first = json.loads((eparts / "part-00000-of-00002.json").read_text())
    second = eparts / "part-00001-of-00002.json"
    doc = json.loads(second.read_text())
    second.write_text(json.dumps({**doc, "rows": [first["rows"][0], *doc["rows"][1:]]}))
    err = refused("merge-evaluate", "--model", MODEL, "--task", VQA, "--method", "icl")
    assert f"query {first['rows'][0]['id']} is also in" in err and "(duplicate queries)" in err
    second.write_text(json.dumps({**doc, "rows": doc["rows"][:-1]}))
    err = refused("merge-evaluate", "--model", MODEL, "--task", VQA, "--method", "icl")
    assert f"holds {len(doc['rows']) - 1} queries, not the {len(doc['rows'])} of part 1 of 2" in err
    second.write_text(json.dumps(doc))
    beams = _params(teacher_jobs=2, eval_jobs=2)
    beams["eval"]["num_beams"] = 2
    err = refused("merge-evaluate", "--model", MODEL, "--task", VQA, "--method", "icl", params=beams)
    assert "part-00000-of-00002.json was made under other settings (eval.num_beams: 1 -> 2)" in err
    assert not (Path("results/eval") / MODEL / VQA / "seed-0" / "icl").exists()
    _ok(params, "merge-evaluate", "--model", MODEL, "--task", VQA, "--method", "icl")
