"""The ICL teacher cache: hidden states of the query-and-answer positions, every layer, fp16, and the
teacher's distribution over the next token at the answer positions (top-k), for every method that
learns from the teacher (MimIC's alignment, LIVE's KL).

Layout of ``results/teacher/<model>/<task>/``::

    shard-00000.safetensors ...   tensors "<query id>/<draw>" of shape [layers, positions, hidden], and
                                  "<query id>/<draw>/logprobs" [answer tokens, k] (float32) with
                                  "<query id>/<draw>/indices" [answer tokens, k]: the teacher's top-k
                                  log-probabilities at the positions that predict the answer tokens
    index.json                    key -> shard file
    manifest.json                 model, task, shots, seed, dtype, target, logits_topk, shapes, sizes
                                  (completion marker)

Shards are written atomically one by one; a rerun skips the shards already on disk, so
an interrupted extraction resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mimic.atomic import atomic_write
from mimic.batches import TaskData, aligned_lengths, instruction_tokens, student_batch, teacher_batch
from mimic.data.schema import write_json
from mimic.logs import progress
from mimic.recording import HiddenStateRecorder

log = logging.getLogger("mimic.teacher")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
LOGIT_PARTS = ("/logprobs", "/indices")


def samples(icd: dict, qids: list[str], shots: int | None = None) -> list[tuple[str, int, list[str]]]:
    """(query id, draw, demonstration ids) for every training query and stored draw (the first ``shots``)."""
    return [(q, d, icd["train"][q][d][:shots]) for q in qids for d in range(icd["draws"])]


@dataclass
class TeacherOutputs:
    """One teacher forward: per row, states [L, n_i, H] of the aligned positions (n_i of them) and, when
    asked for, the top-k log-probabilities [a_i, k] and token ids [a_i, k] at the a_i answer positions."""

    states: list[torch.Tensor]
    lengths: list[int]
    logprobs: list[torch.Tensor] | None = None
    indices: list[torch.Tensor] | None = None


@torch.no_grad()
def teacher_forward(loaded, data: TaskData, chunk, target: str, logits_topk: int = 0,
                    split: str = "train") -> TeacherOutputs:
    """Run the frozen teacher on (demos + query + answer): its ``target`` states at the query-and-answer
    positions, and with ``logits_topk`` its top-k next-token log-probabilities at the answer positions
    (the positions whose next token is an answer token: the last prompt token to the one before the last
    answer token), where the student's answer cross-entropy and LIVE's KL are taken."""
    qids = [q for q, _, _ in chunk]
    t_inputs = teacher_batch(loaded, data, split, qids, [demos for _, _, demos in chunk])
    s_inputs, _, answer_lengths = student_batch(loaded, data, split, qids)
    lengths = aligned_lengths(t_inputs, s_inputs, loaded.tokenizer.bos_token_id, instruction_tokens(loaded, data.kind))
    keep = max(answer_lengths) + 1 if logits_topk else 1
    with HiddenStateRecorder(loaded.model, target) as rec:
        rec.select(max(lengths))
        logits = loaded.model(**t_inputs, logits_to_keep=keep).logits
        states = rec.stacked()  # [L, b, n_max, H]
    out = TeacherOutputs([states[:, i, states.shape[2] - n :] for i, n in enumerate(lengths)], lengths)
    if logits_topk:
        out.logprobs, out.indices = [], []
        for i, a in enumerate(answer_lengths):
            logp = torch.log_softmax(logits[i, keep - 1 - a : keep - 1].float(), dim=-1)  # [a, vocab]
            top = torch.topk(logp, min(logits_topk, logp.shape[-1]), dim=-1)
            out.logprobs.append(top.values)
            out.indices.append(top.indices)
    return out


def teacher_states(loaded, data: TaskData, chunk, target: str, split: str = "train") -> tuple[list, list[int]]:
    """Run the frozen teacher on (demos + query + answer); return per-row states [L, n_i, H] and n_i."""
    out = teacher_forward(loaded, data, chunk, target, split=split)
    return out.states, out.lengths


def extract(loaded, data: TaskData, icd: dict, out_dir: Path, settings: dict, meta: dict,
            shots: int | None = None) -> dict:
    """Cache the teacher's states of every (training query, draw) under ``out_dir``; ``shots``: the
    teacher takes the first ``shots`` of each stored draw (default: all of them)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = DTYPES[settings["dtype"]]
    todo = samples(icd, sorted(icd["train"]), shots)
    shard_size, batch_size = settings["shard_size"], settings["batch_size"]
    topk = int(settings.get("logits_topk", 0) or 0)
    shards = [todo[i : i + shard_size] for i in range(0, len(todo), shard_size)]
    index: dict[str, str] = {}
    total_bytes, start = 0, time.time()
    bar = progress(total=len(todo), desc=f"teacher {meta['model']}/{meta['task']}", logger=log)
    for s, shard in enumerate(shards):
        name = f"shard-{s:05d}.safetensors"
        path = out_dir / name
        keys = [f"{q}/{d}{part}" for q, d, _ in shard for part in ("", *LOGIT_PARTS * bool(topk))]
        if path.is_file():  # resume: this shard was finished by an earlier run
            with safe_open(str(path), "pt") as f:
                if set(f.keys()) == set(keys):
                    index.update({k: name for k in keys})
                    total_bytes += path.stat().st_size
                    bar.update(len(shard))
                    log.info("shard %s already complete, skipped", name)
                    continue
        tensors = {}
        for i in range(0, len(shard), batch_size):
            chunk = shard[i : i + batch_size]
            out = teacher_forward(loaded, data, chunk, settings["target"], topk)
            for i, (q, d, _) in enumerate(chunk):
                tensors[f"{q}/{d}"] = out.states[i].to("cpu", dtype).contiguous()
                if topk:
                    tensors[f"{q}/{d}/logprobs"] = out.logprobs[i].to("cpu", torch.float32).contiguous()
                    tensors[f"{q}/{d}/indices"] = out.indices[i].to("cpu", torch.int64).contiguous()
            bar.update(len(chunk))
        atomic_write(path, lambda tmp, t=tensors: save_file(t, tmp))
        index.update({k: name for k in keys})
        total_bytes += path.stat().st_size
        log.info("wrote %s (%d samples)", name, len(shard))
    bar.close()
    write_json(out_dir / "index.json", index)
    first = next(iter(index))
    with safe_open(str(out_dir / index[first]), "pt") as f:
        layers, _, hidden = f.get_slice(first).get_shape()
    manifest = {
        **meta,
        "dtype": settings["dtype"],
        "target": settings["target"],
        "logits_topk": topk,
        "n_queries": len(icd["train"]),
        "draws": icd["draws"],
        "n_samples": len(todo),
        "n_shards": len(shards),
        "layers": layers,
        "hidden_size": hidden,
        "shape": "[layers, query-and-answer positions, hidden] per sample",
        "total_bytes": total_bytes,
        "bytes_per_sample": round(total_bytes / max(1, len(todo)), 1),
        "seconds": round(time.time() - start, 1),
    }
    write_json(out_dir / "manifest.json", manifest)
    return manifest


class TeacherCache:
    """Read access to an extracted cache (lazy per shard)."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        manifest = self.dir / "manifest.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest} is missing: run `mimic extract-teacher` for this model and task")
        self.manifest = json.loads(manifest.read_text())
        self.index = json.loads((self.dir / "index.json").read_text())
        self._open: dict[str, object] = {}

    def get(self, qid: str, draw: int) -> torch.Tensor:
        """The teacher's states [L, n, H] at the query-and-answer positions."""
        return self._tensor(f"{qid}/{draw % self.manifest['draws']}", "teacher states")

    def get_answer_logits(self, qid: str, draw: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's top-k log-probabilities and token ids [a, k] at the answer positions."""
        if not self.manifest.get("logits_topk"):
            raise KeyError(f"{self.dir} holds no teacher answer logits (extracted with teacher.logits_topk = 0); "
                           "set teacher.logits_topk > 0 and re-extract the teacher")
        key = f"{qid}/{draw % self.manifest['draws']}"
        return self._tensor(f"{key}/logprobs", "teacher logits"), self._tensor(f"{key}/indices", "teacher logits")

    def _tensor(self, key: str, what: str) -> torch.Tensor:
        if key not in self.index:
            raise KeyError(f"{self.dir}: no cached {what} for {key}; re-extract the teacher")
        name = self.index[key]
        if name not in self._open:
            self._open[name] = safe_open(str(self.dir / name), "pt")
        return self._open[name].get_tensor(key)
