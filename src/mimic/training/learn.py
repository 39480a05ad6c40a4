"""Train a method on your own examples, without the pipeline: :func:`train` (``mimic.train``).

    examples = [{"image": pil_image, "question": "What is on the table?", "answer": "a cup"}, ...]
    shift = mimic.train(model, processor, examples, MimicConfig(), shots=8, epochs=5)
    mimic.save_pretrained(model, "my-shift")

The examples become a task table, each example gets ``draws`` seeded lists of ``shots``
demonstrations from ``support`` (default: the other examples; never the example itself nor
its image), and the pipeline's training loop (:func:`mimic.training.loop.train`) runs with the
online teacher: the frozen model, shift switched off, prompted with the demonstrations. The
defaults are the paper's (AdamW, lr 5e-3, cosine with 10% warmup, weight decay 1e-3,
``align_weight`` 1 on the MLP outputs, ``ce_weight`` 0.5).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence

import pandas as pd
from PIL import Image
from torch import nn

from mimic.data.batches import TaskData
from mimic.data.icd import sample_icds
from mimic.data.schema import COLUMNS, KINDS, encode_png, image_record
from mimic.models.hidden_states import RECORD_TARGETS
from mimic.models.loading import wrap_model
from mimic.shift.config import MimicConfig
from mimic.training.loop import DEFAULT_LOGITS_TOPK, LOSS_WEIGHTS, TRAIN_DEFAULTS
from mimic.training.loop import train as train_loop

log = logging.getLogger("mimic.training.learn")

PAPER_HP = {"epochs": 5, "lr": 5e-3, "warmup_ratio": 0.1, "weight_decay": 1e-3, "batch_size": 2, "grad_accum": 1,
            "align_weight": 1.0, "ce_weight": 0.5, "seed": 0}
TEACHERS = ("online",)


def _image(value, where: str) -> dict:
    if isinstance(value, Image.Image):
        return image_record(encode_png(value.convert("RGB")))
    if isinstance(value, (bytes, bytearray)):
        Image.open(io.BytesIO(value)).verify()  # a clear error now, not mid-training
        return image_record(bytes(value))
    if isinstance(value, (str, os.PathLike)):
        if not os.path.isfile(value):
            raise FileNotFoundError(f"{where}: image file {value} is missing")
        return image_record(path=os.fspath(value))
    raise TypeError(f"{where}: 'image' must be a PIL image, encoded bytes or a file path, not {type(value).__name__}")


def examples_table(examples: Sequence[dict], kind: str, name: str = "examples") -> pd.DataFrame:
    """A task table (:data:`mimic.data.schema.COLUMNS`) from dicts with ``image``, ``question`` (VQA) and
    ``answer`` (a string) or ``answers`` (strings: the first is the training target)."""
    rows = []
    for i, example in enumerate(examples):
        where = f"{name}[{i}]"
        if not isinstance(example, dict) or "image" not in example:
            raise ValueError(f"{where}: an example is a dict with 'image', 'question' (VQA) and 'answer' or 'answers'")
        answers = example.get("answers", [example["answer"]] if "answer" in example else None)
        if not answers or not all(isinstance(a, str) and a for a in answers):
            raise ValueError(f"{where}: needs 'answer' (a string) or 'answers' (a list of strings)")
        question = example.get("question", "")
        if kind != "caption" and not question:  # yes-no and multiple-choice are asked as VQA questions
            raise ValueError(f"{where}: a {'VQA' if kind == 'vqa' else kind} example needs a 'question'")
        rows.append({"id": str(example.get("id", f"{name}-{i}")), "image": _image(example["image"], where),
                     "question": question, "answers": list(answers)})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    if table["id"].duplicated().any():
        raise ValueError(f"{name}: ids must be unique; repeated: {sorted(set(table['id'][table['id'].duplicated()]))}")
    return table


def train(model: nn.Module, processor, examples: Sequence[dict], method=None, *, kind: str = "vqa",
          support: Sequence[dict] | None = None, shots: int = 8, draws: int | None = None,
          teacher: str = "online", target: str = "mlp", prompt: str = "clean", **hp) -> nn.Module:
    """Train ``method`` (a method config; default ``MimicConfig()``) on ``examples``; returns its module, attached.

    model, processor: a transformers model of a supported family (``attn_implementation="sdpa"``)
        and its processor (a tokenizer for a text-only model).
    kind: ``vqa`` (prompts "Question: ... Short answer: ..."), ``caption``, or ``yes-no`` / ``multiple-choice``
        (MME, SEED-Bench: asked as VQA questions, the answer or the right option's text as the answer).
    support: the demonstration pool (default: ``examples``); shots: demonstrations per teacher prompt;
        draws: demonstration lists per example (default: one per epoch; epoch ``e`` uses ``e mod draws``).
    teacher: ``online`` (the pipeline caches the teacher instead: ``mimic extract-teacher``).
    target: what the alignment loss compares, per layer: ``mlp`` (the paper), ``layer`` or ``attn``.
    hp: training settings over :data:`PAPER_HP` (epochs, lr, warmup_ratio, weight_decay, batch_size,
        grad_accum, align_weight, ce_weight, seed), :data:`mimic.training.loop.TRAIN_DEFAULTS` and ``kl_weight``.
    Every input is checked before the model runs; a bad one is one line naming it.
    """
    if kind not in KINDS:
        raise ValueError(f"kind = {kind!r}; valid: {list(KINDS)}")
    if teacher not in TEACHERS:
        raise ValueError(f"teacher = {teacher!r}; valid: {list(TEACHERS)} (the pipeline caches the teacher)")
    if target not in RECORD_TARGETS:
        raise ValueError(f"target = {target!r}; valid: {list(RECORD_TARGETS)}")
    optional = sorted({*TRAIN_DEFAULTS, *LOSS_WEIGHTS.values()} - set(PAPER_HP))  # what the loop reads beyond them
    unknown = sorted(set(hp) - set(PAPER_HP) - set(optional))
    if unknown:
        raise ValueError(f"unknown training settings {unknown}; valid: {sorted(PAPER_HP)} and {', '.join(optional)}")
    hp = {**PAPER_HP, **hp}
    train_table = examples_table(examples, kind)
    support_table = train_table if support is None else examples_table(support, kind, "support")
    if len(support_table) <= shots and support is None:
        raise ValueError(f"shots = {shots} needs more than {shots} examples (an example never demonstrates itself); "
                         f"got {len(support_table)}")
    draws = hp["epochs"] if draws is None else draws
    empty = train_table.iloc[:0]
    icd = sample_icds("examples", train_table, support_table, empty, shots, draws, hp["seed"])
    data = TaskData(kind, {"train": train_table, "support": support_table, "eval": empty})
    loaded = wrap_model(model, processor, prompt=prompt)
    config = method if method is not None else MimicConfig()
    module, rows, summary = train_loop(loaded, data, icd, config, hp, target, None, DEFAULT_LOGITS_TOPK, shots=shots)
    if rows:
        log.info("loss %.5f -> %.5f over %d steps", rows[0]["loss"], rows[-1]["loss"], summary["steps"])
    return module
