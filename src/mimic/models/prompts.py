"""Prompt formats: how a demonstration or a query is written, per task kind, model family and preset.

A prompt is a list of segments (strings and PIL images); the model adapter turns a batch of
them into model inputs with the image tokens its processor expects. Two presets:

- ``clean``: the family's own format (``ModelAdapter.prompt_format``), by default
  ``<image>Question: {q} Short answer: {a}`` / ``<image>Caption: {c}``, a newline after each
  demonstration. The miniature model was pretrained on it.
- ``reference``: the templates of the MimIC reference code (Kamichanw/MimIC,
  ``testbed/models/idefics.py`` and ``idefics2.py`` with the roles of ``testbed/data``),
  reproduced to the character, for numbers comparable with the paper's. Idefics v1 (and every
  family without a template of its own there)::

      Instruction: Provide an answer to the question. Use the image to answer.
      Image:<image> Question: {q} Answer: {a}
      Image:<image> Question: {q} Answer:

  Idefics2 writes ``<end_of_outterance>\\n`` after the instruction and after every message
  (image, question, answer). The tag is misspelled in the reference code; the tokenizer sees
  it as plain text (the real ``<end_of_utterance>`` is a special token). Kept on purpose:
  this preset reproduces what the published numbers were measured with. Generations are cut at
  the reference code's stop words. Which prompts carry the instruction depends on their role
  (:data:`ROLES`), as there (Kamichanw/MimIC 9eda50b): VQA's in every prompt but the training
  student's (the last round alone, ``src/dataset_utils/vqa.py:89-91``, ``interface.py:221-223``);
  the caption instruction ``provide a short caption of the input image.`` only in the evaluation
  of zero-shot and ICL (``src/dataset_utils/caption.py:54-58``: ``is_icl``, set for evaluations
  without a checkpoint, ``src/eval.py:24``).

What the presets do not reproduce (see docs/deviations.md): the reference inserts a padding
token (masked out) between ``Answer:`` and the teacher-forced answer and ends it with EOS;
here the answer follows ``Answer:`` after a space and ends with the separator, as the
demonstrations do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PRESETS = ("clean", "reference")
# What a prompt is for: the evaluation of zero-shot or ICL (untrained), of a trained method (its zero-shot
# prompt), the ICL prompt of training (teacher: the teacher cache, fitted vectors) or its zero-shot prompt
# (student). A format writes its instruction in the roles it lists per kind.
ROLES = ("untrained", "trained", "teacher", "student")
DEFAULT_STOP_WORDS = ("\n", "Question:", "Caption:", "<end_of_utterance>")
# Task kinds written as another kind's prompts: a yes-no (MME) or multiple-choice (SEED-Bench) question is
# written as a VQA question (its template, instruction and stop words); the kind itself decides the scoring.
WRITTEN_AS = {"yes-no": "vqa", "multiple-choice": "vqa"}


def written_as(kind: str) -> str:
    """The kind whose prompts a task of ``kind`` uses (itself for vqa and caption)."""
    return WRITTEN_AS.get(kind, kind)


@dataclass(frozen=True)
class PromptFormat:
    """How one task kind's demonstrations and query are written.

    image_prefix: text before each image; vqa/caption: text after it (``{question}``).
    answer_prefix: between that text and an answer; separator: after each answer (a
        demonstration's, and the teacher-forced one: where the model learns to stop).
    instructions: kind -> instruction text, written once at the start with
        ``instruction_line`` in the prompts whose role (:data:`ROLES`) ``instruction_roles[kind]`` lists.
    stop_words: kind -> markers a generation is cut at (see :func:`postprocess`).
    """

    vqa: str = "Question: {question} Short answer:"
    caption: str = "Caption:"
    image_prefix: str = ""
    answer_prefix: str = " "
    separator: str = "\n"
    instructions: dict = field(default_factory=dict)
    instruction_line: str = "Instruction: {instruction}\n"
    instruction_roles: dict = field(default_factory=dict)
    stop_words: dict = field(default_factory=dict)

    def stops(self, kind: str) -> tuple[str, ...]:
        return tuple(self.stop_words.get(written_as(kind), DEFAULT_STOP_WORDS))

    def instruction(self, kind: str, role: str) -> str:
        """The instruction line a prompt of ``kind`` in ``role`` starts with ("" if none)."""
        if role not in ROLES:
            raise ValueError(f"prompt role {role!r} is not valid; use one of {list(ROLES)}")
        kind = written_as(kind)
        text = self.instructions.get(kind)
        if not text or role not in self.instruction_roles.get(kind, ()):
            return ""
        return self.instruction_line.format(instruction=text)


_REFERENCE_INSTRUCTIONS = {
    "vqa": "Provide an answer to the question. Use the image to answer.",
    "caption": "provide a short caption of the input image.",
}
_REFERENCE_STOPS = {  # src/dataset_utils/{vqa,caption}.py of the reference code
    "vqa": ("\n", "Question", "Answer", "Image", "Short"),
    "caption": ("\n", "Caption", "Image", "<", "Short"),
}
_REFERENCE_INSTRUCTION_ROLES = {"vqa": ("untrained", "trained", "teacher"), "caption": ("untrained",)}
_END = "<end_of_outterance>\n"  # sic: the reference code's Idefics2 template

REFERENCE_FORMATS = {
    "idefics": PromptFormat(
        vqa=" Question: {question} Answer:", caption=" Caption:", image_prefix="Image:", separator="\n",
        instructions=_REFERENCE_INSTRUCTIONS, instruction_roles=_REFERENCE_INSTRUCTION_ROLES,
        stop_words=_REFERENCE_STOPS,
    ),
    "idefics2": PromptFormat(
        vqa=_END + "Question: {question}" + _END + "Answer:", caption=_END + "Caption:", image_prefix="Image:",
        separator=_END, instructions=_REFERENCE_INSTRUCTIONS, instruction_line="Instruction: {instruction}" + _END,
        instruction_roles=_REFERENCE_INSTRUCTION_ROLES, stop_words=_REFERENCE_STOPS,
    ),
}
# Families the reference code has no template of its own for get its Idefics (v1) one; Gemma 3's
# processor writes "\n\n" around images, which a "\n" separator would merge with.
_NO_REFERENCE = {"gemma3": "its processor writes '\\n\\n' around every image, which merges with the "
                           "reference template's newlines; use prompt: clean"}


def preset_format(preset: str, family: str, family_format: PromptFormat) -> PromptFormat:
    """The prompt format of ``preset`` for a model ``family`` whose own (clean) format is ``family_format``."""
    if preset not in PRESETS:
        raise ValueError(f"prompt preset {preset!r} is not valid; use one of {list(PRESETS)}")
    if preset == "clean":
        return family_format
    if family in _NO_REFERENCE:
        raise ValueError(f"no 'reference' prompt preset for model family {family!r}: {_NO_REFERENCE[family]}")
    return REFERENCE_FORMATS.get(family, REFERENCE_FORMATS["idefics"])


def query_text(kind: str, question: str, fmt: PromptFormat) -> str:
    kind = written_as(kind)
    if kind == "vqa":
        return fmt.vqa.format(question=question)
    if kind == "caption":
        return fmt.caption
    raise ValueError(f"unknown task kind {kind!r}; use 'vqa' or 'caption'")


def build_prompt(kind: str, demos, query, fmt: PromptFormat, answer: str | None = None,
                 role: str = "untrained") -> list:
    """Segments of ``demos`` (each ``(image, question, answer)``) then ``query`` ``(image, question)``.

    With ``answer`` the query is followed by its answer and the separator (teacher forcing:
    the model learns where to stop); otherwise the prompt ends where generation starts. ``role``
    (:data:`ROLES`) decides whether the format's instruction starts the prompt.
    """
    segments: list = []
    text = fmt.instruction(kind, role)  # text waiting to be written before the next image
    for image, question, demo_answer in demos:
        if text + fmt.image_prefix:
            segments.append(text + fmt.image_prefix)
        segments.append(image)
        text = query_text(kind, question, fmt) + fmt.answer_prefix + demo_answer + fmt.separator
    image, question = query
    if text + fmt.image_prefix:
        segments.append(text + fmt.image_prefix)
    text = query_text(kind, question, fmt)
    if answer is not None:
        text += fmt.answer_prefix + answer + fmt.separator
    segments += [image, text]
    return segments


def postprocess(text: str, stop_words=DEFAULT_STOP_WORDS) -> str:
    """Cut a generation at the first stop word, then collapse whitespace (as the paper's code does)."""
    for marker in stop_words:
        text = text.split(marker, 1)[0]
    return " ".join(text.split())
