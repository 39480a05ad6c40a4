"""Interleaved multi-shot pretraining episodes for the miniature model.

An episode is 0..k demonstrations and a query, all of one *behaviour*: a VQA attribute
(colour, shape, count, size), a caption style, or the default behaviour. Episodes
without demonstrations always use the default behaviour (a noun phrase), so that the
pretrained model, like a real LMM, answers zero-shot in its own format and learns the
task's format from demonstrations. Explicit questions name their attribute and are
answered accordingly in any episode. The held-out attribute (background) and nothing of
the evaluation splits are used here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mimic.data import synthetic as syn


@dataclass(frozen=True)
class Turn:
    scene: syn.Scene
    question: str
    answer: str
    supervised: bool  # is the answer determined by the question or by earlier turns?


@dataclass(frozen=True)
class Episode:
    kind: str  # "vqa" | "caption"
    behaviour: str
    turns: list[Turn]  # demonstrations, then the query last


def sample_episode(rng: random.Random, max_shots: int = 8, vqa_ratio: float = 0.6, explicit_ratio: float = 0.3,
                   zero_shot_ratio: float = 0.25):
    """One episode; a quarter are zero-shot (short, and the densest signal for reading images)."""
    shots = 0 if max_shots == 0 or rng.random() < zero_shot_ratio else rng.randint(1, max_shots)
    kind = "vqa" if rng.random() < vqa_ratio else "caption"
    turns = []
    if kind == "vqa":
        behaviour = "default" if shots == 0 else rng.choice((*syn.PRETRAIN_ATTRIBUTES, "default"))
        for j in range(shots + 1):
            scene = syn.sample_scene(rng)
            explicit = rng.random() < explicit_ratio
            if explicit:
                attribute = behaviour if behaviour != "default" else rng.choice(syn.PRETRAIN_ATTRIBUTES)
                question = rng.choice(syn.EXPLICIT_QUESTIONS[attribute])
                answer = scene.attribute(attribute)
            else:
                question = rng.choice(syn.GENERIC_QUESTIONS)
                answer = syn.default_answer(scene) if behaviour == "default" else scene.attribute(behaviour)
            turns.append(Turn(scene, question, answer, supervised=explicit or j > 0 or shots == 0))
    else:
        behaviour = "default" if shots == 0 else rng.choice(syn.PRETRAIN_CAPTION_STYLES)
        for j in range(shots + 1):
            scene = syn.sample_scene(rng)
            text = syn.caption(scene, behaviour, rng.randrange(9))
            turns.append(Turn(scene, "", text, supervised=j > 0 or shots == 0))
    return Episode(kind, behaviour, turns)
