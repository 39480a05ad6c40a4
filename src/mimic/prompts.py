"""Prompt formats: how a demonstration or a query is written, per task kind and model family.

The formats follow the paper's code: VQA is ``<image>Question: {q} Short answer: {a}`` and
captioning ``<image>Caption: {c}``, demonstrations interleaved in the same format. A
prompt is a list of segments (strings and PIL images); the model adapter turns a batch
of them into model inputs with the image tokens its processor expects. Each adapter
holds its family's ``PromptFormat`` (``ModelAdapter.prompt_format``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromptFormat:
    vqa: str = "Question: {question} Short answer:"
    caption: str = "Caption:"
    answer_prefix: str = " "
    separator: str = "\n"  # after each demonstration's answer


def query_text(kind: str, question: str, fmt: PromptFormat) -> str:
    if kind == "vqa":
        return fmt.vqa.format(question=question)
    if kind == "caption":
        return fmt.caption
    raise ValueError(f"unknown task kind {kind!r}; use 'vqa' or 'caption'")


def build_prompt(kind: str, demos, query, fmt: PromptFormat, answer: str | None = None) -> list:
    """Segments of ``demos`` (each ``(image, question, answer)``) then ``query`` ``(image, question)``.

    With ``answer`` the query is followed by its answer and the separator (teacher forcing:
    the model learns where to stop); otherwise the prompt ends where generation starts.
    """
    segments: list = []
    for image, question, demo_answer in demos:
        segments += [image, query_text(kind, question, fmt) + fmt.answer_prefix + demo_answer + fmt.separator]
    image, question = query
    text = query_text(kind, question, fmt)
    if answer is not None:
        text += fmt.answer_prefix + answer + fmt.separator
    segments += [image, text]
    return segments
