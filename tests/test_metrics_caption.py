"""Caption metrics: hand-computed values, agreement with pycocoevalcap's own pipeline,
a read-only pycocoevalcap directory, and the Java / METEOR failure paths."""

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pycocoevalcap.tokenizer.ptbtokenizer as upstream_ptb
import pytest

from mimic.metrics import coco_java, score
from mimic.metrics.caption import caption_scores

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="the caption metrics need java")

SRC = Path(__file__).resolve().parents[1] / "src"
FAST = ("CIDEr", "BLEU-4", "ROUGE-L")  # METEOR costs ~9 s of JVM start-up; it runs in one test only

# Two images, one reference each, with no word in common, so every n-gram has document
# frequency 1 and idf log(2) - log(1) = log 2 (which cancels in the cosine).
REFS = {"a": ["a man rides horse"], "b": ["two cats sleep together"]}

# A varied set for the comparison with pycocoevalcap: punctuation, case, non-ASCII, a newline
# inside a caption, an empty prediction and a punctuation-only one.
PREDICTIONS = {
    "1": "A man riding a horse on the beach.",
    "2": "Two cats, sleeping on a sofa!",
    "3": "",
    "4": "a plate of food",
    "5": "...",
    "6": "Un café au lait\non a table",
}
REFERENCES = {
    "1": ["A man rides a horse along the beach.", "Someone riding a brown horse by the sea", "a horse and rider"],
    "2": ["Two cats sleep on a couch.", "a pair of cats asleep on the sofa"],
    "3": ["a dog catching a frisbee", "A dog jumps for a frisbee in a park."],
    "4": ["A plate of pasta and salad.", "food on a white plate", "a dish of food on a table"],
    "5": ["A red bus on the street", "a double decker bus"],
    "6": ["A cup of coffee on a wooden table", "Un café on the table."],
}


@needs_java
def test_hand_computed_scores():
    # Image b is predicted exactly: each n-gram order n = 1..4 has cosine 1 and the length
    # penalty is exp(0) = 1, so its CIDEr-D is 10 * mean(1, 1, 1, 1) = 10.
    # Image a predicts "a man rides" against "a man rides horse":
    #   n=1: 3 shared unigrams, norms sqrt(3) and sqrt(4): 3 / (sqrt(3) * 2) = sqrt(3)/2
    #   n=2: 2 shared bigrams of 2 and 3:  2 / (sqrt(2) * sqrt(3)) = sqrt(2/3)
    #   n=3: 1 shared trigram of 1 and 2:  1 / sqrt(2)
    #   n=4: the prediction has no 4-gram: 0
    #   length penalty: pycocoevalcap measures length in bigrams (2 vs 3): exp(-1 / (2 * 6^2))
    cider_a = 10 * (math.sqrt(3) / 2 + math.sqrt(2 / 3) + math.sqrt(1 / 2) + 0) / 4 * math.exp(-1 / 72)
    # ROUGE-L of a: LCS 3, precision 3/3, recall 3/4, beta 1.2: (1 + 1.44) * 1 * 0.75 / (0.75 + 1.44 * 1)
    rouge_a = 2.44 * 0.75 / (0.75 + 1.44)
    scores = caption_scores({"a": "A man rides.", "b": "two cats sleep together"}, REFS, metrics=FAST)
    assert scores["CIDEr"] == pytest.approx(100 * (cider_a + 10) / 2)
    assert scores["ROUGE-L"] == pytest.approx(100 * (rouge_a + 1) / 2)

    exact = caption_scores(["a man rides horse", "two cats sleep together"], list(REFS.values()), metrics=FAST)
    assert exact == {"CIDEr": pytest.approx(1000.0), "BLEU-4": pytest.approx(100.0), "ROUGE-L": pytest.approx(100.0)}
    # mimic.metrics.score with caption_metrics: only those (the report rescores CIDEr alone)
    only = score("caption", {"a": "A man rides.", "b": "two cats sleep together"}, REFS, caption_metrics=["CIDEr"])
    assert only == {"CIDEr": pytest.approx(100 * (cider_a + 10) / 2)}


@needs_java
def test_ptb_tokenize_keeps_one_caption_per_id_slot():
    captions = {
        "a": ["A man, riding a horse.", "two\rlines\x0cand\u2028more"],  # any line break becomes a space
        "b": [""],
        "c": ["Café au lait!"],  # non-ASCII survives the Java round trip
        "d": ["...", ""],  # punctuation-only and empty captions, the last one at the very end
    }
    assert coco_java.ptb_tokenize(captions) == {
        "a": ["a man riding a horse", "two lines and more"],
        "b": [""],
        "c": ["café au lait"],
        "d": ["", ""],
    }


@needs_java
def test_matching_a_reference_beats_a_disjoint_caption():
    refs = {k: v for k, v in REFERENCES.items() if k in "124"}
    good = caption_scores({k: v[0] for k, v in refs.items()}, refs, metrics=FAST)
    bad = caption_scores({k: "purple elephants juggling umbrellas" for k in refs}, refs, metrics=FAST)
    for metric in FAST:
        assert good[metric] > bad[metric], metric
    assert bad["CIDEr"] == 0.0 and bad["ROUGE-L"] == 0.0


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory):
    """pycocoevalcap copied to a temporary directory (files as symlinks, directories real)."""
    upstream = Path(upstream_ptb.__file__).absolute().parents[1]
    root = tmp_path_factory.mktemp("site")
    skip_cache = shutil.ignore_patterns("__pycache__")
    shutil.copytree(upstream, root / "pycocoevalcap", copy_function=os.symlink, ignore=skip_cache)
    return root


def _run_python(code: str, path_first: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path_first), str(SRC)]), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    return json.loads(out.decode().strip().splitlines()[-1])


REFERENCE_PIPELINE = textwrap.dedent(
    """
    import json, sys
    import pycocoevalcap.tokenizer.ptbtokenizer as ptb
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    assert ptb.__file__.startswith({root!r}), ptb.__file__
    preds, refs = json.loads({data!r})
    tokenizer = ptb.PTBTokenizer()
    gts = tokenizer.tokenize({{k: [{{"caption": c}} for c in v] for k, v in refs.items()}})
    res = tokenizer.tokenize({{k: [{{"caption": preds[k]}}] for k in refs}})
    print(json.dumps({{
        "CIDEr": 100 * Cider().compute_score(gts, res)[0],
        "BLEU-4": 100 * Bleu(4).compute_score(gts, res, verbose=0)[0][3],
        "ROUGE-L": 100 * Rouge().compute_score(gts, res)[0],
    }}))
    """
)


# pycocoevalcap 1.2's own METEOR on PREDICTIONS/REFERENCES: REFERENCE_PIPELINE plus
# "METEOR": 100 * Meteor().compute_score(gts, res)[0] (recorded, as its JVM takes ~9 s to start).
UPSTREAM_METEOR = 33.60445833452796


@needs_java
def test_matches_the_pycocoevalcap_pipeline(package_copy):
    # pycocoevalcap's own tokenizer writes next to its jar, so it runs on a writable copy.
    code = REFERENCE_PIPELINE.format(root=str(package_copy), data=json.dumps([PREDICTIONS, REFERENCES]))
    reference = _run_python(code, package_copy)  # runs while ours computes
    ours = caption_scores(PREDICTIONS, REFERENCES)
    expected = {**_result(reference), "METEOR": UPSTREAM_METEOR}
    assert set(ours) == set(expected) == {"CIDEr", "BLEU-4", "METEOR", "ROUGE-L"}
    for metric, value in expected.items():
        assert ours[metric] == pytest.approx(value, rel=1e-9, abs=1e-9), metric


READ_ONLY_RUN = textwrap.dedent(
    """
    import json, os, sys
    ROOT = {root!r}

    def read_only(event, args):  # root ignores chmod, so writes under ROOT are refused here too
        if event != "open" or isinstance(args[0], int):
            return
        path = os.path.abspath(os.fsdecode(args[0]))
        mode, flags = args[1], args[2] or 0
        writing = (mode is not None and any(c in mode for c in "wax+")) or flags & (os.O_WRONLY | os.O_RDWR)
        if path.startswith(ROOT) and writing:
            raise PermissionError(f"read-only package directory: {{path}}")

    sys.addaudithook(read_only)
    import pycocoevalcap.tokenizer.ptbtokenizer as ptb
    from mimic.metrics.caption import caption_scores
    assert ptb.__file__.startswith(ROOT), ptb.__file__
    try:
        ptb.PTBTokenizer().tokenize({{"x": [{{"caption": "a cat"}}]}})
        upstream = "worked"
    except PermissionError:
        upstream = "PermissionError"
    preds, refs = json.loads({data!r})
    print(json.dumps({{"upstream": upstream, "scores": caption_scores(preds, refs, metrics={metrics!r})}}))
    """
)


@needs_java
def test_works_with_a_read_only_package_directory(package_copy):
    pkg = package_copy / "pycocoevalcap"
    dirs = [pkg, *(p for p in pkg.rglob("*") if p.is_dir() and not p.is_symlink())]
    for d in dirs:
        d.chmod(0o555)
    try:
        code = READ_ONLY_RUN.format(root=str(pkg), data=json.dumps([PREDICTIONS, REFERENCES]), metrics=FAST)
        result = _result(_run_python(code, package_copy))
    finally:
        for d in dirs:
            d.chmod(0o755)
    assert result["upstream"] == "PermissionError"  # pycocoevalcap's tokenizer cannot run there...
    expected = caption_scores(PREDICTIONS, REFERENCES, metrics=FAST)
    assert result["scores"] == pytest.approx(expected)  # ...ours gives the same scores as here
    assert sorted(p.name for p in (pkg / "tokenizer").iterdir()) == sorted(
        p.name for p in Path(upstream_ptb.__file__).parent.iterdir() if p.name != "__pycache__"
    )  # and left nothing behind


def test_missing_java_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="caption metrics need Java on PATH"):
        caption_scores(["a cat"], [["a cat"]])


@needs_java
def test_meteor_failure_leaves_it_out_with_a_warning(monkeypatch, tmp_path, caplog):
    broken = tmp_path / "meteor-1.5.jar"
    broken.write_bytes(b"not a jar")
    monkeypatch.setattr(coco_java, "METEOR_JAR", broken)
    with caplog.at_level(logging.WARNING, logger="mimic.metrics.caption"):
        scores = score("caption", ["a man rides horse", "two cats sleep together"], list(REFS.values()))
    assert scores == {"CIDEr": pytest.approx(1000.0), "BLEU-4": pytest.approx(100.0), "ROUGE-L": pytest.approx(100.0)}
    assert "METEOR is missing" in caplog.text and "METEOR failed" in caplog.text


def test_input_errors():
    with pytest.raises(ValueError, match="unknown caption metric"):
        caption_scores(["a"], [["a"]], metrics=("SPICE",))
    with pytest.raises(ValueError, match="in only one of"):
        caption_scores({"1": "a"}, {"2": ["a"]})
    with pytest.raises(ValueError, match="2 predictions but 1"):
        caption_scores(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="non-empty list"):
        caption_scores(["a"], [[]])
    with pytest.raises(TypeError, match="both as dicts or both as lists"):
        caption_scores({"1": "a"}, [["a"]])
