"""VQA accuracy, exactly as the official VQA evaluation (``vqaEval.py`` of the VQA API).

The MimIC and LIVE reference code score VQAv2 and OK-VQA with that script; this module
reproduces its arithmetic and its answer processing, quirks included:

- **Prediction**: newlines and tabs become spaces, the ends are stripped, then
  :func:`process_punctuation` and :func:`process_digit_article` are applied
  (together: :func:`normalize_answer`).
- **Ground truth**: only :func:`process_punctuation`, and only when the human answers of the
  question are *not* all identical (``len(set(answers)) > 1``). Ground-truth answers are
  never lower-cased, never have number words mapped or articles dropped. The official
  annotation files are already written in normalized form, so this rarely matters, but it
  means e.g. ten identical answers ``"two"`` never match a prediction ``"two"`` (which
  becomes ``"2"``), while ``["two"] * 5 + ["2"] * 5`` does.
- **Accuracy of one question**: for each of the n human answers, leave it out and take
  ``min(1, #matches among the other n - 1 / 3)``; average the n values. The official code
  leaves an answer out by dict identity (answer dicts carry a unique ``answer_id``), which is
  exactly one answer by position, as done here.
- **Punctuation quirks kept on purpose**: ``periodStrip`` is ``(?!<=\\d)(\\.)(?!\\d)``: the
  ``(?!<=`` is a negative *lookahead* for the text ``<=``, not a lookbehind, so a period is
  removed whenever it is not followed by a digit; and ``periodStrip.sub`` receives
  ``re.UNICODE`` (== 32) as its positional ``count``, so at most 32 periods are removed.
  When any punctuation mark from :data:`PUNCT` touches a space, or the text contains a
  digit-comma-digit group, *every* mark is deleted; otherwise marks become spaces.
  Apostrophes and colons are not in the list and are kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

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
    """Everything the official evaluation does to a predicted answer."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Accuracy in [0, 1] of one predicted answer against the human answers of one question.

    With 10 answers of which ``m`` equal the (normalized) prediction the result is
    0, 0.3, 0.6, 0.9 and 1.0 for m = 0, 1, 2, 3 and >= 4.
    """
    if len(answers) == 0:
        raise ValueError("vqa_accuracy needs at least one ground-truth answer")
    pred = normalize_answer(prediction)
    truth = list(answers)
    if len(set(truth)) > 1:
        truth = [process_punctuation(answer) for answer in truth]
    matches = [answer == pred for answer in truth]
    total = sum(matches)
    # Leaving answer i out: the matches among the others are total - matches[i].
    return sum(min(1.0, (total - hit) / 3) for hit in matches) / len(truth)


def vqa_score(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> float:
    """The official overall accuracy: 100 x the mean of :func:`vqa_accuracy` over questions.

    Unlike the official script this does not round (it rounds to 2 decimals for display).
    """
    if len(predictions) != len(answers):
        raise ValueError(f"vqa_score: {len(predictions)} predictions but {len(answers)} answer lists")
    if not predictions:
        raise ValueError("vqa_score: no predictions to score")
    return 100.0 * sum(vqa_accuracy(p, a) for p, a in zip(predictions, answers, strict=True)) / len(predictions)
