"""Evaluating a method: batched generation, the task metric, latency, memory, ICL agreement."""

from __future__ import annotations

import logging
import resource
import time

import pandas as pd
import torch

from mimic.data.batches import TaskData
from mimic.io.logs import progress
from mimic.metrics import ROW_FIELDS
from mimic.models.generation import encode_prompts, generate_with_raw
from mimic.models.likelihood import rank_options

RANKED_KINDS = ("multiple-choice",)  # answered by ranking the table's ``choices`` (no generation)

log = logging.getLogger("mimic.evaluate")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def predict(loaded, data: TaskData, qids: list[str], demo_ids: dict[str, list[str]] | None, shots: int,
            batch_size: int, max_new_tokens: int, num_beams: int, desc: str, length_penalty: float = 1.0,
            stop: str = "newline", role: str = "untrained", rank_by: str = "mean") -> list[dict]:
    """Generate an answer for every evaluation query (with its first ``shots`` demonstrations); ``role``:
    ``untrained`` (zero-shot, ICL) or ``trained`` (a trained method's prompt), for the prompt's instruction.

    One row per query, as lmms-eval's ``--log_samples``: ``id``, ``question`` (``""`` for captions),
    ``image_id`` where the task has one, ``generation`` (the raw decoded tokens, special tokens kept),
    ``prediction`` (the post-processed answer that is scored), ``answers`` and ``latency_ms``;
    ``mimic evaluate`` adds each row's ``score`` and moves ``latency_ms`` to timing.json (a measurement, which
    differs between two identical runs, kept out of predictions.jsonl). Latency per query is the wall time of a batch
    (prompt encoding, image processing and generation) divided by its size, after one untimed
    warm-up batch.

    A ``multiple-choice`` task is answered by likelihood ranking instead (:func:`mimic.models.likelihood.rank_options`,
    ``rank_by``; the generation settings are unused): ``generation`` is the chosen option's text, ``prediction``
    its letter, and the row adds ``option_scores``. Rows of the kinds of :data:`mimic.metrics.ROW_FIELDS` end
    with the fields their metric reads (copied from the task's table).
    """
    rows = []
    if loaded.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(loaded.device)

    fields = ROW_FIELDS.get(data.kind, ())

    def answer(chunk: list[str]) -> list[dict]:
        queries = [data.query("eval", q) for q in chunk]
        demos = [[data.demo(s) for s in demo_ids[q][:shots]] for q in chunk] if shots else None
        if data.kind in RANKED_KINDS:
            options = [[str(o) for o in data.by_id["eval"].loc[q]["choices"]] for q in chunk]
            return rank_options(loaded, data.kind, queries, options, demos=demos, role=role, rank_by=rank_by)
        inputs = encode_prompts(loaded, data.kind, queries, demos=demos, role=role)
        return [{"generation": raw, "prediction": text}
                for raw, text in generate_with_raw(loaded, inputs, max_new_tokens, num_beams,
                                                   loaded.prompt_format.stops(data.kind), length_penalty, stop)]

    answer(qids[:batch_size])  # warm-up (allocator, kernels): not timed, so latency compares methods fairly
    for i in progress(range(0, len(qids), batch_size), desc=desc, logger=log):
        chunk = qids[i : i + batch_size]
        start = time.perf_counter()
        texts = answer(chunk)
        if loaded.device.type == "cuda":
            torch.cuda.synchronize(loaded.device)
        per_query = (time.perf_counter() - start) * 1000 / len(chunk)
        for q, answered in zip(chunk, texts, strict=True):
            record = data.by_id["eval"].loc[q]
            row = {"id": q, "question": record["question"]}
            image_id = record.get("image_id")
            if image_id is not None and pd.notna(image_id):  # a column of real tasks (COCO image id)
                row["image_id"] = int(image_id)
            extra = {f: _plain(record[f]) for f in fields}
            rows.append({**row, **answered, "answers": list(record["answers"]), **extra,
                         "latency_ms": round(per_query, 3)})
    return rows


def _plain(value):
    """A table cell as JSON writes it (numpy scalars as Python ones)."""
    return value.item() if hasattr(value, "item") else value


def agreement(kind: str, predictions: list[dict], reference: list[dict]) -> float:
    """% of queries whose answer equals the ICL teacher's (VQA-normalized for VQA)."""
    from mimic.metrics.vqa import normalize_answer

    def norm(text: str) -> str:
        return normalize_answer(text) if kind == "vqa" else " ".join(text.lower().split())

    ref = {r["id"]: norm(r["prediction"]) for r in reference}
    missing = [r["id"] for r in predictions if r["id"] not in ref]
    if missing:
        raise ValueError(f"the ICL predictions lack {len(missing)} queries (e.g. {missing[0]}); re-evaluate icl")
    same = sum(norm(r["prediction"]) == ref[r["id"]] for r in predictions)
    return 100.0 * same / max(1, len(predictions))
