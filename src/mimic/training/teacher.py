"""The ICL teacher cache: hidden states of the query-and-answer positions, every layer, fp16, and the
teacher's distribution over the next token at the answer positions (top-k), for every method that
learns from the teacher (MimIC's alignment, LIVE's KL).

Layout of ``results/teacher/<model>/<task>/``::

    shard-00000.safetensors ...   tensors "<query id>/<draw>" of shape [layers, positions, hidden], and
                                  "<query id>/<draw>/logprobs" [answer tokens, k] (float32) with
                                  "<query id>/<draw>/indices" [answer tokens, k]: the teacher's top-k
                                  log-probabilities at the positions that predict the answer tokens
    index.json                    key -> shard file
    manifest.json                 model, task, shots, seed, dtype, target, logits_topk, shapes, sizes,
                                  the settings that made the cache, their fingerprint and every
                                  shard's sha256

**Resume, safely.** Shards are written one by one (atomically) into a work directory
(``results/partial/teacher/<model>/<task>/`` in the pipeline), each stamped with the *fingerprint*
of the settings that produce it: the teacher settings, the demonstrations, the data and the model
(:func:`fingerprint`). ``progress.json`` there lists the finished shards and their sha256. An
interrupted extraction resumes from them; a shard made under other settings, changed on disk or
unreadable is recomputed, never reused. When every shard is done, the manifest is written and the
work directory replaces the cache directory in one rename, so the cache directory is either the
previous complete cache or the new complete one.

**Verified on load.** :class:`TeacherCache` checks each shard's sha256 against the manifest
before reading it, and :meth:`TeacherCache.check` the recorded settings against the ones a
training run expects; failures name the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from mimic.data.batches import TaskData, aligned_lengths, instruction_tokens, student_batch, teacher_batch
from mimic.data.icd import train_demos
from mimic.data.schema import write_json
from mimic.errors import IntegrityError, MimicError
from mimic.io.atomic import check_free_space, existing_ancestor, replace_dir
from mimic.io.checkpoints import sha256
from mimic.io.logs import progress
from mimic.io.tensors import save_tensors
from mimic.models.hidden_states import HiddenStateRecorder
from mimic.pipeline.stages import differences

log = logging.getLogger("mimic.training.teacher")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
LOGIT_PARTS = ("/logprobs", "/indices")
CACHE_FORMAT = 2  # 2: settings, fingerprint and shard checksums in the manifest
PROGRESS_FILE = "progress.json"


def samples(icd: dict, qids: list[str], shots: int | None = None) -> list[tuple[str, int, list[str]]]:
    """(query id, draw, demonstration ids) for every training query and stored draw (the first ``shots``)."""
    return [(q, d, train_demos(icd, q, d, shots)) for q in qids for d in range(icd["draws"])]


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
    lengths = aligned_lengths(t_inputs, s_inputs, loaded.tokenizer.bos_token_id, instruction_tokens(loaded, data.kind),
                              loaded.tokenizer)
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


def cache_settings(icd: dict, settings: dict, meta: dict, provenance: dict | None = None,
                   shots: int | None = None) -> dict:
    """Everything that decides the cached states (not the batch size: it only schedules the work).

    ``provenance`` adds what the caller knows about the inputs' identity (the pipeline: the model's
    settings and file digest, the sha256 of the task tables and icd.json); ``shots``: the teacher
    takes the first ``shots`` demonstrations of each draw.
    """
    train = {q: [ids[:shots] for ids in lists] for q, lists in icd["train"].items()}
    demos = json.dumps({"shots": shots or icd["shots"], "draws": icd["draws"], "train": train}, sort_keys=True)
    return {
        "format": CACHE_FORMAT,
        "model": meta.get("model"),
        "task": meta.get("task"),
        "source": meta.get("source"),
        "target": settings["target"],
        "dtype": settings["dtype"],
        "shard_size": settings["shard_size"],
        "logits_topk": int(settings.get("logits_topk", 0) or 0),
        "demonstrations_sha256": hashlib.sha256(demos.encode()).hexdigest(),
        **({"inputs": provenance} if provenance else {}),
    }


def fingerprint(settings: dict) -> str:
    """sha256 of the canonical JSON of :func:`cache_settings`."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def default_work_dir(out_dir: Path) -> Path:
    return out_dir.with_name(f".{out_dir.name}.partial")


def _reusable(work: Path, name: str, keys: list[str], fp: str, done: dict) -> bool:
    """A finished shard of this extraction: listed with its sha256, same fingerprint, same keys."""
    path = work / name
    if name not in done or not path.is_file() or sha256(path) != done[name]:
        return False
    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("fingerprint") == fp and set(f.keys()) == set(keys)
    except Exception:  # noqa: BLE001 - unreadable: recompute it
        return False


def _start_work_dir(work: Path, settings: dict, fp: str) -> dict:
    """The finished shards of an earlier run of the same settings; anything else is cleared."""
    progress = work / PROGRESS_FILE
    if progress.is_file():
        try:
            state = json.loads(progress.read_text())
        except ValueError:
            state = {}
        if state.get("fingerprint") == fp:
            return state.get("shards", {})
        changed = "; ".join(differences(state.get("settings", {}), settings)[:3]) or "unreadable progress file"
        log.info("discarding %d shard(s) in %s made under other settings (%s)", len(state.get("shards", {})),
                 work, changed)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    return {}


def _check_room_for_the_rest(work: Path, out_dir: Path, shard_bytes: int, shards: list, s: int) -> None:
    """After the first shard this run computes: the rest of the cache, estimated from it, fits on the work
    directory's file system (and, when the cache goes to another file system, the whole cache fits there),
    so a full disk stops the extraction now rather than hours later."""
    per_sample = shard_bytes / max(1, len(shards[s]))
    rest = int(per_sample * sum(len(shard) for shard in shards[s + 1 :]))
    check_free_space(work, rest, f"the teacher cache {out_dir} (the rest of its shards, estimated from {work.name}'s "
                     "first one)")
    out_parent = existing_ancestor(out_dir.parent)
    if os.stat(work).st_dev != os.stat(out_parent).st_dev:
        whole = int(per_sample * sum(len(shard) for shard in shards))
        check_free_space(out_parent, whole, f"the teacher cache {out_dir} (copied from {work} on another file system)")


def _replace_dir(work: Path, out_dir: Path) -> None:
    """Put the finished work directory where the cache goes (the old cache goes last)."""
    now = time.time()
    for path in work.iterdir():  # every file as new as the cache: outputs newer than their inputs
        os.utime(path, (now, now))
    replace_dir(work, out_dir)  # across file systems too (results/partial on scratch, results/teacher elsewhere)


def batch_plan(todo: list, shard_size: int, batch_size: int) -> list[list[list]]:
    """The cache's shards (``shard_size`` samples each), each as its batches (``batch_size`` samples, never
    across a shard boundary): the unit of work whose states do not depend on how the work is split."""
    shards = [todo[i : i + shard_size] for i in range(0, len(todo), shard_size)]
    return [[shard[i : i + batch_size] for i in range(0, len(shard), batch_size)] for shard in shards]


def part_batches(plan: list[list[list]], part: int, jobs: int) -> list[list]:
    """The batches of part ``part`` (0-based) of ``jobs``: a contiguous run of the plan's batches."""
    flat = [batch for shard in plan for batch in shard]
    return flat[part * len(flat) // jobs : (part + 1) * len(flat) // jobs]


def sample_keys(q: str, d: int, topk: int) -> list[str]:
    """The tensors of one cached sample: its states and, with ``topk``, its answer log-probabilities."""
    return [f"{q}/{d}{part}" for part in ("", *LOGIT_PARTS * bool(topk))]


def _compute(loaded, data: TaskData, batches: list[list], target: str, dtype, topk: int,
             bar) -> dict[str, torch.Tensor]:
    tensors = {}
    for chunk in batches:
        out = teacher_forward(loaded, data, chunk, target, topk)
        for j, (q, d, _) in enumerate(chunk):
            tensors[f"{q}/{d}"] = out.states[j].to("cpu", dtype).contiguous()
            if topk:
                tensors[f"{q}/{d}/logprobs"] = out.logprobs[j].to("cpu", torch.float32).contiguous()
                tensors[f"{q}/{d}/indices"] = out.indices[j].to("cpu", torch.int64).contiguous()
        bar.update(len(chunk))
    return tensors


def _topk(settings: dict) -> int:
    return int(settings.get("logits_topk", 0) or 0)


def extract(loaded, data: TaskData, icd: dict, out_dir: Path, settings: dict, meta: dict,
            provenance: dict | None = None, work_dir: Path | None = None, shots: int | None = None) -> dict:
    """Extract the teacher cache into ``out_dir`` (resuming in ``work_dir``); the teacher takes the
    first ``shots`` demonstrations of each stored draw (default: all of them).

    Returns the manifest, with this run's ``seconds`` and ``reused_shards`` (not written to it).
    """
    dtype = DTYPES[settings["dtype"]]
    todo = samples(icd, sorted(icd["train"]), shots)
    plan = batch_plan(todo, settings["shard_size"], settings["batch_size"])
    bar = progress(total=len(todo), desc=f"teacher {meta['model']}/{meta['task']}", logger=log)

    def shard_tensors(s: int, shard: list) -> dict:
        return _compute(loaded, data, plan[s], settings["target"], dtype, _topk(settings), bar)

    made_by = cache_settings(icd, settings, meta, provenance, shots)
    return _build_cache(out_dir, work_dir, made_by, plan, settings, meta, icd, bar, shard_tensors)


def _build_cache(out_dir: Path, work_dir: Path | None, made_by: dict, plan: list[list[list]], settings: dict,
                 meta: dict, icd: dict, bar, shard_tensors) -> dict:
    """Write every shard (``shard_tensors(s, samples)`` gives its tensors), the index and the manifest into
    the work directory (reusing the shards an interrupted run finished), then swap it in for ``out_dir``."""
    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else default_work_dir(out_dir)
    fp = fingerprint(made_by)
    done = _start_work_dir(work, made_by, fp)
    shards = [[sample for batch in batches for sample in batch] for batches in plan]
    topk = _topk(settings)
    index: dict[str, str] = {}
    checksums: dict[str, str] = {}
    total_bytes, start, reused = 0, time.time(), 0
    checked_space = False
    for s, shard in enumerate(shards):
        name = f"shard-{s:05d}.safetensors"
        path = work / name
        keys = [k for q, d, _ in shard for k in sample_keys(q, d, topk)]
        if _reusable(work, name, keys, fp, done):  # resume: finished by an earlier run of the same settings
            reused += 1
            bar.update(len(shard))
        else:
            tensors = shard_tensors(s, shard)
            # one metadata key: safetensors writes a metadata map in no fixed order, and the same
            # states must give the same bytes (DVC compares hashes)
            save_tensors(path, tensors, metadata={"fingerprint": fp})
            done[name] = sha256(path)
            write_json(work / PROGRESS_FILE, {"fingerprint": fp, "settings": made_by, "shards": done})
            log.info("wrote %s (%d samples)", name, len(shard))
            if not checked_space:
                _check_room_for_the_rest(work, out_dir, path.stat().st_size, shards, s)
                checked_space = True
        index.update({k: name for k in keys})
        checksums[name] = done[name]
        total_bytes += path.stat().st_size
    bar.close()
    if reused:
        log.info("resumed: %d of %d shard(s) reused from %s (same settings, checksums verified)", reused,
                 len(shards), work)
    write_json(work / "index.json", index)
    first = next(iter(index))
    with safe_open(str(work / index[first]), "pt") as f:
        layers, _, hidden = f.get_slice(first).get_shape()
    n_samples = sum(len(shard) for shard in shards)
    manifest = {
        **meta,
        "dtype": settings["dtype"],
        "target": settings["target"],
        "logits_topk": topk,
        "n_queries": len(icd["train"]),
        "draws": icd["draws"],
        "n_samples": n_samples,
        "n_shards": len(shards),
        "layers": layers,
        "hidden_size": hidden,
        "shape": "[layers, query-and-answer positions, hidden] per sample",
        "total_bytes": total_bytes,
        "bytes_per_sample": round(total_bytes / max(1, n_samples), 1),
        "format": CACHE_FORMAT,
        "settings": made_by,
        "fingerprint": fp,
        "sha256": checksums,
    }
    # Nothing of this run in the manifest (no times): the same states give the same bytes, so a
    # re-extraction that changes nothing reruns nothing downstream, under Snakemake or DVC.
    write_json(work / "manifest.json", manifest)
    (work / PROGRESS_FILE).unlink()
    _replace_dir(work, out_dir)
    return {**manifest, "seconds": round(time.time() - start, 1), "reused_shards": reused}


def part_file(parts_dir: Path, part: int, jobs: int) -> Path:
    """Where part ``part`` (0-based) of a ``jobs``-way split extraction goes."""
    from mimic.pipeline.paths import part_name

    return Path(parts_dir) / part_name(part, jobs, "safetensors")


def extract_part(loaded, data: TaskData, icd: dict, parts_dir: Path, settings: dict, meta: dict, part: int,
                 jobs: int, provenance: dict | None = None, shots: int | None = None) -> Path:
    """One job of a ``jobs``-way split extraction: the states of its batches (:func:`part_batches`), in one
    file stamped with the fingerprint of the settings and its place in the split. :func:`merge_parts`
    turns the parts into exactly the cache :func:`extract` makes (the same batches give the same states)."""
    dtype = DTYPES[settings["dtype"]]
    made_by = cache_settings(icd, settings, meta, provenance, shots)
    plan = batch_plan(samples(icd, sorted(icd["train"]), shots), settings["shard_size"], settings["batch_size"])
    batches = part_batches(plan, part, jobs)
    bar = progress(total=sum(len(b) for b in batches), desc=f"teacher {meta['model']}/{meta['task']} "
                   f"part {part + 1}/{jobs}", logger=log)
    tensors = _compute(loaded, data, batches, settings["target"], dtype, _topk(settings), bar)
    bar.close()
    path = part_file(parts_dir, part, jobs)
    stamp = {"fingerprint": fingerprint(made_by), "part": str(part), "jobs": str(jobs),
             "batch_size": str(settings["batch_size"])}
    save_tensors(path, tensors, metadata=stamp)
    log.info("wrote %s (%d samples in %d batches)", path, len(tensors), len(batches))
    return path


def merge_parts(parts_dir: Path, jobs: int, icd: dict, out_dir: Path, settings: dict, meta: dict,
                provenance: dict | None = None, work_dir: Path | None = None, shots: int | None = None) -> dict:
    """The cache of a split extraction: every part checked (there, made under these settings and this
    split, holding exactly its batches' samples) before anything is written, then the shards, index and
    manifest written as :func:`extract` writes them (the same bytes)."""
    made_by = cache_settings(icd, settings, meta, provenance, shots)
    fp = fingerprint(made_by)
    plan = batch_plan(samples(icd, sorted(icd["train"]), shots), settings["shard_size"], settings["batch_size"])
    fix = (f"rerun `mimic extract-teacher --model {meta['model']} --task {meta['task']} --part <i>/{jobs}` "
           "for it")
    where: dict[str, Path] = {}
    for part in range(jobs):
        path = part_file(parts_dir, part, jobs)
        if not path.is_file():
            raise MimicError(f"{path} is missing (part {part + 1} of {jobs}); {fix}")
        try:
            with safe_open(str(path), "pt") as f:
                stamp, keys = f.metadata() or {}, list(f.keys())
        except Exception as exc:  # noqa: BLE001 - safetensors' errors do not name the file
            raise IntegrityError(f"{path}: not a readable safetensors file ({exc}); {fix}") from None
        if stamp.get("fingerprint") != fp or stamp.get("batch_size") != str(settings["batch_size"]):
            raise IntegrityError(f"{path} was extracted under other settings than params.yaml gives now; {fix}")
        if (stamp.get("part"), stamp.get("jobs")) != (str(part), str(jobs)):
            raise IntegrityError(f"{path} holds part {stamp.get('part')} of a {stamp.get('jobs')}-job split, not part "
                                 f"{part} of {jobs} (a copied or stray file); {fix}")
        expected = {k for batch in part_batches(plan, part, jobs) for q, d, _ in batch
                    for k in sample_keys(q, d, _topk(settings))}
        twice = sorted(k for k in keys if k in where)
        if twice:
            raise IntegrityError(f"{path}: sample {twice[0]} is also in {where[twice[0]]} (duplicate samples); {fix}")
        if set(keys) != expected:
            odd = sorted(set(keys) ^ expected)
            raise IntegrityError(f"{path}: holds {len(keys)} samples, not the {len(expected)} of part {part} of "
                                 f"{jobs} (e.g. {odd[0]}); {fix}")
        where.update({k: path for k in keys})
    opened: dict[Path, object] = {}
    bar = progress(total=sum(len(b) for shard in plan for b in shard),
                   desc=f"merge teacher {meta['model']}/{meta['task']}", logger=log)

    def shard_tensors(s: int, shard: list) -> dict:
        tensors = {}
        for key in (k for q, d, _ in shard for k in sample_keys(q, d, _topk(settings))):
            if where[key] not in opened:
                opened[where[key]] = safe_open(str(where[key]), "pt")
            tensors[key] = opened[where[key]].get_tensor(key)
        bar.update(len(shard))
        return tensors

    return _build_cache(out_dir, work_dir, made_by, plan, settings, meta, icd, bar, shard_tensors)


class TeacherCache:
    """Read access to an extracted cache (lazy per shard; each shard's sha256 checked on first use)."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        manifest = self.dir / "manifest.json"
        if not manifest.is_file():
            raise MimicError(f"{manifest} is missing: run `mimic extract-teacher` for this model and task")
        try:
            self.manifest = json.loads(manifest.read_text())
            self.index = json.loads((self.dir / "index.json").read_text())
        except (OSError, ValueError) as exc:
            raise IntegrityError(f"{self.dir}: unreadable manifest.json or index.json ({exc}); {self.fix}") from None
        if self.manifest.get("format") != CACHE_FORMAT:
            raise IntegrityError(f"{manifest}: a cache of format {self.manifest.get('format', 1)}, not "
                                 f"{CACHE_FORMAT} (no checksums and settings); {self.fix}")
        self._open: dict[str, object] = {}

    @property
    def fix(self) -> str:
        manifest = getattr(self, "manifest", {})
        model, task = manifest.get("model", "<model>"), manifest.get("task", "<task>")
        return (f"restore it (`dvc checkout --force {self.dir}`) or re-extract it "
                f"(`mimic extract-teacher --model {model} --task {task}`)")

    def check(self, expected: dict) -> None:
        """Fail unless the cache was made under ``expected`` (:func:`cache_settings`)."""
        if self.manifest.get("fingerprint") != fingerprint(expected):
            changed = "; ".join(differences(self.manifest.get("settings", {}), expected)[:4])
            raise IntegrityError(f"{self.dir} was extracted under other settings ({changed}); {self.fix}")

    def _shard(self, name: str):
        if name not in self._open:
            path = self.dir / name
            expected = self.manifest["sha256"].get(name)
            if not path.is_file():
                raise IntegrityError(f"{path} is missing; {self.fix}")
            actual = sha256(path)
            if actual != expected:
                raise IntegrityError(f"{path}: sha256 {actual[:12]}... differs from the manifest's "
                                     f"{str(expected)[:12]}... (the file was changed or damaged); {self.fix}")
            try:
                self._open[name] = safe_open(str(path), "pt")
            except Exception as exc:  # noqa: BLE001 - safetensors' errors do not name the file
                raise IntegrityError(f"{path}: not a readable safetensors file ({exc}); {self.fix}") from None
        return self._open[name]

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
            raise IntegrityError(f"{self.dir}: no cached {what} for {key}; {self.fix}")
        return self._shard(self.index[key]).get_tensor(key)
