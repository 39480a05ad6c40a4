"""Prompts to model inputs, and batched generation with answer post-processing."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mimic.models.prompts import DEFAULT_STOP_WORDS, build_prompt, postprocess


def encode_prompts(loaded, kind: str, queries: Sequence, demos: Sequence[Sequence] | None = None, answers=None,
                   role: str = "untrained"):
    """Model inputs for a batch: each query ``(image, question)`` after its demonstrations
    ``[(image, question, answer), ...]``, optionally followed by its answer (teacher forcing); ``role``
    (:data:`mimic.models.prompts.ROLES`) decides whether the prompt format's instruction starts it."""
    demos = demos or [[] for _ in queries]
    answers = answers or [None] * len(queries)
    fmt = loaded.prompt_format
    prompts = [build_prompt(kind, d, q, fmt, answer=a, role=role)
               for q, d, a in zip(queries, demos, answers, strict=True)]
    return on_model(loaded, loaded.adapter.encode(loaded.processor, prompts))


def on_model(loaded, inputs) -> dict:
    """``inputs`` on the model's device, floating-point ones (pixel values) in its dtype: Llama 4's image
    processor writes bfloat16 pixels whatever the model's dtype, and its vision tower does not cast them."""
    dtype = next(loaded.model.parameters()).dtype

    def move(v):
        if not torch.is_tensor(v):
            return v
        return v.to(loaded.device, dtype=dtype) if v.is_floating_point() else v.to(loaded.device)

    return {k: move(v) for k, v in inputs.items()}


STOPS = ("newline", "eos")


def generate(loaded, inputs: dict, max_new_tokens: int, num_beams: int = 1,
             stop_words=DEFAULT_STOP_WORDS, length_penalty: float = 1.0, stop: str = "newline") -> list[str]:
    """Greedy / beam decoding of ``inputs``, each answer cut at ``stop_words``
    (:func:`mimic.models.prompts.postprocess`). See :func:`generate_with_raw`."""
    return [answer for _, answer in generate_with_raw(loaded, inputs, max_new_tokens, num_beams, stop_words,
                                                       length_penalty, stop)]


@torch.no_grad()
def generate_with_raw(loaded, inputs: dict, max_new_tokens: int, num_beams: int = 1,
                      stop_words=DEFAULT_STOP_WORDS, length_penalty: float = 1.0,
                      stop: str = "newline") -> list[tuple[str, str]]:
    """``(raw, answer)`` per row: the generated tokens decoded as they are (special tokens such as an echoed
    ``<end_of_utterance>`` kept, the padding after the end dropped), and the answer: the same tokens
    without special tokens, cut at ``stop_words`` (:func:`mimic.models.prompts.postprocess`).

    ``length_penalty``: the beam score is the summed log-probability divided by length ** this
    (transformers' default 1.0; the MimIC reference code evaluates with 0.0, the plain sum).
    ``stop``: ``newline`` ends a beam at the model's EOS or a newline token (``loaded.stop_token_ids``),
    where an answer ends; ``eos`` only at the EOS (or ``max_new_tokens``), as the reference code
    generates, the answer then cut at the stop words: with beams another beam can win.
    ``generate()`` counts the positions from the mask itself.
    """
    if stop not in STOPS:
        raise ValueError(f"eval.stop = {stop!r}; valid: {list(STOPS)}")
    eos = eos_token_ids(loaded.model)
    stop_ids = loaded.stop_token_ids if stop == "newline" else [t for t in loaded.stop_token_ids if t in eos]
    inputs = {k: v for k, v in inputs.items() if k != "position_ids"}
    out = loaded.model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        length_penalty=length_penalty,
        do_sample=False,
        eos_token_id=stop_ids,
        pad_token_id=loaded.pad_token_id,
    )
    new = out[:, inputs["input_ids"].shape[1] :]
    texts = loaded.tokenizer.batch_decode(new, skip_special_tokens=True)
    raw = [loaded.tokenizer.decode(_generated(row.tolist(), loaded.pad_token_id, stop_ids))
           for row in new]
    return [(r, postprocess(t, stop_words)) for r, t in zip(raw, texts, strict=True)]


def eos_token_ids(model) -> list[int]:
    """The model's end-of-sequence ids (``generation_config.eos_token_id``: one id, a list, or none)."""
    eos = model.generation_config.eos_token_id
    return list(eos) if isinstance(eos, (list, tuple)) else [eos] if eos is not None else []


def _generated(ids: list[int], pad: int, stops: Sequence[int]) -> list[int]:
    """``ids`` without the padding a finished row gets while others go on; where the pad is also a stop
    token (EOS), one is kept: the row ended there."""
    end = len(ids)
    while end > 0 and ids[end - 1] == pad:
        end -= 1
    return ids[: end + 1] if end < len(ids) and pad in stops else ids[:end]
