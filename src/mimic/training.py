"""Training MimIC against the ICL teacher.

    L = align_weight * mean over layers MSE(h_student, h_teacher) + ce_weight * CE(answer)

on the query-and-answer positions, the student being the zero-shot model with MimIC
attached. The teacher states come from the cache (``teacher.mode: cached``: no teacher
forward during training) or are recomputed per batch with the shift disabled
(``online``). AdamW, cosine schedule with linear warmup, gradient accumulation.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import random
import time

import torch
from transformers import get_cosine_schedule_with_warmup

from mimic.api import attach, disabled
from mimic.batches import TaskData, student_batch
from mimic.config import MimicConfig
from mimic.errors import TrainingDiverged
from mimic.logs import progress
from mimic.recording import HiddenStateRecorder
from mimic.teacher import TeacherCache, teacher_states

log = logging.getLogger("mimic.train")
LOG_COLUMNS = ("step", "epoch", "loss", "align_loss", "ce_loss", "lr")


def alignment_loss(student: torch.Tensor, teachers: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the MSE over every aligned position of the batch.

    student: [L, b, n_max, H] right-aligned; teachers[i]: [L, n_i, H].
    """
    sq, count = 0.0, 0
    n_max = student.shape[2]
    dtype = torch.promote_types(student.dtype, torch.float32)
    for i, t in enumerate(teachers):
        s = student[:, i, n_max - t.shape[1] :].to(dtype)
        sq = sq + (s - t.to(s.device, dtype)).pow(2).sum(dim=(1, 2))  # [L]
        count += t.shape[1] * t.shape[2]
    return (sq / count).mean()


def answer_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled tokens (``labels != -100``).

    ``logits`` are the model's outputs for the last ``n`` positions of the sequence (all of them,
    or fewer through ``logits_to_keep``); position ``t`` predicts token ``t + 1``. Computed in at
    least float32, as transformers' own loss does.
    """
    n = logits.shape[1]
    target = labels[:, labels.shape[1] - n + 1 :]
    keep = target != -100
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return torch.nn.functional.cross_entropy(logits[:, :-1][keep].to(dtype), target[keep])


def objective(model, inputs: dict, labels: torch.Tensor, teachers: list[torch.Tensor], target: str,
              align_weight: float, ce_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, align, ce)`` of one student batch: ``align_weight * align + ce_weight * ce``.

    align: :func:`alignment_loss` of the student's ``target`` states at the query-and-answer
    positions against ``teachers``; ce: :func:`answer_cross_entropy` on ``labels`` (the answer
    tokens). Only the logits of the labelled span are computed (``logits_to_keep``): a full
    [batch, sequence, vocabulary] tensor would be the largest activation of a real model.
    """
    labelled = (labels != -100).any(dim=0).nonzero()
    keep = labels.shape[1] - int(labelled[0]) + 1 if len(labelled) else 1
    with HiddenStateRecorder(model, target, keep_graph=True) as rec:
        rec.select(max(t.shape[1] for t in teachers))
        logits = model(**inputs, logits_to_keep=keep).logits
        align = alignment_loss(rec.stacked(), teachers)
    ce = answer_cross_entropy(logits, labels)
    return align_weight * align + ce_weight * ce, align, ce


# Optional training settings and their defaults (the paper's / reference code's choices).
TRAIN_DEFAULTS = {
    "max_grad_norm": 1.0,  # clip the global gradient norm before each step (None: no clipping)
    "decay_bias": False,  # weight decay on biases too (the reference code exempts them)
    "ce_tokens": "answer",  # CE on the answer tokens; "prompt": every token after BOS (the reference code)
}


def is_bias(name: str) -> bool:
    """Bias parameters (exempt from weight decay unless ``decay_bias``): ``*.bias`` and MimIC's ``b``."""
    return name.rsplit(".", 1)[-1] in ("bias", "b")


def make_optimizer(module: torch.nn.Module, hp: dict) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases without weight decay unless ``hp['decay_bias']``."""
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if hp["decay_bias"] or not is_bias(n)]
    no_decay = [p for n, p in params if not (hp["decay_bias"] or not is_bias(n))]
    groups = [{"params": decay, "weight_decay": hp["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=hp["lr"])


def check_finite(step: int, epoch: int, loss: torch.Tensor, shift: torch.nn.Module, lr: float,
                 updated: bool = False) -> None:
    """Stop at the first non-finite loss, gradient (``updated``: weight), naming the optimizer step."""
    if not torch.isfinite(loss):
        what = f"the loss is {loss.item()}"
    else:
        tensors = {n: p if updated else p.grad for n, p in shift.named_parameters()}
        bad = [n for n, t in tensors.items() if t is not None and not torch.isfinite(t).all()]
        if not bad:
            return
        what = f"the {'weights' if updated else 'gradient'} of {', '.join(bad[:3])} hold nan or inf"
    raise TrainingDiverged(f"training diverged at step {step} (epoch {epoch}): {what}; nothing was saved. "
                           f"Lower the learning rate (lr = {lr:g}) or check the teacher cache")


def train(loaded, data: TaskData, icd: dict, shift_config: MimicConfig, hp: dict, target: str,
          cache: TeacherCache | None, shots: int | None = None) -> tuple[torch.nn.Module, list[dict], dict]:
    """Train a MimIC shift; returns (shift, per-step log rows, summary).

    ``hp``: epochs, lr, warmup_ratio, weight_decay, batch_size, grad_accum, align_weight, ce_weight,
    seed, and optionally the keys of :data:`TRAIN_DEFAULTS`. ``shots``: the online teacher takes
    the first ``shots`` demonstrations of each stored draw (default: all; the cache has its own).
    """
    hp = {**TRAIN_DEFAULTS, **hp}
    torch.manual_seed(hp["seed"])
    shift = attach(loaded.model, shift_config)
    shift.train()
    qids = sorted(icd["train"])
    batches_per_epoch = math.ceil(len(qids) / hp["batch_size"])
    total_steps = math.ceil(batches_per_epoch / hp["grad_accum"]) * hp["epochs"]
    optimizer = make_optimizer(shift, hp)
    scheduler = get_cosine_schedule_with_warmup(optimizer, round(hp["warmup_ratio"] * total_steps), total_steps)
    rows: list[dict] = []
    step, start = 0, time.time()
    teacher_seconds = 0.0
    bar = progress(total=total_steps, desc="train mimic", logger=log)
    for epoch in range(hp["epochs"]):
        order = random.Random(hp["seed"] * 1000 + epoch).sample(qids, len(qids))
        draw = epoch % icd["draws"]
        acc = {"loss": 0.0, "align_loss": 0.0, "ce_loss": 0.0}
        for b in range(batches_per_epoch):
            chunk_ids = order[b * hp["batch_size"] : (b + 1) * hp["batch_size"]]
            t0 = time.time()
            if cache is not None:
                teachers = [cache.get(q, draw) for q in chunk_ids]
            else:
                chunk = [(q, draw, icd["train"][q][draw][:shots]) for q in chunk_ids]
                with disabled(loaded.model):
                    teachers, _ = teacher_states(loaded, data, chunk, target)
            teacher_seconds += time.time() - t0
            inputs, labels, _ = student_batch(loaded, data, "train", chunk_ids, hp["ce_tokens"])
            loss, align, ce = objective(loaded.model, inputs, labels, teachers, target, hp["align_weight"],
                                        hp["ce_weight"])
            (loss / hp["grad_accum"]).backward()
            check_finite(step, epoch, loss, shift, hp["lr"])
            for key, value in (("loss", loss), ("align_loss", align), ("ce_loss", ce)):
                acc[key] += value.item() / hp["grad_accum"]
            last = b == batches_per_epoch - 1
            if (b + 1) % hp["grad_accum"] == 0 or last:
                if hp["max_grad_norm"] is not None:
                    torch.nn.utils.clip_grad_norm_(shift.parameters(), hp["max_grad_norm"])
                optimizer.step()
                check_finite(step, epoch, loss, shift, hp["lr"], updated=True)
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                rows.append({"step": step, "epoch": epoch, **{k: round(v, 6) for k, v in acc.items()},
                             "lr": scheduler.get_last_lr()[0]})
                bar.set_postfix(loss=f"{acc['loss']:.4f}", align=f"{acc['align_loss']:.4f}", ce=f"{acc['ce_loss']:.3f}")
                bar.update(1)
                if step % 10 == 0 or last:
                    log.info("epoch %d step %d loss %.5f align %.5f ce %.4f", epoch, step, acc["loss"],
                             acc["align_loss"], acc["ce_loss"])
                step += 1
                acc = {"loss": 0.0, "align_loss": 0.0, "ce_loss": 0.0}
    bar.close()
    shift.eval()
    seconds = time.time() - start
    summary = {"steps": step, "seconds": round(seconds, 2), "teacher_seconds": round(teacher_seconds, 2),
               "teacher_mode": "cached" if cache is not None else "online",
               "trainable_params": sum(p.numel() for p in shift.parameters())}
    log.info("trained %d steps in %.1fs (teacher %.1fs, %s)", step, seconds, teacher_seconds, summary["teacher_mode"])
    return shift, rows, summary


def log_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
