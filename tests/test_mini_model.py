"""The shipped miniature model: loads through from_pretrained, checksum matches, ICL really works."""

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor, Idefics2ForConditionalGeneration

from mimic.data import synthetic as syn
from mimic.metrics.vqa import vqa_score
from mimic.models.adapters import ADAPTERS
from mimic.models.generation import encode_prompts, generate
from mimic.models.loading import load_model
from mimic.models.prompts import PromptFormat, build_prompt
from mimic.tiny.mini.build import IMAGE_SEQ_LEN, build_processor, build_tokenizer
from mimic.tiny.mini.collate import EpisodeCollator
from mimic.tiny.mini.episodes import sample_episode
from mimic.tiny.mini.pretrain import WEIGHTS, sha256

MODEL = Path(__file__).resolve().parents[1] / "models" / "mini-idefics2"


def test_shipped_weights_load_and_match_their_checksum():
    record = json.loads((MODEL / "pretrain.json").read_text())
    assert sha256(MODEL / WEIGHTS) == record["sha256"][WEIGHTS]
    assert (MODEL / WEIGHTS).stat().st_size <= 20 * 2**20
    model = Idefics2ForConditionalGeneration.from_pretrained(MODEL)
    processor = AutoProcessor.from_pretrained(MODEL)
    assert type(processor).__name__ == "Idefics2Processor" and processor.image_seq_len == IMAGE_SEQ_LEN
    assert model.config.text_config.num_key_value_heads < model.config.text_config.num_attention_heads  # GQA


@pytest.fixture(scope="module")
def mini():
    torch.manual_seed(0)
    return load_model("mini", str(MODEL))


def test_icl_looks_made_up_names_up_in_its_demonstrations(mini):
    """Held-out scenes and a fresh colour naming: the curve rises with shots, and a query is answered
    when (and only when) one of its demonstrations shows its colour."""
    rng = random.Random(2024)  # a stream that neither pretraining nor the task splits use
    lexicon = syn.draw_lexicon(rng, ["color"])

    def example():
        scene = syn.sample_scene(rng)
        ex = syn.vqa_example("x", scene, "color", rng, explicit_ratio=0.3, lexicon=lexicon)
        return syn.render(scene), ex.question, ex.answers, scene.color

    n = 32
    queries = [example() for _ in range(n)]
    demos = [[example() for _ in range(8)] for _ in range(n)]
    prompts = [(i, q) for i, q, _, _ in queries]
    answers = [a for _, _, a, _ in queries]

    def run(k):
        shown = [[(img, q, a[0]) for img, q, a, _ in row[:k]] for row in demos] if k else None
        return generate(mini, encode_prompts(mini, "vqa", prompts, demos=shown), 10)

    scores = {k: vqa_score(run(k), answers) for k in (0, 1, 8)}
    assert scores[0] <= 40 and scores[8] >= scores[1] + 15, scores
    eight = run(8)
    covered = [any(c == query[3] for *_, c in row) for query, row in zip(queries, demos, strict=True)]
    hits = [vqa_score([p], [a]) for p, a in zip(eight, answers, strict=True)]
    on_covered = sum(h for h, c in zip(hits, covered, strict=True) if c) / sum(covered)
    on_missed = sum(h for h, c in zip(hits, covered, strict=True) if not c) / max(1, n - sum(covered))
    assert on_covered >= 80 and on_missed <= 20, (on_covered, on_missed, sum(covered))


def test_pretraining_batches_equal_what_the_processor_makes():
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    rng = random.Random(0)
    episodes = [sample_episode(rng) for _ in range(4)]
    batch = EpisodeCollator(tokenizer, IMAGE_SEQ_LEN)(episodes)
    prompts = []
    for e in episodes:
        demos = [(syn.render(t.scene), t.question, t.answer) for t in e.turns[:-1]]
        q = e.turns[-1]
        prompts.append(build_prompt(e.kind, demos, (syn.render(q.scene), q.question), PromptFormat(), answer=q.answer))
    encoded = ADAPTERS["idefics2"].encode(processor, prompts)
    for key in ("input_ids", "attention_mask", "pixel_values", "pixel_attention_mask"):
        assert torch.equal(encoded[key], batch[key]), key
    supervised = batch["labels"] != -100
    assert supervised.any() and torch.equal(batch["labels"][supervised], batch["input_ids"][supervised])
