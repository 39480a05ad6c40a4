"""Which human answer a VQA demonstration shows and training teacher-forces (icd.answer).

The MimIC reference code takes the most common of the ten answers: ``testbed/data/common.py``,
``most_common_from_dict`` (``lst = [x["answer"] for x in dct]; return max(set(lst), key=lst.count)``),
applied to every VQAv2 / OK-VQA record in ``testbed/data/vqav2/vqav2.py`` ``_generate_examples``
(``record["answer"] = self.config.answer_selector(question["answers"])``; Kamichanw/MimIC). Its ties follow
``set`` iteration order (string hashing, random per process); ours go to the earliest annotator.
"""

import pandas as pd
import pytest

from mimic.data.batches import TaskData, target_answer
from mimic.data.schema import encode_png, image_record


def reference_most_common(answers: list[str]) -> str:
    """The reference's ``most_common_from_dict`` on ``[{"answer": a} for a in answers]``, transcribed."""
    dct = [{"answer": a} for a in answers]
    lst = [x["answer"] for x in dct]
    return max(set(lst), key=lst.count)


CASES = [
    ["red"] * 10,
    ["yes"] + ["no"] * 9,  # the first annotator is alone: the two rules differ
    ["2", "two", "2", "3", "2", "two", "2", "2", "3", "2"],
    ["dog", "puppy", "puppy", "dog", "puppy", "animal", "puppy", "dog", "dog", "puppy"],
]


@pytest.mark.parametrize("answers", CASES)
def test_most_common_is_the_reference_choice_wherever_it_has_no_tie(answers):
    assert target_answer(answers, "most_common") == reference_most_common(answers)
    assert target_answer(answers, "first") == answers[0]


def test_ties_go_to_the_earliest_annotator_and_a_bad_rule_is_named():
    assert target_answer(["cat", "dog", "dog", "cat"], "most_common") == "cat"
    assert target_answer(["dog", "cat", "cat", "dog"], "most_common") == "dog"
    with pytest.raises(ValueError, match=r"^icd.answer = 'majority'; valid: \['most_common', 'first'\]$"):
        target_answer(["a"], "majority")


def test_demonstrations_and_targets_follow_the_rule_and_captions_keep_their_first_reference():
    from PIL import Image

    image = image_record(encode_png(Image.new("RGB", (4, 4))))
    table = pd.DataFrame({"id": ["q"], "image": [image], "question": ["Q?"], "answers": [["yes"] + ["no"] * 9]})
    tables = {"train": table, "support": table}
    assert TaskData("vqa", tables).demo("q")[2] == "no" and TaskData("vqa", tables).target("train", "q") == "no"
    first = TaskData("vqa", tables, answer="first")
    assert first.demo("q")[2] == "yes" and first.target("train", "q") == "yes"
    assert TaskData("caption", tables).target("train", "q") == "yes"  # captions: the first reference


def test_every_stage_loads_its_task_with_the_icd_answer_of_params(tmp_path, monkeypatch):
    """mimic.commands.stage_inputs.load_task (extract-teacher, train, evaluate, latency) passes icd.answer on."""
    import json

    from PIL import Image

    from mimic.commands.stage_inputs import load_task
    from mimic.data.schema import write_table
    from mimic.pipeline import paths

    monkeypatch.chdir(tmp_path)
    image = image_record(encode_png(Image.new("RGB", (4, 4))))
    table = pd.DataFrame({"id": ["q"], "image": [image], "question": ["Q?"], "answers": [["yes"] + ["no"] * 9]})
    for split in ("train", "support", "eval"):
        paths.split_table("t", split, seed=0).parent.mkdir(parents=True, exist_ok=True)
        write_table(table, paths.split_table("t", split, seed=0))
    paths.icd_file("t", seed=0).write_text(json.dumps({"shots": 1, "draws": 1, "train": {}, "eval": {}}))
    params = {"tasks": {"t": {"kind": "vqa"}}, "icd": {"shots": 1}}
    assert load_task("t", params, 0)[0].demo("q")[2] == "no"  # the default: most common
    params["icd"]["answer"] = "first"
    assert load_task("t", params, 0)[0].demo("q")[2] == "yes"
    params["icd"]["target_answer"] = "most_common"  # the training target apart from the demonstrations
    data = load_task("t", params, 0)[0]
    assert data.demo("q")[2] == "yes" and data.target("train", "q") == "no"


def test_the_reference_code_teacher_forces_the_first_annotators_answer_and_shows_the_most_common():
    """Kamichanw/MimIC 9eda50b: a training query's target is `extract_answer` = ``item["answers"][0]["answer"]``
    (src/dataset_utils/vqa.py:83-87, used at src/dataset_utils/interface.py:229), a demonstration's answer is
    ``item["answer"]`` = ``most_common_from_dict`` (testbed/data/vqav2/vqav2.py:143, testbed/data/common.py:84-86):
    presets/reference.yaml sets icd.answer: most_common, icd.target_answer: first."""
    from pathlib import Path

    import yaml
    from PIL import Image

    reference = yaml.safe_load((Path(__file__).resolve().parents[1] / "presets" / "reference.yaml").read_text())
    image = image_record(encode_png(Image.new("RGB", (4, 4))))
    table = pd.DataFrame({"id": ["q"], "image": [image], "question": ["Q?"], "answers": [["yes"] + ["no"] * 9]})
    data = TaskData("vqa", {"train": table, "support": table}, answer=reference["icd"]["answer"],
                    target_answer=reference["icd"]["target_answer"])
    answers = list(table["answers"][0])
    assert data.target("train", "q") == answers[0] == "yes"  # extract_answer
    assert data.demo("q")[2] == max(set(answers), key=answers.count) == "no"  # most_common_from_dict
