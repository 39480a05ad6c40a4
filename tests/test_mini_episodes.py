"""Pretraining episodes: fresh made-up names per episode, and supervision only where the context decides."""

import random

from mimic.data import synthetic as syn
from mimic.tiny.mini.episodes import RECALL_KEYS, sample_episode, sample_text_episode

EPISODES = [sample_episode(random.Random(seed)) for seed in range(400)]


def _names_used(turn, episode) -> dict:
    """(attribute, value) -> made-up name, for the names the turn's answer says."""
    words = set(turn.answer.split())
    out = {}
    for attribute, names in episode.lexicon.items():
        name = names[turn.scene.attribute(attribute)]
        if name in words:
            out[(attribute, turn.scene.attribute(attribute))] = name
    return out


def test_a_made_up_name_is_supervised_only_after_an_earlier_answer_said_it():
    known = unknown = 0
    for episode in EPISODES:
        said: set = set()
        for turn in episode.turns:
            used = _names_used(turn, episode)
            for key, name in used.items():
                assert (name in turn.unknown) == (key not in said), (episode.lexicon, turn)
                known += key in said
                unknown += key not in said
            assert set(turn.unknown) <= set(used.values())  # real words are never held back
            said |= set(used)
    assert known > 50 and unknown > 50, (known, unknown)


def test_text_recall_supervises_a_name_only_after_its_key():
    rng = random.Random(0)
    for _ in range(100):
        episode = sample_text_episode(rng)
        seen = {}
        for turn in episode.turns:
            key, name = turn.answer.split()
            assert turn.scene is None and key in RECALL_KEYS and name in syn.NONCE_WORDS
            assert seen.get(key, name) == name  # one name per key within the episode
            assert turn.unknown == ((key,) if key in seen else (key, name))
            seen[key] = name
        assert len(set(seen.values())) == len(seen)
    assert not set(RECALL_KEYS) & set(syn.BACKGROUNDS)  # the held-out attribute stays unseen


def test_names_are_fresh_per_episode_and_never_touch_the_held_out_attribute():
    lexicons = [e.lexicon for e in EPISODES if e.lexicon]
    assert 0.3 < len(lexicons) / len(EPISODES) < 0.6  # half of the 75% multi-shot episodes
    assert all("background" not in lex for lex in lexicons)
    colour_names = [tuple(sorted(lex["color"].items())) for lex in lexicons if "color" in lex]
    assert len(colour_names) > 10 and len(set(colour_names)) == len(colour_names)
    # zero-shot episodes keep the default behaviour and the real words
    zero = [e for e in EPISODES if len(e.turns) == 1]
    assert zero and all(not e.lexicon and e.behaviour == "default" for e in zero)
    assert all(e.turns[0].supervised for e in zero)


def test_answers_follow_the_episode_lexicon():
    for episode in EPISODES:
        if episode.kind != "vqa" or episode.behaviour == "default":
            continue
        for turn in episode.turns:
            if turn.question in syn.GENERIC_QUESTIONS:
                assert turn.answer == syn.word(turn.scene, episode.behaviour, episode.lexicon)
