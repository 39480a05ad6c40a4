"""The ICL teacher cache: hidden states of the query-and-answer positions, every layer, fp16.

Layout of ``results/teacher/<model>/<task>/``::

    shard-00000.safetensors ...   tensors "<query id>/<draw>" of shape [layers, positions, hidden]
    index.json                    key -> shard file
    manifest.json                 model, task, shots, seed, dtype, target, shapes, sizes (completion marker)

Shards are written atomically one by one; a rerun skips the shards already on disk, so
an interrupted extraction resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
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


def samples(icd: dict, qids: list[str], shots: int | None = None) -> list[tuple[str, int, list[str]]]:
    """(query id, draw, demonstration ids) for every training query and stored draw (the first ``shots``)."""
    return [(q, d, icd["train"][q][d][:shots]) for q in qids for d in range(icd["draws"])]


@torch.no_grad()
def teacher_states(loaded, data: TaskData, chunk, target: str, split: str = "train") -> tuple[list, list[int]]:
    """Run the frozen teacher on (demos + query + answer); return per-row states [L, n_i, H]."""
    qids = [q for q, _, _ in chunk]
    t_inputs = teacher_batch(loaded, data, split, qids, [demos for _, _, demos in chunk])
    s_inputs, _, _ = student_batch(loaded, data, split, qids)
    lengths = aligned_lengths(t_inputs, s_inputs, loaded.tokenizer.bos_token_id, instruction_tokens(loaded, data.kind))
    with HiddenStateRecorder(loaded.model, target) as rec:
        rec.select(max(lengths))
        loaded.model(**t_inputs)
        states = rec.stacked()  # [L, b, n_max, H]
    return [states[:, i, states.shape[2] - n :] for i, n in enumerate(lengths)], lengths


def extract(loaded, data: TaskData, icd: dict, out_dir: Path, settings: dict, meta: dict,
            shots: int | None = None) -> dict:
    """Cache the teacher's states of every (training query, draw) under ``out_dir``; ``shots``: the
    teacher takes the first ``shots`` of each stored draw (default: all of them)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = DTYPES[settings["dtype"]]
    todo = samples(icd, sorted(icd["train"]), shots)
    shard_size, batch_size = settings["shard_size"], settings["batch_size"]
    shards = [todo[i : i + shard_size] for i in range(0, len(todo), shard_size)]
    index: dict[str, str] = {}
    total_bytes, start = 0, time.time()
    bar = progress(total=len(todo), desc=f"teacher {meta['model']}/{meta['task']}", logger=log)
    for s, shard in enumerate(shards):
        name = f"shard-{s:05d}.safetensors"
        path = out_dir / name
        keys = [f"{q}/{d}" for q, d, _ in shard]
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
            states, _ = teacher_states(loaded, data, chunk, settings["target"])
            for (q, d, _), st in zip(chunk, states, strict=True):
                tensors[f"{q}/{d}"] = st.to("cpu", dtype).contiguous()
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
        key = f"{qid}/{draw % self.manifest['draws']}"
        if key not in self.index:
            raise KeyError(f"{self.dir}: no cached teacher states for {key}; re-extract the teacher")
        name = self.index[key]
        if name not in self._open:
            self._open[name] = safe_open(str(self.dir / name), "pt")
        return self._open[name].get_tensor(key)
