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
