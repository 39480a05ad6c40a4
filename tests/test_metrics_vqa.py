"""VQA accuracy against the official rules: hand-worked cases and an independent transcription.

``official_accuracy`` below transcribes the current official ``vqaEval.py`` (GT-Vision-Lab/VQA,
PythonEvaluationTools/vqaEvaluation/vqaEval.py at commit a013f00, i.e. after the 2021
"Fixed processing answers bug"), and ``reference_accuracy`` the MimIC reference code's
``vqa_accuracy.py`` (Kamichanw/MimIC), statement by statement, on answer dicts and with their
own copies of the official tables; neither uses the module's normalisers. Thousands of seeded
random answer sets compare them with :mod:`mimic.metrics.vqa`.

Each hand-worked case says which version of the official code it follows: "current" (2021,
what the module reproduces), "both" where the 2016 version agrees, and what 2016 gave where it
differs.
"""

import random
import re

import pytest

from mimic import metrics
from mimic.metrics import HEADLINE, metric_variant, score
from mimic.metrics.vqa import (
    CONTRACTIONS,
    MANUAL_MAP,
    VARIANTS,
    compared_forms,
    normalize_answer,
    process_punctuation,
    vqa_accuracy,
    vqa_score,
)

# ----------------------------------------------------------------------------- the official code, transcribed

OFFICIAL_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip
OFFICIAL_MANUAL_MAP = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
OFFICIAL_ARTICLES = ["a", "an", "the"]
OFFICIAL_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
OFFICIAL_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
OFFICIAL_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
                  ",", "?", "!"]  # fmt: skip


def official_process_punctuation(in_text):
    out_text = in_text
    for p in OFFICIAL_PUNCT:
        if (p + " " in in_text or " " + p in in_text) or (re.search(OFFICIAL_COMMA_STRIP, in_text) is not None):
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    out_text = OFFICIAL_PERIOD_STRIP.sub("", out_text, re.UNICODE)  # noqa: B034 - the official positional count
    return out_text


def official_process_digit_article(in_text):
    manual_map = dict(OFFICIAL_MANUAL_MAP)  # the official code grows its map with setdefault
    out_text = []
    for word in in_text.lower().split():
        word = manual_map.setdefault(word, word)
        if word not in OFFICIAL_ARTICLES:
            out_text.append(word)
    for word_id, word in enumerate(out_text):
        if word in OFFICIAL_CONTRACTIONS:
            out_text[word_id] = OFFICIAL_CONTRACTIONS[word]
    return " ".join(out_text)


def official_accuracy(prediction: str, answers: list[str]) -> float:
    """The per-question body of the current ``VQAEval.evaluate`` (answers as official answer dicts)."""
    gts = [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]
    for ans_dic in gts:
        ans_dic["answer"] = ans_dic["answer"].replace("\n", " ")
        ans_dic["answer"] = ans_dic["answer"].replace("\t", " ")
        ans_dic["answer"] = ans_dic["answer"].strip()
    res_ans = prediction
    res_ans = res_ans.replace("\n", " ")
    res_ans = res_ans.replace("\t", " ")
    res_ans = res_ans.strip()
    gt_acc = []
    gt_answers = [ans["answer"] for ans in gts]
    if len(set(gt_answers)) > 1:
        for ans_dic in gts:
            ans_dic["answer"] = official_process_punctuation(ans_dic["answer"])
            ans_dic["answer"] = official_process_digit_article(ans_dic["answer"])
        res_ans = official_process_punctuation(res_ans)
        res_ans = official_process_digit_article(res_ans)
    for gt_ans_datum in gts:
        other_gt_ans = [item for item in gts if item != gt_ans_datum]
        matching_ans = [item for item in other_gt_ans if item["answer"] == res_ans]
        acc = min(1, float(len(matching_ans)) / 3)
        gt_acc.append(acc)
    return float(sum(gt_acc)) / len(gt_acc)


def reference_accuracy(prediction: str, answers: list[str]) -> float:
    """The per-question body of the MimIC reference code's ``VQAAccuracy._compute``."""
    pred = prediction.replace("\n", " ").replace("\t", " ").strip()
    pred = official_process_digit_article(official_process_punctuation(pred))
    gts = [official_process_digit_article(official_process_punctuation(gt_ans)) for gt_ans in answers]
    accuracy = []
    for i in range(len(gts)):
        other_gt = gts[:i] + gts[i + 1 :]
        matching_ans = [item for item in other_gt if item == pred]
        accuracy.append(min(1, len(matching_ans) / 3))
    return sum(accuracy) / len(accuracy)


TRANSCRIPTIONS = {"official": official_accuracy, "reference": reference_accuracy}


# ----------------------------------------------------------------------------- random answer sets

WORDS = [
    # numbers and number words
    "none", "zero", "one", "two", "Two", "three", "ten", "eleven", "0", "1", "2", "10", "3.5", "1,000", "5.",
    ".5", "2,5", "1.000",
    # articles
    "a", "an", "the", "A", "The",
    # words, with case
    "dog", "Dog", "DOG", "yes", "Yes", "no", "red", "blue", "t-shirt", "t shirt", "black & white",
    # contractions
    "dont", "don't", "whats", "what's", "Im", "im", "cant", "yall'll", "oclock", "somebody'd", "Youre",
    # punctuation in and around words
    "yes!", "yes.", "no?", "(red)", '"hot"', "red,blue", "red, blue", "a+b=c", "@home", "12:30", "mr.smith",
    "-", "...", "e.g.", "x/y", "[1]", "{a}", "a_b", "<3", "`tick`", "back\\slash", "semi;colon", "U.S.A.",
]  # fmt: skip
SEPARATORS = [" ", " ", " ", "  ", "-", ", ", ",", "/", "\t", ".", " . "]
PADDING = ["", "", "", " ", "  ", "\t", "\n", " \n"]


def random_answer(rng: random.Random) -> str:
    n = rng.choice((1, 1, 1, 2, 2, 3))
    text = rng.choice(WORDS)
    for _ in range(n - 1):
        text += rng.choice(SEPARATORS) + rng.choice(WORDS)
    return rng.choice(PADDING) + text + rng.choice(PADDING)


def perturbed(rng: random.Random, text: str) -> str:
    """A variant of an answer that normalisation may or may not map back onto it."""
    change = rng.randrange(8)
    if change == 0:
        return text.upper() if rng.random() < 0.5 else text.capitalize()
    if change == 1:
        return rng.choice(("the ", "a ", "an ")) + text
    if change == 2:
        return text + rng.choice((".", "!", "?", " .", ",", "..."))
    if change == 3:
        return rng.choice(PADDING) + text + rng.choice(PADDING)
    if change == 4:
        return text.replace(" ", rng.choice(("-", "/", "  ", "\t")))
    if change == 5:
        for word, digit in (("two", "2"), ("one", "1"), ("none", "0"), ("ten", "10")):
            text = text.replace(digit, word) if rng.random() < 0.5 else text.replace(word, digit)
        return text
    return text


def random_case(rng: random.Random) -> tuple[str, list[str]]:
    kind = rng.random()
    if kind < 0.25:  # ten identical answers
        answers = [random_answer(rng)] * 10
    elif kind < 0.4:  # identical once whitespace is cleaned
        base = random_answer(rng).strip()
        answers = [rng.choice(PADDING) + base + rng.choice(PADDING) for _ in range(10)]
    else:  # a few distinct answers (or their perturbations), so that matches happen
        pool = [random_answer(rng) for _ in range(rng.randint(1, 4))]
        pool += [perturbed(rng, a) for a in pool]
        answers = [rng.choice(pool) for _ in range(rng.choice((10, 10, 10, 3, 5, 1)))]
    prediction = perturbed(rng, rng.choice(answers)) if rng.random() < 0.7 else random_answer(rng)
    return prediction, answers


@pytest.mark.parametrize("variant", VARIANTS)
def test_agrees_with_the_transcribed_code_on_random_answer_sets(variant):
    rng = random.Random(2021)
    transcription = TRANSCRIPTIONS[variant]
    values = []
    for _ in range(5000):
        prediction, answers = random_case(rng)
        expected = transcription(prediction, answers)
        assert vqa_accuracy(prediction, answers, variant) == pytest.approx(expected, abs=1e-12), (prediction, answers)
        values.append(expected)
    # The draw exercises every accuracy level, not only 0 and 1.
    assert {round(v, 6) for v in values} >= {0.0, 0.3, 0.6, 0.9, 1.0}


def test_the_random_cases_tell_the_variants_apart():
    """Guards the generator: enough cases where the variants and the 2016 rules disagree."""
    rng = random.Random(2021)
    differ = identical_differ = 0
    for _ in range(5000):
        prediction, answers = random_case(rng)
        official, reference = official_accuracy(prediction, answers), reference_accuracy(prediction, answers)
        differ += official != reference
        identical_differ += official != reference and len({a.strip() for a in answers}) == 1
    assert differ > 300 and identical_differ > 100


def test_every_contraction_and_number_word_goes_through_the_official_tables():
    assert CONTRACTIONS == OFFICIAL_CONTRACTIONS and MANUAL_MAP == OFFICIAL_MANUAL_MAP
    for variant, transcription in TRANSCRIPTIONS.items():
        for word in [*OFFICIAL_CONTRACTIONS, *OFFICIAL_MANUAL_MAP]:
            for answers in ([word] * 10, [word] * 4 + ["other"] * 6, [OFFICIAL_CONTRACTIONS.get(word, word)] * 10):
                for prediction in (word, word.upper(), f"the {word}!"):
                    assert vqa_accuracy(prediction, answers, variant) == transcription(prediction, answers)


# ----------------------------------------------------------------------------- answer processing (both versions)


def ten(match: str, m: int, other: str = "other") -> list[str]:
    """Ten human answers, ``m`` of them ``match`` and the rest ``other``."""
    return [match] * m + [other] * (10 - m)


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
    # The same in the 2016 and the current official code.
    assert normalize_answer(text) == expected


def test_at_most_32_periods_are_stripped():
    # The official code (both versions) passes re.UNICODE (== 32) as the `count` of periodStrip.sub.
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


# ----------------------------------------------------------------------------- leave-one-out accuracy (both versions)


@pytest.mark.parametrize("variant", VARIANTS)
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
def test_leave_one_out(variant, m, expected):
    assert vqa_accuracy("dog", ten("dog", m), variant) == pytest.approx(expected)


def test_fewer_answers_use_the_same_rule():
    # 5 answers, 1 match: [1*0 + 4*(1/3)] / 5 = 4/15
    assert vqa_accuracy("cat", ["cat", "a", "b", "c", "d"]) == pytest.approx(4 / 15)
    with pytest.raises(ValueError, match="at least one"):
        vqa_accuracy("cat", [])


# ----------------------------------------------------------------------------- when answers are processed


def test_prediction_is_normalized_when_answers_differ():
    # Current and 2016 agree: the answers differ, the prediction is normalized.
    assert vqa_accuracy("Two.", ten("2", 4)) == 1.0
    assert vqa_accuracy("the Dog!", ten("dog", 3)) == pytest.approx(0.9)


def test_identical_answers_are_compared_exactly():
    # Current: ten identical answers -> no processing on either side, only whitespace stripped.
    assert vqa_accuracy(" yes\n", ["yes"] * 10) == 1.0  # 2016: 1.0
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0  # 2016: 1.0 (prediction lower-cased)
    assert vqa_accuracy("yes.", ["yes"] * 10) == 0.0  # 2016: 1.0 (period stripped)
    assert vqa_accuracy("dont know", ["don't know"] * 10) == 0.0  # 2016: 1.0 (contraction restored)
    assert vqa_accuracy("two", ["two"] * 10) == 1.0  # 2016: 0.0 (prediction became "2", answers stayed "two")
    assert vqa_accuracy("2", ["two"] * 10) == 0.0  # 2016: 0.0
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 10) == 1.0  # 2016: 0.0 (prediction became "t shirt")
    # Identical once whitespace is cleaned counts as identical: still no processing.
    assert vqa_accuracy("yes.", ["yes"] * 9 + ["yes \t"]) == 0.0  # 2016: 1.0


def test_differing_answers_are_fully_normalized():
    # Current: every answer gets punctuation, number words, articles, case and contractions processed.
    assert vqa_accuracy("two", ["two"] * 5 + ["2"] * 5) == 1.0  # all "2"; 2016: 1.0 (the five "2")
    assert vqa_accuracy("the dog", ["the dog"] * 8 + ["dog"] * 2) == 1.0  # all "dog"; 2016: 0.6
    assert vqa_accuracy("yes", ["Yes"] * 9 + ["yes"]) == 1.0  # all "yes"; 2016: 0.3 (answers kept case)
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 9 + ["shirt"]) == 1.0  # "t shirt" x9; 2016: 1.0
    assert vqa_accuracy("dont know", ["don't know"] * 2 + ["no"] * 8) == pytest.approx(0.6)  # 2016: 0.6


def test_reference_variant_always_normalizes():
    # The MimIC reference code normalizes both sides whatever the answers.
    assert vqa_accuracy("Yes.", ["yes"] * 10, "reference") == 1.0  # official: 0.0
    assert vqa_accuracy("2", ["two"] * 10, "reference") == 1.0  # official: 0.0
    assert vqa_accuracy("the dog", ["The Dog"] * 10, "reference") == 1.0  # official: 0.0
    assert vqa_accuracy("dont know", ["don't know"] * 10, "reference") == 1.0  # official: 0.0
    assert vqa_accuracy("yes", ["Yes"] * 9 + ["yes"], "reference") == 1.0  # official: 1.0
    # ...but, unlike the official code, does not clean the answers' whitespace before the punctuation
    # step: in "x\t-y-z" no '-' touches a space (a tab is not one), so each becomes a space; cleaned
    # first to "x -y-z", a '-' touches a space and every '-' is deleted.
    assert compared_forms("x", ["x\t-y-z", "z"], "reference")[1] == ["x y z", "z"]
    assert compared_forms("x", ["x\t-y-z", "z"], "official")[1] == ["x yz", "z"]


def test_variants_are_checked():
    with pytest.raises(ValueError, match=r"unknown VQA metric variant 'vqaEval-2016'; choose one of"):
        vqa_accuracy("yes", ["yes"], "vqaEval-2016")
    with pytest.raises(ValueError, match=r"unknown metric variant 'loose'"):
        score("vqa", ["yes"], [["yes"]], "loose")
    assert metrics.VQA_VARIANTS == VARIANTS and metrics.DEFAULT_VARIANT == "official"
    assert [metric_variant("vqa", v) for v in VARIANTS] == list(VARIANTS)
    assert metric_variant("caption", "reference") == "pycocoevalcap"


# ----------------------------------------------------------------------------- overall score


def test_score_is_100_times_the_mean():
    # (1.0 + 0.3 + 0.0) / 3 * 100, the same in every version
    preds = ["yes", "2", "blue"]
    answers = [ten("yes", 10), ten("2", 1), ten("red", 10)]
    assert vqa_score(preds, answers) == pytest.approx(130 / 3)
    assert score("vqa", preds, answers) == {"vqa_accuracy": pytest.approx(130 / 3)}
    keyed = score("vqa", {"q1": "yes", "q2": "no"}, {"q2": ten("no", 10), "q1": ten("no", 10)})
    assert keyed == {"vqa_accuracy": pytest.approx(50.0)}
    assert HEADLINE == {"vqa": "vqa_accuracy", "caption": "CIDEr", "yes-no": "mme_score", "multiple-choice": "accuracy"}


def test_score_follows_the_variant():
    preds, answers = ["Yes.", "two"], [["yes"] * 10, ["2"] * 10]
    assert score("vqa", preds, answers) == {"vqa_accuracy": 0.0}
    assert score("vqa", preds, answers, "reference") == {"vqa_accuracy": 100.0}


def test_score_input_errors():
    with pytest.raises(ValueError, match="2 predictions but 1"):
        vqa_score(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="no predictions"):
        vqa_score([], [])
    with pytest.raises(ValueError, match="unknown task kind"):
        score("retrieval", [], [])
