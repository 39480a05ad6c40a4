"""OK-VQA answer stemming, applied to a prediction before it is scored against OK-VQA's answers.

The OK-VQA v1.1 procedure, as OpenFlamingo and the MimIC reference code use it (Kamichanw/MimIC,
``testbed/data/ok_vqa/__init__.py``: ``_MANUAL_MATCHES``, ``OKVQAStemmer.stem``): nltk's
``word_tokenize`` and ``pos_tag``, then each token is mapped by :data:`MANUAL_MATCHES` if listed there,
else lemmatized as a verb by WordNet if it ends in ``ing``, else singularized by ``inflection`` if
tagged ``NNS``/``NNPS``; the tokens are joined by single spaces. Needs the ``okvqa`` extra
(``pip install 'mimic-icl[okvqa]'``: nltk, inflection) and the nltk data packages ``punkt_tab``,
``averaged_perceptron_tagger_eng`` and ``wordnet``, downloaded on first use when missing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from functools import lru_cache

from mimic.errors import MissingToolError

# Words OK-VQA's own stemming maps by hand (copied as data from the reference's ``_MANUAL_MATCHES``, in its order).
MANUAL_MATCHES: dict[str, str] = {
    "police": "police", "las": "las", "vegas": "vegas", "yes": "yes", "jeans": "jean", "hell's": "hell",
    "domino's": "domino", "morning": "morn", "clothes": "cloth", "are": "are", "riding": "ride", "leaves": "leaf",
    "dangerous": "danger", "clothing": "cloth", "texting": "text", "kiting": "kite", "firefighters": "firefight",
    "ties": "tie", "married": "married", "teething": "teeth", "gloves": "glove", "tennis": "tennis",
    "dining": "dine", "directions": "direct", "waves": "wave", "christmas": "christmas", "drives": "drive",
    "pudding": "pud", "coding": "code", "plating": "plate", "quantas": "quanta", "hornes": "horn",
    "graves": "grave", "mating": "mate", "paned": "pane", "alertness": "alert", "sunbathing": "sunbath",
    "tenning": "ten", "wetness": "wet", "urinating": "urine", "sickness": "sick", "braves": "brave",
    "firefighting": "firefight", "lenses": "lens", "reflections": "reflect", "backpackers": "backpack",
    "eatting": "eat", "designers": "design", "curiousity": "curious", "playfulness": "play", "blindness": "blind",
    "hawke": "hawk", "tomatoe": "tomato", "rodeoing": "rodeo", "brightness": "bright", "circuses": "circus",
    "skateboarders": "skateboard", "staring": "stare", "electronics": "electron", "electicity": "elect",
    "mountainous": "mountain", "socializing": "social", "hamburgers": "hamburg", "caves": "cave",
    "transitions": "transit", "wading": "wade", "creame": "cream", "toileting": "toilet", "sautee": "saute",
    "buildings": "build", "belongings": "belong", "stockings": "stock", "walle": "wall", "cumulis": "cumuli",
    "travelers": "travel", "conducter": "conduct", "browsing": "brows", "pooping": "poop", "haircutting": "haircut",
    "toppings": "top", "hearding": "heard", "sunblocker": "sunblock", "bases": "base", "markings": "mark",
    "mopeds": "mope", "kindergartener": "kindergarten", "pies": "pie", "scrapbooking": "scrapbook",
    "couponing": "coupon", "meetings": "meet", "elevators": "elev", "lowes": "low", "men's": "men",
    "childrens": "children", "shelves": "shelve", "paintings": "paint", "raines": "rain", "paring": "pare",
    "expressions": "express", "routes": "rout", "pease": "peas", "vastness": "vast", "awning": "awn",
    "boy's": "boy", "drunkenness": "drunken", "teasing": "teas", "conferences": "confer", "ripeness": "ripe",
    "suspenders": "suspend", "earnings": "earn", "reporters": "report", "kid's": "kid", "containers": "contain",
    "corgie": "corgi", "porche": "porch", "microwaves": "microwave", "batter's": "batter", "sadness": "sad",
    "apartments": "apart", "oxygenize": "oxygen", "striping": "stripe", "purring": "pure",
    "professionals": "profession", "piping": "pipe", "farmer's": "farmer", "potatoe": "potato", "emirates": "emir",
    "womens": "women", "veteran's": "veteran", "wilderness": "wilder", "propellers": "propel", "alpes": "alp",
    "charioteering": "chariot", "swining": "swine", "illness": "ill", "crepte": "crept", "adhesives": "adhesive",
    "regent's": "regent", "decorations": "decor", "rabbies": "rabbi", "overseas": "oversea", "travellers": "travel",
    "casings": "case", "smugness": "smug", "doves": "dove", "nationals": "nation", "mustange": "mustang",
    "ringe": "ring", "gondoliere": "gondolier", "vacationing": "vacate", "reminders": "remind", "baldness": "bald",
    "settings": "set", "glaced": "glace", "coniferous": "conifer", "revelations": "revel", "personals": "person",
    "daughter's": "daughter", "badness": "bad", "projections": "project", "polarizing": "polar",
    "vandalizers": "vandal", "minerals": "miner", "protesters": "protest", "controllers": "control",
    "weddings": "wed", "sometimes": "sometime", "earing": "ear",
}

NLTK_DATA = {  # nltk data package -> the resource nltk.data.find looks up
    "punkt_tab": "tokenizers/punkt_tab",
    "averaged_perceptron_tagger_eng": "taggers/averaged_perceptron_tagger_eng",
    "wordnet": "corpora/wordnet",
}
INSTALL_DATA = "python -m nltk.downloader " + " ".join(NLTK_DATA)
INSTALL_EXTRA = "pip install 'mimic-icl[okvqa]'"
VERB = "v"  # WordNet's part-of-speech code for verbs (nltk.corpus.reader.VERB)
PLURAL_NOUN_TAGS = ("NNS", "NNPS")


def _require(module: str):
    """Import ``module`` of the ``okvqa`` extra, or fail in one line naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingToolError(f"OK-VQA answer stemming needs the Python package {module!r}, which is not installed; "
                         f"install the okvqa extra: {INSTALL_EXTRA}") from exc


def _require_nltk_data(nltk) -> None:
    """Download each missing nltk data package once, or fail in one line naming it and the install command."""
    for package, resource in NLTK_DATA.items():
        try:
            nltk.data.find(resource)
            continue
        except LookupError:
            pass
        try:
            downloaded = nltk.download(package, quiet=True)
        except Exception:  # offline, refused, disk full: the fix is the same
            downloaded = False
        if downloaded:
            try:
                nltk.data.find(resource)
                continue
            except LookupError:
                pass
        raise MissingToolError(f"OK-VQA answer stemming needs the nltk data package {package!r}, which is missing and "
                         f"could not be downloaded; install it with: {INSTALL_DATA}")


Tokenize = Callable[[str], list[str]]
Tag = Callable[[list[str]], list[tuple[str, str]]]
Lemmatize = Callable[[str, str], str]  # (word, WordNet part of speech) -> lemma


@lru_cache(maxsize=1)
def _nlp() -> tuple[Tokenize, Tag, Lemmatize]:
    """nltk's ``(word_tokenize, pos_tag, WordNetLemmatizer().lemmatize)``, with their data in place."""
    nltk = _require("nltk")
    _require_nltk_data(nltk)
    from nltk.stem import WordNetLemmatizer

    return nltk.word_tokenize, nltk.pos_tag, WordNetLemmatizer().lemmatize


def stem_all(texts: Iterable[str]) -> list[str]:
    """:func:`stem` of each text, in order."""
    singularize = _require("inflection").singularize
    tokenize, tag, lemmatize = _nlp()
    stemmed = []
    for text in texts:
        words = []
        for word, pos in tag(tokenize(text)):
            if word in MANUAL_MATCHES:
                word = MANUAL_MATCHES[word]
            elif word.endswith("ing"):
                word = lemmatize(word, VERB)
            elif pos.startswith(PLURAL_NOUN_TAGS):
                word = singularize(word)
            words.append(word)
        stemmed.append(" ".join(words))
    return stemmed


def stem(text: str) -> str:
    """``text`` stemmed as OK-VQA v1.1 stems answers: tokens mapped by the rules above, joined by single spaces."""
    return stem_all([text])[0]


def check_ready() -> None:
    """Fail now, in one line, if stemming cannot run (the extra or the nltk data missing): before a model loads."""
    _require("inflection")
    _nlp()
