"""Interleaved multi-shot pretraining episodes for the miniature model.

An episode is 0..k demonstrations and a query, all of one *behaviour*: a VQA attribute
(colour, shape, count, size), a caption style, or the default behaviour (a noun phrase),
and one *lexicon*: in a share of the episodes (``nonce_ratio``) some attribute values are
named by made-up words, a mapping drawn afresh for every episode. So the model cannot
memorise any made-up name; it learns to look a name up in its context, in a demonstration
whose image shows the same value. Episodes without demonstrations always use the default
behaviour and the real words, so that the pretrained model, like a real LMM, answers
zero-shot in its own format and learns the task's format and names from demonstrations.
Explicit questions name their attribute and are answered with the episode's word for it.

A made-up name follows the real word (``red dax``), so the model can say the value it sees
and then look its name up after the same word earlier in its context. A turn's answer is
supervised only where the context determines it: the behaviour has been shown (a
demonstration came before, or the question is explicit, or the episode is zero-shot), and a
made-up name only if an earlier answer named the same value (``Turn.unknown`` lists the others).
``reuse`` is the chance that a demonstration or the query repeats the named values of an
earlier turn, so that lookups occur often. The held-out attribute (background) is never
asked nor renamed here, and nothing of the evaluation splits is used.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mimic.data import synthetic as syn


@dataclass(frozen=True)
class Turn:
    scene: syn.Scene | None  # None: a text-only turn (no image)
    question: str
    answer: str
    supervised: bool  # is the answer determined by the question or by earlier turns?
    unknown: tuple[str, ...] = ()  # words of the answer the context cannot determine (never supervised)


@dataclass(frozen=True)
class Episode:
    kind: str  # "vqa" | "caption" | "text" (plain words: no image, no question, no separator)
    behaviour: str
    turns: list[Turn]  # demonstrations, then the query last
    lexicon: syn.Lexicon  # the episode's made-up names ({} when it uses the real words)


def _names(scene: syn.Scene, attributes, lexicon: syn.Lexicon) -> dict[tuple[str, str], str]:
    """(attribute, value) -> made-up name, for the renamed attributes an answer mentions."""
    return {(a, scene.attribute(a)): syn.name_of(scene, a, lexicon) for a in attributes if a in lexicon}


def _scene(rng: random.Random, earlier: list[syn.Scene], lexicon: syn.Lexicon, reuse: float) -> syn.Scene:
    if lexicon and earlier and rng.random() < reuse:
        model = rng.choice(earlier)
        return syn.sample_scene(rng, **{a: model.attribute(a) for a in lexicon})
    return syn.sample_scene(rng)


def sample_episode(rng: random.Random, max_shots: int = 8, vqa_ratio: float = 0.6, explicit_ratio: float = 0.3,
                   zero_shot_ratio: float = 0.25, nonce_ratio: float = 0.5, reuse: float = 0.5) -> Episode:
    """One episode; a quarter are zero-shot (short, and the densest signal for reading images)."""
    shots = 0 if max_shots == 0 or rng.random() < zero_shot_ratio else rng.randint(1, max_shots)
    kind = "vqa" if rng.random() < vqa_ratio else "caption"
    nonce = shots > 0 and rng.random() < nonce_ratio
    if kind == "vqa":
        behaviour = "default" if shots == 0 else rng.choice((*syn.PRETRAIN_ATTRIBUTES, "default"))
        if not nonce:
            renamed = []
        elif behaviour == "default":
            renamed = rng.sample(syn.PRETRAIN_ATTRIBUTES, rng.randint(1, 2))
        else:
            renamed = [behaviour]
    else:
        behaviour = "default" if shots == 0 else rng.choice(syn.PRETRAIN_CAPTION_STYLES)
        candidates = [a for a in syn.CAPTION_ATTRIBUTES[behaviour] if a in syn.PRETRAIN_ATTRIBUTES]
        renamed = rng.sample(candidates, rng.randint(1, 2)) if nonce else []
    lexicon = syn.draw_lexicon(rng, renamed)
    turns: list[Turn] = []
    seen: set[tuple[str, str]] = set()
    scenes: list[syn.Scene] = []
    for j in range(shots + 1):
        scene = _scene(rng, scenes, lexicon, reuse)
        scenes.append(scene)
        if kind == "vqa":
            explicit = rng.random() < explicit_ratio
            if explicit:
                attribute = behaviour if behaviour != "default" else rng.choice(syn.PRETRAIN_ATTRIBUTES)
                question = rng.choice(syn.EXPLICIT_QUESTIONS[attribute])
                answer, mentioned = syn.word(scene, attribute, lexicon), [attribute]
            else:
                question = rng.choice(syn.GENERIC_QUESTIONS)
                if behaviour == "default":
                    answer, mentioned = syn.default_answer(scene, lexicon), syn.CAPTION_ATTRIBUTES["default"]
                else:
                    answer, mentioned = syn.word(scene, behaviour, lexicon), [behaviour]
            shown = explicit or j > 0 or shots == 0
        else:
            question = ""
            answer = syn.caption(scene, behaviour, rng.randrange(9), lexicon)
            mentioned = syn.CAPTION_ATTRIBUTES[behaviour]
            shown = j > 0 or shots == 0
        names = _names(scene, mentioned, lexicon)
        unknown = tuple(name for key, name in names.items() if key not in seen)
        turns.append(Turn(scene, question, answer, supervised=shown, unknown=unknown))
        seen |= set(names)
    return Episode(kind, behaviour, turns, lexicon)


# Keys of the text-only recall episodes: attribute words, but never the held-out background colours.
RECALL_KEYS = (*syn.COLORS, *syn.SHAPES, *syn.SIZES, *syn.NUMBER_WORDS.values())
RECALL_WORDS = (*RECALL_KEYS, *syn.NONCE_WORDS)


def sample_text_episode(rng: random.Random, max_shots: int = 8, reuse: float = 0.5) -> Episode:
    """A text-only recall episode, the "language" pretraining of the decoder: turns in the VQA format
    answering ``key name`` with a fresh key -> made-up-name mapping, so a name is predictable only
    when its key occurred earlier (the decoder learns to find a key in its context and copy what
    followed it). The key itself is never supervised: without an image nothing determines it."""
    n = rng.randint(2, max(2, max_shots + 1))
    keys: list[str] = []
    for _ in range(n):
        keys.append(rng.choice(keys) if keys and rng.random() < reuse else rng.choice(RECALL_KEYS))
    names = dict(zip(dict.fromkeys(keys), rng.sample(syn.NONCE_WORDS, len(set(keys))), strict=True))
    turns = []
    for j, key in enumerate(keys):
        unknown = (key,) if key in keys[:j] else (key, names[key])
        turns.append(Turn(None, rng.choice(syn.GENERIC_QUESTIONS), f"{key} {names[key]}", True, unknown))
    return Episode("vqa", "recall", turns, {})


def sample_repeat_episode(rng: random.Random, min_len: int = 6, max_len: int = 20) -> Episode:
    """Plain text: a random run of distinct words, then the same run again; only the repeat is
    supervised (but its first word, which nothing announces). Its length varies, so no fixed
    offset solves it: the decoder must find the earlier occurrence of the current word and copy
    its successor (an induction head), the circuit that looks names up in demonstrations."""
    words = rng.sample(RECALL_WORDS, rng.randint(min_len, max_len))
    run = " ".join(words)
    return Episode("text", "repeat", [Turn(None, "", run, False), Turn(None, "", run, True, (words[0],))], {})
