r"""VQA accuracy as the official VQA evaluation computes it, and the MimIC reference code's variant.

``variant="official"`` (the default) reproduces ``vqaEval.py`` of the official VQA API
(GT-Vision-Lab/VQA, ``PythonEvaluationTools/vqaEvaluation/vqaEval.py``) as it stands since the
2021 commit "Fixed processing answers bug" (checked against commit ``a013f00``). OpenFlamingo's
copy (``open_flamingo/eval/vqa_metric.py``) is the same code. Per question:

1. every human answer and the prediction: newlines and tabs become spaces, the ends are
   stripped (:func:`clean_whitespace`);
2. **only when the human answers are not all identical** (after step 1): every answer and the
   prediction go through :func:`process_punctuation`, then :func:`process_digit_article`
   (lower-case, number words ``none``/``zero``..``ten`` to digits, articles dropped,
   contractions restored). When the ten answers agree nothing else is done, so the comparison
   is exact and case-sensitive: ten answers ``"yes"`` score a prediction ``"Yes."`` 0;
3. for each of the n answers, leave it out and take ``min(1, #matches among the other
   n - 1 / 3)``; the question's accuracy is the mean of the n values. The official code leaves
   an answer out by dict equality, and answer dicts carry a unique ``answer_id``, so exactly one
   answer is left out, by position, as done here.

``variant="reference"`` is the MimIC reference code's metric (Kamichanw/MimIC,
``testbed/evaluate/metrics/vqa_accuracy/vqa_accuracy.py``), the one behind the paper's
numbers: the prediction is cleaned and fully normalized (steps 1 and 2) **always**, and every
human answer goes through :func:`process_punctuation` and :func:`process_digit_article`
**always** (without step 1's whitespace cleaning); the leave-one-out of step 3 is the same.

The 2016 version of ``vqaEval.py`` that this module used to reproduce normalized the
prediction always and the answers only with :func:`process_punctuation`, only when they
disagreed; no current code uses it, so it is not offered.

Quirks of the official text processing, kept on purpose: ``periodStrip`` is
``(?!<=\d)(\.)(?!\d)``, where ``(?!<=`` is a negative *lookahead* for the text ``<=``, not a
lookbehind, so a period is removed whenever it is not followed by a digit; ``periodStrip.sub``
receives ``re.UNICODE`` (== 32) as its positional ``count``, so at most 32 periods are removed.
When any mark of :data:`PUNCT` touches a space in the text, or the text holds a
digit-comma-digit group, *every* mark is deleted; otherwise each mark becomes a space.
Apostrophes and colons are not in the list and are kept. The contraction table has
capitalised keys (``"Im"``) that never match, since the text is lower-cased first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

VARIANTS = ("official", "reference")
DEFAULT_VARIANT = "official"
DESCRIPTIONS = {
    "official": "current official VQA evaluation (GT-Vision-Lab/VQA vqaEval.py, 2021 fix): answers and prediction "
    "normalized only when the human answers differ",
    "reference": "MimIC reference code (Kamichanw/MimIC vqa_accuracy.py): answers and prediction always normalized",
}

# The official tables (vqaEval.py), written out. Capitalised keys such as "Im" can never match
# (the text is lower-cased first); they are kept so the table is the official one.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip
MANUAL_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = ("a", "an", "the")
PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_OFFICIAL_PERIOD_COUNT = re.UNICODE.value  # the official code passes re.UNICODE (32) as `count`


def clean_whitespace(text: str) -> str:
    """Step 1 of the official code: newlines and tabs to spaces, then strip the ends."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation``: delete or space out :data:`PUNCT`, then strip periods."""
    out = text
    delete_all = COMMA_STRIP.search(text) is not None
    for p in PUNCT:
        touches_space = p + " " in text or " " + p in text
        out = out.replace(p, "" if delete_all or touches_space else " ")
    return PERIOD_STRIP.sub("", out, count=_OFFICIAL_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lower-case, number words to digits, drop articles, contractions."""
    words = [MANUAL_MAP.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in ARTICLES]
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def normalize_answer(text: str) -> str:
    """The full processing of an answer: whitespace, punctuation, digits and articles."""
    return process_digit_article(process_punctuation(clean_whitespace(text)))


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown VQA metric variant {variant!r}; choose one of {list(VARIANTS)}")
    return variant


def compared_forms(prediction: str, answers: Sequence[str], variant: str = DEFAULT_VARIANT) -> tuple[str, list[str]]:
    """The prediction and the human answers as ``variant`` compares them (exact string equality)."""
    check_variant(variant)
    if variant == "reference":
        return normalize_answer(prediction), [process_digit_article(process_punctuation(a)) for a in answers]
    pred = clean_whitespace(prediction)
    truth = [clean_whitespace(a) for a in answers]
    if len(set(truth)) > 1:
        pred = process_digit_article(process_punctuation(pred))
        truth = [process_digit_article(process_punctuation(a)) for a in truth]
    return pred, truth


def vqa_accuracy(prediction: str, answers: Sequence[str], variant: str = DEFAULT_VARIANT) -> float:
    """Accuracy in [0, 1] of one predicted answer against the human answers of one question.

    With 10 answers of which ``m`` equal the (processed) prediction the result is
    0, 0.3, 0.6, 0.9 and 1.0 for m = 0, 1, 2, 3 and >= 4.
    """
    if len(answers) == 0:
        raise ValueError("vqa_accuracy needs at least one ground-truth answer")
    pred, truth = compared_forms(prediction, answers, variant)
    matches = [answer == pred for answer in truth]
    total = sum(matches)
    # Leaving answer i out: the matches among the others are total - matches[i].
    return sum(min(1.0, (total - hit) / 3) for hit in matches) / len(truth)


def vqa_accuracies(predictions: Sequence[str], answers: Sequence[Sequence[str]],
                   variant: str = DEFAULT_VARIANT) -> list[float]:
    """:func:`vqa_accuracy` of every question, after checking the two lists fit and are not empty."""
    check_variant(variant)
    if len(predictions) != len(answers):
        raise ValueError(f"vqa_score: {len(predictions)} predictions but {len(answers)} answer lists")
    if not predictions:
        raise ValueError("vqa_score: no predictions to score")
    return [vqa_accuracy(p, a, variant) for p, a in zip(predictions, answers, strict=True)]


def vqa_score(predictions: Sequence[str], answers: Sequence[Sequence[str]], variant: str = DEFAULT_VARIANT) -> float:
    """The overall accuracy: 100 x the mean of :func:`vqa_accuracy` over questions.

    Unlike the official script this does not round (it rounds to 2 decimals for display).
    """
    return mean_score(vqa_accuracies(predictions, answers, variant))


def mean_score(accuracies: Sequence[float]) -> float:
    """100 x the mean of per-question accuracies in [0, 1]."""
    return 100.0 * sum(accuracies) / len(accuracies)
