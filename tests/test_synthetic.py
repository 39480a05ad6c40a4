"""The synthetic task suite: deterministic, disjoint splits, real formats, answers follow the spec."""

import hashlib
import random

import pandas as pd
import pytest

from mimic.data import synthetic as syn
from mimic.data.loaders import prepare_task
from mimic.data.schema import SPLITS, open_image, read_table

SPEC = {"name": "shapes-vqa", "loader": "synthetic", "kind": "vqa", "attribute": "color", "n_train": 12,
        "n_support": 16, "n_eval": 10}
NAMED = {"name": "shapes-names-vqa", "loader": "synthetic", "kind": "vqa", "attribute": "color",
         "nonce": ["color"], "n_train": 60, "n_support": 400, "n_eval": 40}


def _digests(directory):
    return {s: hashlib.sha256((directory / f"{s}.parquet").read_bytes()).hexdigest() for s in SPLITS}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    prepare_task(SPEC, tmp_path / "a", seed=3)
    prepare_task(SPEC, tmp_path / "b", seed=3)
    prepare_task(SPEC, tmp_path / "c", seed=4)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert all(x != y for x, y in zip(_digests(tmp_path / "a").values(), _digests(tmp_path / "c").values(),
                                      strict=True))


def test_splits_are_disjoint_and_normalized(tmp_path):
    meta = prepare_task(SPEC, tmp_path, seed=0)
    tables = {s: read_table(tmp_path / f"{s}.parquet") for s in SPLITS}
    assert meta["sizes"] == {"train": 12, "support": 16, "eval": 10}
    ids = [set(t["id"]) for t in tables.values()]
    images = [{hashlib.sha256(r["bytes"]).hexdigest() for r in t["image"]} for t in tables.values()]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not ids[i] & ids[j] and not images[i] & images[j]
    row = tables["eval"].iloc[0]
    assert open_image(row["image"]).size == (syn.IMAGE_SIZE, syn.IMAGE_SIZE)
    assert len(row["answers"]) == 10 and row["answers"][0] in syn.COLORS


def test_vqa_answers_are_the_asked_attribute_of_the_drawn_scene():
    rng = random.Random(0)
    for attribute in syn.ATTRIBUTES:
        scene = syn.sample_scene(rng)
        ex = syn.vqa_example("q", scene, attribute, rng, explicit_ratio=0.5)
        assert ex.answers.count(scene.attribute(attribute)) >= 8
        assert ex.question in syn.GENERIC_QUESTIONS + syn.EXPLICIT_QUESTIONS[attribute]


def test_rendered_pixels_carry_the_attributes():
    scene = syn.Scene("red", "square", "big", 2, "white", ((2, 2), (25, 25)))
    image = syn.render(scene)
    assert image.getpixel((5, 5)) == syn.COLORS["red"]
    assert image.getpixel((45, 2)) == syn.BACKGROUNDS["white"]
    side = syn.SIZES["big"]
    counted = sum(1 for x in range(48) for y in range(48) if image.getpixel((x, y)) == syn.COLORS["red"])
    assert counted == 2 * side * side


def test_captions_follow_their_style():
    scene = syn.Scene("blue", "cross", "small", 3, "gray", ())
    assert syn.caption(scene, "default") == "three small blue crosses"
    assert syn.caption(scene, "there-are") == "there are three crosses . they are blue and small"
    refs = syn.reference_captions(scene, "photo")
    assert len(set(refs)) == 5 and all("gray background" in r for r in refs)


@pytest.mark.parametrize("bad, message", [
    ({"attribute": "weight"}, "tasks.shapes-vqa.attribute"),
    ({"n_eval": 0}, "tasks.shapes-vqa.n_eval"),
    ({"colour": "red"}, "tasks.shapes-vqa.colour: unknown key"),
    ({"nonce": ["colour"]}, "tasks.shapes-vqa.nonce = \\['colour'\\]; must be a list of distinct attributes"),
    ({"nonce": "color"}, "tasks.shapes-vqa.nonce = 'color'; must be a list"),
    ({"noise": 0.2}, "tasks.shapes-vqa.noise = 0.2: noise relabels made-up words; set tasks.shapes-vqa.nonce"),
    ({"nonce": ["color"], "noise": 1.5}, "tasks.shapes-vqa.noise = 1.5; must be a number in \\[0, 1\\]"),
])
def test_bad_specs_fail_before_any_work(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        prepare_task({**SPEC, **bad}, tmp_path, seed=0)
    assert not any(tmp_path.iterdir())


def test_caption_task(tmp_path):
    spec = {"name": "shapes-caption", "loader": "synthetic", "kind": "caption", "style": "there-are",
            "n_train": 3, "n_support": 3, "n_eval": 3}
    prepare_task(spec, tmp_path, seed=0)
    df = pd.read_parquet(tmp_path / "eval.parquet")
    assert all(q == "" for q in df["question"]) and all(len(a) == 5 for a in df["answers"])
    assert all(a[0].startswith("there ") for a in df["answers"])


def _by_split(spec, seed=0):
    return {split: [ex for ex, _ in examples] for split, examples in syn.draw_task(spec, seed).items()}


def test_made_up_names_are_one_fixed_mapping_of_the_task(tmp_path):
    meta = prepare_task(NAMED, tmp_path, seed=0)
    lexicon = meta["lexicon"]["color"]
    assert sorted(lexicon) == sorted(syn.COLORS)
    assert len(set(lexicon.values())) == len(syn.COLORS) and set(lexicon.values()) <= set(syn.NONCE_WORDS)
    assert lexicon == syn.task_lexicon("shapes-names-vqa", 0, ["color"])["color"]
    # a function of (seed, task name): another seed or another name renames the colours otherwise
    assert lexicon != syn.task_lexicon("shapes-names-vqa", 1, ["color"])["color"]
    assert lexicon != syn.task_lexicon("other", 0, ["color"])["color"]
    # every split follows the one mapping, value by value (the tables against the drawn scenes)
    for split, examples in _by_split(NAMED).items():
        table = read_table(tmp_path / f"{split}.parquet")
        assert list(table["id"]) == [ex.id for ex in examples]
        for ex, answers in zip(examples, table["answers"], strict=True):
            # the value, then its name; never a synonym (the name is what is asked)
            assert list(answers) == [f"{ex.scene.color} {lexicon[ex.scene.color]}"] * 10


def test_noise_relabels_that_share_of_the_support_with_another_value_only():
    clean = _by_split(NAMED)
    noisy = _by_split({**NAMED, "noise": 0.25})
    lexicon = syn.task_lexicon("shapes-names-vqa", 0, ["color"])["color"]
    owner = {w: c for c, w in lexicon.items()}
    for split in ("train", "eval"):  # training and evaluation answers keep the task's names
        assert [ex.answers for ex in noisy[split]] == [ex.answers for ex in clean[split]]
    said = [ex.target.split(" ") for ex in noisy["support"]]
    assert all(value == ex.scene.color for (value, _), ex in zip(said, noisy["support"], strict=True))
    wrong = [(ex, name) for (_, name), ex in zip(said, noisy["support"], strict=True)
             if name != lexicon[ex.scene.color]]
    assert all(owner[name] != ex.scene.color for ex, name in wrong)  # always another value's name
    # 400 draws at p = 0.25: 100 expected, sd 8.7; the clean support has none
    assert 70 <= len(wrong) <= 130, len(wrong)
    assert all(ex.target == f"{ex.scene.color} {lexicon[ex.scene.color]}" for ex in clean["support"])


def test_names_enter_captions_and_answers_word_by_word():
    scene = syn.Scene("blue", "cross", "small", 3, "gray", ())
    lexicon = {"color": {"blue": "dax"}, "shape": {"cross": "wug"}}
    assert syn.caption(scene, "there-are", 0, lexicon) == "there are three crosses wug . they are blue dax and small"
    assert syn.caption(scene, "photo", 0, lexicon) == "a photo of three small blue dax crosses wug on a gray background"
    assert syn.default_answer(scene, {"size": {"small": "fep"}}) == "three small fep blue crosses"
    assert syn.word(scene, "shape", lexicon) == "cross wug" and syn.word(scene, "size", lexicon) == "small"
    assert syn.word(syn.Scene("red", "cross", "small", 3, "gray", ()), "color", lexicon) == "red"  # unnamed value
    names = {"color": dict(zip(syn.COLORS, syn.NONCE_WORDS, strict=False))}
    noisy = syn.mislabel(names, scene, random.Random(0))
    assert syn.word(scene, "color", noisy).split()[0] == "blue"  # the value is seen right; only its name is off
    assert syn.name_of(scene, "color", noisy) in set(names["color"].values()) - {names["color"]["blue"]}


def test_lexicons_are_injective_and_refuse_too_many_values():
    lexicon = syn.draw_lexicon(random.Random(0), ["color", "shape", "count"])
    words = [w for names in lexicon.values() for w in names.values()]
    assert len(words) == len(set(words)) == 10 + 4 + 3
    with pytest.raises(ValueError, match="unknown attribute 'weight'"):
        syn.draw_lexicon(random.Random(0), ["weight"])
