"""OK-VQA answer stemming (:mod:`mimic.metrics.okvqa_stem`) against the MimIC reference code.

Reference: Kamichanw/MimIC at commit ``9eda50b``, ``testbed/data/ok_vqa/__init__.py`` (``_MANUAL_MATCHES``
lines 16-185, ``OKVQAStemmer.stem`` lines 194-206, ``postprocess`` lines 209-215); it is applied by
``postprocess_generation`` (``testbed/data/__init__.py`` lines 126-176, the call at line 169) to each prediction
of ``eval_vqa`` (``src/dataset_utils/vqa.py`` line 177; OK-VQA reaches it from line 108). nltk's data models
cannot be downloaded here, so the rule tests put deterministic stand-ins for the tokenizer, tagger and lemmatizer
in place of ``_nlp``; the singularizer is the real ``inflection`` package.
"""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mimic.errors import MimicError
from mimic.metrics import okvqa_stem

MIRROR = Path("/work/.mirror/Kamichanw+MimIC/repo")
REFERENCE = "9eda50b:testbed/data/ok_vqa/__init__.py"


def reference_table() -> tuple[int, dict[str, str]]:
    """(number of key literals, the dict) of ``_MANUAL_MATCHES`` in the reference file, or skip without the mirror."""
    if not MIRROR.is_dir():
        pytest.skip(f"no git mirror of the MimIC reference at {MIRROR}")
    shown = subprocess.run(["git", "-C", str(MIRROR), "show", REFERENCE], capture_output=True, text=True)
    if shown.returncode != 0:
        pytest.skip(f"git show {REFERENCE} failed: {shown.stderr.strip()}")
    for node in ast.parse(shown.stdout).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["_MANUAL_MATCHES"]:
            return len(node.value.keys), ast.literal_eval(node.value)
    raise AssertionError(f"no _MANUAL_MATCHES assignment in {REFERENCE}")


def test_manual_matches_equal_the_reference_table():
    """``_MANUAL_MATCHES``, ``testbed/data/ok_vqa/__init__.py`` lines 16-185 at 9eda50b: same pairs, same order,
    no key repeated in the reference literal (a repeat would hide one of its values)."""
    n_keys, table = reference_table()
    assert n_keys == len(table) == 168
    assert list(okvqa_stem.MANUAL_MATCHES.items()) == list(table.items())


# sha256 of json.dumps(list(_MANUAL_MATCHES.items())) of the reference file at 9eda50b (computed from the mirror by
# test_manual_matches_equal_the_reference_table's parse): guards every pair, in order, where there is no mirror.
REFERENCE_TABLE_SHA256 = "fbc53bab48a3beefa526fbb4a2706c104945049137d0669b18064d76fc59fc5b"


def test_manual_matches_hash_equals_the_reference_tables():
    assert hashlib.sha256(json.dumps(list(okvqa_stem.MANUAL_MATCHES.items())).encode()).hexdigest() == \
        REFERENCE_TABLE_SHA256


def test_the_recorded_hash_is_the_reference_tables():
    _, table = reference_table()
    assert hashlib.sha256(json.dumps(list(table.items())).encode()).hexdigest() == REFERENCE_TABLE_SHA256


def test_manual_matches_hard_coded_pairs():
    """Checked without the mirror: the first, the apostrophe and the last entries of ``_MANUAL_MATCHES``
    (``testbed/data/ok_vqa/__init__.py`` lines 17-19, 22, 28, 42, 44, 109, 133, 180-184 at 9eda50b), and its size."""
    table = okvqa_stem.MANUAL_MATCHES
    assert len(table) == 168
    assert list(table.items())[:3] == [("police", "police"), ("las", "las"), ("vegas", "vegas")]
    assert list(table.items())[-5:] == [
        ("protesters", "protest"), ("controllers", "control"), ("weddings", "wed"), ("sometimes", "sometime"),
        ("earing", "ear"),
    ]
    assert table["hell's"] == "hell" and table["men's"] == "men" and table["batter's"] == "batter"
    assert table["christmas"] == "christmas" and table["pudding"] == "pud" and table["leaves"] == "leaf"


# Stand-ins for nltk's models: tokens and tags given per text and per token, a lemmatizer that records its calls.
TOKENS = {
    "riding morning directions leaves": ["riding", "morning", "directions", "leaves"],
    "surfing Skiing": ["surfing", "Skiing"],
    "two cats , Vikings and mice": ["two", "cats", ",", "Vikings", "and", "mice"],
    "dogs Texas glasses is": ["dogs", "Texas", "glasses", "is"],
    "Riding": ["Riding"],
    "": [],
}
TAGS = {
    "riding": "VBG", "morning": "NN", "directions": "NNS", "leaves": "NNS",
    "surfing": "NNS", "Skiing": "NNP",
    "two": "CD", "cats": "NNS", ",": ",", "Vikings": "NNPS", "and": "CC", "mice": "NNS",
    "dogs": "NN", "Texas": "NNP", "glasses": "JJ", "is": "VBZ", "Riding": "VBG",
}
LEMMAS = {"surfing": "surf", "Skiing": "Ski", "Riding": "Ride", "riding": "WRONG", "morning": "WRONG"}


@pytest.fixture
def stand_ins(monkeypatch):
    """Replace ``_nlp`` with the stand-ins; returns the list of (word, pos) the lemmatizer was called with."""
    pytest.importorskip("inflection")
    calls = []

    def lemmatize(word, pos):
        calls.append((word, pos))
        return LEMMAS[word]

    def tag(tokens):
        return [(token, TAGS[token]) for token in tokens]

    monkeypatch.setattr(okvqa_stem, "_nlp", lambda: (TOKENS.__getitem__, tag, lemmatize))
    return calls


def test_manual_table_comes_first(stand_ins):
    """``OKVQAStemmer.stem``, ``testbed/data/ok_vqa/__init__.py`` lines 199-200 at 9eda50b: a listed word takes
    the table's value before the "ing" rule (riding, morning: the lemmatizer is not asked) and before the plural
    rule (inflection would make "direction" and "leafe")."""
    assert okvqa_stem.stem("riding morning directions leaves") == "ride morn direct leaf"
    assert stand_ins == []


def test_ing_words_are_lemmatized_as_verbs(stand_ins):
    """Lines 201-202: a word ending in "ing" goes to WordNet's lemmatizer as a verb, whatever its tag (even NNS,
    so before line 203's plural rule); the table is case-sensitive, so "Riding" is lemmatized, not looked up."""
    assert okvqa_stem.stem_all(["surfing Skiing", "Riding"]) == ["surf Ski", "Ride"]
    assert stand_ins == [("surfing", "v"), ("Skiing", "v"), ("Riding", "v")]


def test_plural_nouns_are_singularized_by_inflection(stand_ins):
    """Lines 203-204: tokens tagged NNS or NNPS go through ``inflection.singularize`` (irregular plurals too);
    line 206: the tokens, punctuation included, are joined by single spaces."""
    assert okvqa_stem.stem("two cats , Vikings and mice") == "two cat , Viking and mouse"
    assert stand_ins == []


def test_other_tokens_are_unchanged(stand_ins):
    """Lines 198-205: a token not in the table, not ending in "ing" and not tagged NNS/NNPS is kept as it is,
    plural-looking or not (inflection would make "dog", "Texa", "glass"); an empty text stays empty."""
    assert okvqa_stem.stem_all(["dogs Texas glasses is", ""]) == ["dogs Texas glasses is", ""]
    assert stand_ins == []


def test_missing_nltk_data_is_one_line_naming_the_package(monkeypatch):
    """When an nltk data package is missing and cannot be downloaded (offline), the error is one line naming
    that package and the command that installs all three (the reference would fail at its first
    ``nltk.pos_tag``/``word_tokenize`` call, ``testbed/data/ok_vqa/__init__.py`` line 196)."""
    nltk = pytest.importorskip("nltk")
    asked = []

    def find(resource, *args, **kwargs):
        if resource == "corpora/wordnet":
            raise LookupError(f"Resource {resource} not found.\n  Please use the NLTK Downloader")
        return resource

    def download(package, *args, **kwargs):
        asked.append(package)
        return False

    monkeypatch.setattr(nltk.data, "find", find)
    monkeypatch.setattr(nltk, "download", download)
    okvqa_stem._nlp.cache_clear()
    try:
        with pytest.raises(MimicError) as raised:
            okvqa_stem._nlp()
    finally:
        okvqa_stem._nlp.cache_clear()
    message = str(raised.value)
    assert "\n" not in message
    assert "'wordnet'" in message and "'punkt_tab'" not in message
    assert "python -m nltk.downloader punkt_tab averaged_perceptron_tagger_eng wordnet" in message
    assert asked == ["wordnet"]


def test_nltk_verb_code():
    """``VERB`` is nltk's own constant, the one the reference passes (line 12 imports it, line 202 uses it)."""
    pytest.importorskip("nltk")
    from nltk.corpus.reader import VERB

    assert okvqa_stem.VERB == VERB


@pytest.mark.parametrize("module", ["nltk", "inflection"])
def test_missing_extra_is_one_line_naming_it(monkeypatch, module):
    """Without nltk or inflection (the ``okvqa`` extra), stemming fails in one line naming the extra; the
    reference imports both at module level (``testbed/data/ok_vqa/__init__.py`` lines 11-13)."""
    monkeypatch.setitem(sys.modules, module, None)  # makes ``import module`` raise ImportError
    if module == "inflection":
        monkeypatch.setattr(okvqa_stem, "_nlp", lambda: (str.split, list, None))
        run = lambda: okvqa_stem.stem("x")  # noqa: E731
    else:
        run = okvqa_stem._nlp.__wrapped__  # what ``stem`` calls, without the cached models
    with pytest.raises(MimicError) as raised:
        run()
    message = str(raised.value)
    assert "\n" not in message and repr(module) in message and "pip install 'mimic-icl[okvqa]'" in message
