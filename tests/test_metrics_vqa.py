"""VQA accuracy against hand-worked cases of the official evaluation's rules."""

import pytest

from mimic.metrics import HEADLINE, score
from mimic.metrics.vqa import (
    CONTRACTIONS,
    MANUAL_MAP,
    normalize_answer,
    process_punctuation,
    vqa_accuracy,
    vqa_score,
)


def ten(match: str, m: int, other: str = "other") -> list[str]:
    """Ten human answers, ``m`` of them ``match`` and the rest ``other``."""
    return [match] * m + [other] * (10 - m)


# --- answer processing ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes!", "yes"),  # '!' touches no space -> becomes a space, stripped by split/join
        ("yes/no", "yes no"),  # '/' -> space
        ("tic-tac-toe", "tic tac toe"),  # '-' touches no space -> spaces
        ("tic- tac-toe", "tic tactoe"),  # '- ' occurs -> every '-' is deleted, none spaced
        ("red,blue", "red blue"),  # ',' touches no space -> space
        ("red, blue", "red blue"),  # ', ' occurs -> ',' deleted, the space was already there
        ("1,000", "1000"),  # digit,digit (commaStrip) -> ',' deleted
        ("red,blue 1,000", "redblue 1000"),  # a digit,digit anywhere deletes every mark
        ('"hot" (dog)', "hot dog"),  # '"' touches a space -> deleted; '(' ')' too
        ("a+b=c", "b c"),  # '+' '=' -> spaces; then the article 'a' is dropped
        ("@home", "home"),
        ("it's", "it's"),  # apostrophes are not punctuation here
        ("12:30", "12:30"),  # nor colons
        ("yes.", "yes"),  # period not followed by a digit -> removed
        ("3.5", "3.5"),  # period followed by a digit -> kept
        ("mr.smith", "mrsmith"),  # removed without a space
        ("5.", "5"),  # '(?!<=\d)' is a lookahead, not a lookbehind: a period after a digit goes too
        ("  Dog\tand\ncat ", "dog and cat"),  # newlines/tabs -> spaces, ends stripped, lower-cased
    ],
)
def test_punctuation_rules(text, expected):
    assert normalize_answer(text) == expected


def test_at_most_32_periods_are_stripped():
    # The official code passes re.UNICODE (== 32) as the `count` of periodStrip.sub.
    assert process_punctuation("." * 40) == "." * 8


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("none", "0"),
        ("zero", "0"),
        ("One", "1"),
        ("two dogs", "2 dogs"),
        ("ten", "10"),
        ("eleven", "eleven"),  # only none/zero..ten are mapped
        ("the dog", "dog"),
        ("an apple", "apple"),
        ("A cat on a mat", "cat on mat"),
        ("the", ""),
    ],
)
def test_number_words_and_articles(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dont", "don't"),
        ("whats up", "what's up"),
        ("Youre", "you're"),  # lower-cased first, then looked up
        ("Im", "im"),  # the official table's key "Im" is capitalised, so it never matches
        ("yall'll", "y'all'll"),
        ("don't", "don't"),
    ],
)
def test_contractions(text, expected):
    assert normalize_answer(text) == expected


def test_official_tables_are_complete():
    assert MANUAL_MAP == {
        "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
        "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
    }  # fmt: skip
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["somebody'd"] == "somebodyd"  # an oddity of the official table, kept


# --- leave-one-out accuracy --------------------------------------------------------------


@pytest.mark.parametrize(
    ("m", "expected"),
    [
        # With m matching answers out of 10, leaving out a matching one leaves m-1 matches,
        # leaving out another leaves m: acc = [m*min(1,(m-1)/3) + (10-m)*min(1,m/3)] / 10.
        (0, 0.0),  # nothing matches
        (1, 0.3),  # [1*0 + 9*(1/3)] / 10 = 3/10
        (2, 0.6),  # [2*(1/3) + 8*(2/3)] / 10 = (2/3 + 16/3) / 10 = 6/10
        (3, 0.9),  # [3*(2/3) + 7*1] / 10 = (2 + 7) / 10
        (4, 1.0),  # [4*1 + 6*1] / 10
        (10, 1.0),
    ],
)
def test_leave_one_out(m, expected):
    assert vqa_accuracy("dog", ten("dog", m)) == pytest.approx(expected)


def test_fewer_answers_use_the_same_rule():
    # 5 answers, 1 match: [1*0 + 4*(1/3)] / 5 = 4/15
    assert vqa_accuracy("cat", ["cat", "a", "b", "c", "d"]) == pytest.approx(4 / 15)
    with pytest.raises(ValueError, match="at least one"):
        vqa_accuracy("cat", [])


def test_prediction_is_normalized_before_matching():
    assert vqa_accuracy("Two.", ten("2", 4)) == 1.0
    assert vqa_accuracy("the Dog!", ten("dog", 3)) == pytest.approx(0.9)
    assert vqa_accuracy("dont know", ten("don't know", 10)) == 1.0


def test_ground_truth_processed_only_when_answers_disagree():
    # Disagreeing answers get punctuation processing: "t-shirt" -> "t shirt" matches 9 times.
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 9 + ["shirt"]) == 1.0
    # Ten identical answers are compared raw: "t-shirt" != the prediction's "t shirt".
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 10) == 0.0
    # Ground truth never gets number words mapped: "2" matches, "two" does not.
    assert vqa_accuracy("two", ["two"] * 5 + ["2"] * 5) == 1.0
    assert vqa_accuracy("two", ["two"] * 10) == 0.0
    # ...nor articles dropped: only the 2 answers "dog" match the prediction "the dog" -> "dog".
    assert vqa_accuracy("the dog", ["the dog"] * 8 + ["dog"] * 2) == pytest.approx(0.6)


def test_score_is_100_times_the_mean():
    # (1.0 + 0.3 + 0.0) / 3 * 100
    preds = ["yes", "2", "blue"]
    answers = [ten("yes", 10), ten("2", 1), ten("red", 10)]
    assert vqa_score(preds, answers) == pytest.approx(130 / 3)
    assert score("vqa", preds, answers) == {"vqa_accuracy": pytest.approx(130 / 3)}
    keyed = score("vqa", {"q1": "yes", "q2": "no"}, {"q2": ten("no", 10), "q1": ten("no", 10)})
    assert keyed == {"vqa_accuracy": pytest.approx(50.0)}
    assert HEADLINE == {"vqa": "vqa_accuracy", "caption": "CIDEr"}


def test_score_input_errors():
    with pytest.raises(ValueError, match="2 predictions but 1"):
        vqa_score(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="no predictions"):
        vqa_score([], [])
    with pytest.raises(ValueError, match="unknown task kind"):
        score("retrieval", [], [])


def _official_loop(prediction: str, answers: list[str]) -> float:
    """The official per-question loop on answer dicts (left out by dict identity, unique answer_id)."""
    gts = [{"answer": a, "answer_id": i + 1} for i, a in enumerate(answers)]
    res = normalize_answer(prediction)
    if len({a["answer"] for a in gts}) > 1:
        for d in gts:
            d["answer"] = process_punctuation(d["answer"])
    accs = []
    for left_out in gts:
        others = [d for d in gts if d != left_out]
        accs.append(min(1, len([d for d in others if d["answer"] == res]) / 3))
    return sum(accs) / len(accs)


def test_agrees_with_the_official_loop_on_random_answers():
    import random

    rng = random.Random(0)
    vocab = ["yes", "no", "2", "two", "t-shirt", "t shirt", "the dog", "dog", "red, blue", "1,000", "whats"]
    for _ in range(300):
        answers = [rng.choice(vocab) for _ in range(10)]
        prediction = rng.choice(vocab)
        assert vqa_accuracy(prediction, answers) == pytest.approx(_official_loop(prediction, answers))
