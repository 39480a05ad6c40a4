"""Teacher and student batches of one task: ICL prompts with answers, zero-shot prompts with answers.

The teacher sees ``demonstrations + query + answer``; the student sees ``query + answer``.
Their *query-and-answer positions* are the common suffix of the two token sequences (the
query's image tokens, its question and its answer, up to the BOS), right-aligned under
left padding. Both are built here so that extraction, training and the online teacher
agree on them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from mimic.data.schema import open_image
from mimic.models.generation import encode_prompts

ANSWER_RULES = ("most_common", "first")


def target_answer(answers: Sequence[str], rule: str = "most_common") -> str:
    """The one human answer a VQA demonstration shows and training teacher-forces.

    ``most_common``: the answer most annotators gave, ties going to the one given first (the reference
    code takes the most common too, ``max(set(answers), key=answers.count)``, whose ties follow Python's
    string hashing and change from run to run); ``first``: the first annotator's.
    """
    if rule not in ANSWER_RULES:
        raise ValueError(f"icd.answer = {rule!r}; valid: {list(ANSWER_RULES)}")
    answers = list(answers)
    if rule == "first":
        return answers[0]
    counts = Counter(answers)
    top = max(counts.values())
    return next(a for a in answers if counts[a] == top)


@dataclass
class TaskData:
    """A prepared task's tables; ``answer`` (:data:`ANSWER_RULES`, ``icd.answer``) picks a demonstration's
    answer among the human answers, ``target_answer`` (``icd.target_answer``, default ``answer``) a training
    query's teacher-forced one (captions: the first reference for both)."""

    kind: str
    tables: dict[str, pd.DataFrame]  # split -> normalized table
    image_root: str | None = None
    answer: str = "most_common"
    target_answer: str | None = None

    def __post_init__(self):
        self.by_id = {split: df.set_index("id", drop=False) for split, df in self.tables.items()}

    def query(self, split: str, qid: str):
        row = self.by_id[split].loc[qid]
        return open_image(row["image"], self.image_root), row["question"]

    def _answer(self, answers, rule: str | None = None) -> str:
        return target_answer(answers, rule or self.answer) if self.kind == "vqa" else answers[0]

    def target(self, split: str, qid: str) -> str:
        """The teacher-forced answer: the VQA target (``target_answer``, else ``answer``) or the first caption."""
        return self._answer(self.by_id[split].loc[qid]["answers"], self.target_answer)

    def demo(self, sid: str):
        """A demonstration: a support record, or under ``icd.sampler: reference`` a training query (its pool)."""
        support = self.by_id["support"]
        row = support.loc[sid] if sid in support.index else self.by_id["train"].loc[sid]
        return open_image(row["image"], self.image_root), row["question"], self._answer(row["answers"])


def _unpadded(inputs: dict, i: int) -> list[int]:
    mask = inputs["attention_mask"][i].bool()
    return inputs["input_ids"][i][mask].tolist()


def common_suffix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


CE_TOKENS = ("answer", "prompt")


def student_batch(loaded, data: TaskData, split: str, qids: list[str],
                  ce_tokens: str = "answer") -> tuple[dict, torch.Tensor, list[int]]:
    """Zero-shot inputs with answers, CE labels, and per-row answer lengths.

    ``ce_tokens``: ``answer`` labels the answer tokens (and its stop token); ``prompt`` labels every
    real token after the first (image tokens, question and answer), as the MimIC reference code
    trains (it passes ``labels=input_ids``; unlike it, padding is never labelled here).
    """
    if ce_tokens not in CE_TOKENS:
        raise ValueError(f"ce_tokens = {ce_tokens!r}; valid: {list(CE_TOKENS)}")
    queries = [data.query(split, q) for q in qids]
    answers = [data.target(split, q) for q in qids]
    with_answer = encode_prompts(loaded, data.kind, queries, answers=answers, role="student")
    without = encode_prompts(loaded, data.kind, queries, role="student")
    answer_lengths = (with_answer["attention_mask"].sum(1) - without["attention_mask"].sum(1)).tolist()
    labels = torch.full_like(with_answer["input_ids"], -100)
    for i, n in enumerate(answer_lengths):
        if ce_tokens == "prompt":
            n = int(with_answer["attention_mask"][i].sum()) - 1
        labels[i, -n:] = with_answer["input_ids"][i, -n:]
    return with_answer, labels, answer_lengths


def teacher_batch(loaded, data: TaskData, split: str, qids: list[str], demo_ids: list[list[str]]) -> dict:
    queries = [data.query(split, q) for q in qids]
    answers = [data.target(split, q) for q in qids]
    demos = [[data.demo(s) for s in ids] for ids in demo_ids]
    return encode_prompts(loaded, data.kind, queries, demos=demos, answers=answers, role="teacher")


def instruction_tokens(loaded, kind: str, role: str = "student") -> list[int]:
    """The tokens of the instruction line a zero-shot prompt of ``kind`` in ``role`` starts with ([] if none).

    A zero-shot prompt with an instruction (the ``reference`` preset's VQA evaluation) starts with a line
    that the ICL prompt writes before its demonstrations, not right before the query: it is not part of
    the query-and-answer positions.
    """
    line = loaded.prompt_format.instruction(kind, role)
    if not line:
        return []
    encoded = loaded.adapter.encode(loaded.processor, [[line]])  # as the processor writes a prompt's start
    ids = _unpadded(encoded, 0)
    bos = loaded.tokenizer.bos_token_id
    return ids[1:] if bos is not None and ids[:1] == [bos] else ids


WORD_START_MARKERS = "\u2581\u0120 "  # sentencepiece's "▁", byte-level BPE's "Ġ", a plain space


def _marker_only_difference(tokenizer, teacher_token: int, student_token: int) -> bool:
    """The student's token is the teacher's word with a word-start marker (``▁Image`` / ``Image``), or the
    marker alone (``▁`` before ``Image``, where the vocabulary has no ``▁Image``)."""
    if tokenizer is None:
        return False
    teacher, student = tokenizer.convert_ids_to_tokens([teacher_token, student_token])
    bare = student.lstrip(WORD_START_MARKERS)
    return bool(student) and (bare == "" or bare == teacher.lstrip(WORD_START_MARKERS))


def aligned_lengths(teacher_inputs: dict, student_inputs: dict, bos_token_id: int | None = None,
                    prefix: list[int] | None = None, tokenizer=None) -> list[int]:
    """Per row, how many trailing positions the teacher and the student share (query + answer).

    The shared tokens are the common suffix of the two unpadded rows. The student's first
    token is left out when it is the BOS (``bos_token_id``): it begins the whole prompt,
    not the query; so is the ``prefix`` (:func:`instruction_tokens`) that follows it.
    Families without a BOS (Qwen2) align their whole zero-shot prompt. With ``tokenizer``, the
    student's first query token may differ from the teacher's by a word-start marker alone (then
    the rest is aligned): a word at the very start of the text is tokenized with the marker (as
    ``▁Image``, or ``▁`` then ``Image``), after the previous demonstration's line break without
    (sentencepiece, e.g. Idefics2's ``Image:`` in a ``reference`` prompt without an instruction).
    Anything else shorter means the query was tokenized differently after the demonstrations (a
    merge across the boundary) and is an error, never a silent misalignment.
    """
    prefix = prefix or []
    out = []
    for i in range(teacher_inputs["input_ids"].shape[0]):
        t, s = _unpadded(teacher_inputs, i), _unpadded(student_inputs, i)
        n = common_suffix(t, s)
        starts_with_bos = bos_token_id is not None and bool(s) and s[0] == bos_token_id
        start = int(starts_with_bos)
        if prefix and s[start : start + len(prefix)] != prefix:
            raise ValueError(f"row {i}: the zero-shot prompt does not start with its instruction's own tokens (a "
                             "merge across the end of the instruction line)")
        query = len(s) - start - len(prefix)
        if n == query - 1 and query > 1 and len(t) > n and _marker_only_difference(tokenizer, t[-n - 1], s[-n - 1]):
            query = n  # only the first word's marker differs: align the rest
        if n < query:
            raise ValueError(
                f"row {i}: the query tokens differ between the ICL and the zero-shot prompt (common suffix {n} of "
                f"{query} query tokens); the processor tokenizes the query differently after demonstrations"
            )
        out.append(query)
    return out


@dataclass
class Layout:
    """Where the parts of each row of a left-padded batch lie: per row, the number of tokens of
    ``[padding][BOS][instruction][demonstrations][query][answer]``, in that order; ``ids`` the batch's
    ``input_ids`` and ``kind`` the task kind. For methods whose computation depends on a token's part
    (STAVE's groups); :func:`prompt_layout` builds it."""

    kind: str
    ids: torch.Tensor
    padding: list[int]
    bos: list[int]
    instruction: list[int]
    demonstrations: list[int]
    query: list[int]
    answer: list[int]

    def row(self, i: int) -> dict[str, int]:
        return {part: getattr(self, part)[i] for part in
                ("padding", "bos", "instruction", "demonstrations", "query", "answer")}


def prompt_layout(loaded, kind: str, inputs: dict, answer_lengths: list[int], query_answer: list[int] | None = None,
                  role: str = "student") -> Layout:
    """The :class:`Layout` of a batch of prompts with answers (``answer_lengths`` tokens each, the separator
    included): a zero-shot batch (``query_answer`` None: every token after the BOS and the ``role``'s
    instruction is the query's or the answer's) or an ICL batch, whose query-and-answer tokens are
    ``query_answer`` (:func:`aligned_lengths`) and whose demonstrations lie between its instruction and them."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    instruction = instruction_tokens(loaded, kind, role)
    bos_id = loaded.tokenizer.bos_token_id
    parts: dict[str, list[int]] = {k: [] for k in ("padding", "bos", "instruction", "demonstrations", "query")}
    for i in range(ids.shape[0]):
        row = _unpadded(inputs, i)
        bos = int(bos_id is not None and bool(row) and row[0] == bos_id)
        if instruction and row[bos : bos + len(instruction)] != instruction:
            raise ValueError(f"row {i}: the prompt does not start with its instruction's own tokens (a merge across "
                             "the end of the instruction line)")
        qa = len(row) - bos - len(instruction) if query_answer is None else query_answer[i]
        demos = len(row) - bos - len(instruction) - qa
        if demos < 0 or qa <= answer_lengths[i]:
            raise ValueError(f"row {i}: {qa} query-and-answer tokens do not fit a prompt of {len(row)} tokens with "
                             f"{answer_lengths[i]} answer tokens")
        for key, value in (("padding", ids.shape[1] - int(mask[i].sum())), ("bos", bos),
                           ("instruction", len(instruction)), ("demonstrations", demos),
                           ("query", qa - answer_lengths[i])):
            parts[key].append(value)
    return Layout(kind, ids, answer=list(answer_lengths), **parts)


def answer_labels(inputs: dict, answer_lengths: list[int]) -> torch.Tensor:
    """CE labels of a batch with answers: each row's last ``answer_lengths[i]`` tokens, -100 elsewhere."""
    labels = torch.full_like(inputs["input_ids"], -100)
    for i, n in enumerate(answer_lengths):
        labels[i, -n:] = inputs["input_ids"][i, -n:]
    return labels
