"""Answer options ranked by their likelihood: how a multiple-choice task (SEED-Bench) is answered.

SEED-Bench's evaluation (its eval.py and model interfaces) does not ask the model to write a letter: for each
option it computes the model's loss of the option's text given the image and the question, and predicts the
option of lowest loss, i.e. of highest likelihood ("answer ranking following GPT-3"). Here each option is
teacher-forced after the query exactly as an answer is in training (``answer_prefix + option + separator``,
:func:`mimic.models.prompts.build_prompt`, with the query's demonstrations in front for ICL), and its
log-likelihood is the sum of the log-probabilities of those answer tokens, each given everything before it,
read from one forward pass of the model as it is (a method attached shifts it like any other forward).

``rank_by``: ``mean`` (default) ranks by the mean log-probability per answer token, what the official
interfaces compare (the language model's ``loss``, a mean over the option's target tokens, its end token
included); ``sum`` by the summed log-probability (the option's whole-sequence likelihood, which favours short
options). Ties go to the earlier option.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mimic.models.generation import encode_prompts

RANK_BY = ("mean", "sum")
LETTERS = "ABCDEFGHIJ"


@torch.no_grad()
def option_log_likelihoods(loaded, kind: str, queries: Sequence, options: Sequence[Sequence[str]],
                           demos: Sequence[Sequence] | None = None,
                           role: str = "untrained") -> list[list[tuple[float, int]]]:
    """``(summed log-probability, number of answer tokens)`` of each option of each query, in order.

    ``queries``: ``(image, question)`` per query; ``options``: each query's option texts; ``demos``: each
    query's demonstrations ``[(image, question, answer), ...]`` (or None). All options of a batch of
    queries go through the model in one forward pass (left padding: the option's tokens end each row).
    """
    demos = list(demos) if demos else [[] for _ in queries]
    owner = [i for i, opts in enumerate(options) for _ in opts]
    with_option = encode_prompts(loaded, kind, [queries[i] for i in owner], demos=[demos[i] for i in owner],
                                 answers=[o for opts in options for o in opts], role=role)
    prompt = encode_prompts(loaded, kind, queries, demos=demos, role=role)
    prompt_lengths = prompt["attention_mask"].sum(1)
    lengths = (with_option["attention_mask"].sum(1) - prompt_lengths[owner]).tolist()
    if min(lengths) < 1:
        raise ValueError("an answer option adds no token to its prompt (an empty option?)")
    keep = max(lengths) + 1  # the logits that predict the option tokens (and one before them)
    logits = loaded.model(**with_option, logits_to_keep=keep).logits[:, -keep:]
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = with_option["input_ids"][:, -(keep - 1):]
    token_lp = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [rows, keep - 1]
    sums = [float(token_lp[r, token_lp.shape[1] - n:].sum()) for r, n in enumerate(lengths)]
    out: list[list[tuple[float, int]]] = [[] for _ in queries]
    for r, i in enumerate(owner):
        out[i].append((sums[r], lengths[r]))
    return out


def choose(scores: Sequence[tuple[float, int]], rank_by: str = "mean") -> tuple[int, list[float]]:
    """The index of the best option and each option's ranking score (mean or summed log-probability)."""
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by = {rank_by!r}; valid: {list(RANK_BY)}")
    values = [total / n if rank_by == "mean" else total for total, n in scores]
    return max(range(len(values)), key=lambda k: (values[k], -k)), values


def rank_options(loaded, kind: str, queries: Sequence, options: Sequence[Sequence[str]],
                 demos: Sequence[Sequence] | None = None, role: str = "untrained",
                 rank_by: str = "mean") -> list[dict]:
    """Per query: ``generation`` (the chosen option's text), ``prediction`` (its letter, A for the first) and
    ``option_scores`` (each option's ranking score, rounded to 1e-4)."""
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by = {rank_by!r}; valid: {list(RANK_BY)}")
    rows = []
    for opts, scores in zip(options, option_log_likelihoods(loaded, kind, queries, options, demos, role),
                            strict=True):
        best, values = choose(scores, rank_by)
        rows.append({"generation": opts[best], "prediction": LETTERS[best],
                     "option_scores": [round(v, 4) for v in values]})
    return rows
