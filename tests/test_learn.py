"""mimic.train's inputs are checked before the model runs: one line naming what is wrong, nothing attached."""

import pytest
from PIL import Image

import mimic
from mimic.tiny.models import tiny_idefics2
from mimic.training.learn import examples_table


def good(n=4):
    return [{"image": Image.new("RGB", (8, 8), (i, 0, 0)), "question": "What?", "answer": f"a{i}"} for i in range(n)]


@pytest.mark.parametrize(("change", "message"), [
    ({"examples": [{"question": "What?", "answer": "a"}]}, r"^examples\[0\]: an example is a dict with 'image'"),
    ({"examples": good(3) + [{"image": Image.new("RGB", (8, 8)), "question": "What?"}]},
     r"^examples\[3\]: needs 'answer' \(a string\) or 'answers' \(a list of strings\)$"),
    ({"examples": [{"image": "nowhere.png", "question": "What?", "answer": "a"}]},
     r"^examples\[0\]: image file nowhere.png is missing$"),
    ({"examples": [{"image": 3, "question": "What?", "answer": "a"}]}, r"^examples\[0\]: 'image' must be a PIL"),
    ({"examples": [{**e, "question": ""} for e in good()]}, r"^examples\[0\]: a VQA example needs a 'question'$"),
    ({"examples": [{**e, "id": "x"} for e in good()]}, r"^examples: ids must be unique; repeated: \['x'\]$"),
    ({"kind": "ocr"}, r"^kind = 'ocr'; valid: \['vqa', 'caption', 'yes-no', 'multiple-choice'\]$"),
    ({"kind": "yes-no", "examples": [{**e, "question": ""} for e in good()]},
     r"^examples\[0\]: a yes-no example needs a 'question'$"),
    ({"teacher": "cached"}, r"^teacher = 'cached'; valid: \['online'\]"),
    ({"target": "logits"}, r"^target = 'logits'; valid: \['mlp', 'layer', 'attn'\]$"),
    ({"learning_rate": 1e-3}, r"^unknown training settings \['learning_rate'\]; valid: "),
    ({"shots": 4}, r"^shots = 4 needs more than 4 examples \(an example never demonstrates itself\); got 4$"),
])
def test_bad_input_is_one_line_before_anything_runs(change, message):
    model = tiny_idefics2()
    kwargs = {"examples": good(), "shots": 2, **change}
    with pytest.raises((ValueError, TypeError, FileNotFoundError), match=message) as err:
        mimic.train(model, None, kwargs.pop("examples"), **kwargs)
    assert "\n" not in str(err.value)
    assert mimic.methods.attached(model) is None


def test_examples_become_the_task_table():
    table = examples_table([{"image": Image.new("RGB", (8, 8)), "question": "Q?", "answers": ["x", "y"], "id": "q1"},
                            {"image": Image.new("RGB", (8, 8)), "answer": "z"}], "caption")
    assert table["id"].tolist() == ["q1", "examples-1"] and table["answers"].tolist() == [["x", "y"], ["z"]]
    assert table["question"].tolist() == ["Q?", ""] and table["image"][0]["bytes"][:8] == b"\x89PNG\r\n\x1a\n"
