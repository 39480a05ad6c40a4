"""The one training loop of every method, against the ICL teacher or the answers alone.

Each method's loss is a weighted sum of the terms its ``train:`` settings weight:

    L = align_weight  * mean over layers MSE(h_student, h_teacher)      (MimIC: teacher states)
      + ce_weight     * CE(answer)                                       (every trained method)
      + kl_weight     * KL(teacher || student) at the answer positions   (LIVE: teacher logits, top-k)
      + icl_ce_weight * CE(answer | demonstrations + query)              (STAVE: the ICL prompt, method on)

on the query-and-answer positions, the student being the zero-shot model with the method
attached. The teacher's states and answer distributions come from the cache (``teacher.mode:
cached``: no teacher forward during training) or are recomputed per batch with the method
switched off (``online``); methods whose terms need no teacher (CE only) never read it. The last
term is the answer CE of the same queries after their demonstrations (the teacher's prompt, the
epoch's draw) with the method attached: paired supervision (STAVE's source branch). ``ce_mean``
averages a CE over all answer tokens of the batch (``tokens``) or over each answer's tokens, then
over the answers (``answers``, STAVE's Eq. 5-6). AdamW,
cosine schedule with linear warmup, gradient accumulation. Fitted methods (Task / Function
Vector) are fitted by their own :meth:`~mimic.methods.Method.fit` behind the same entry point.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import random
import time
from dataclasses import dataclass

import torch
from transformers import get_cosine_schedule_with_warmup

from mimic.data.batches import (
    TaskData,
    aligned_lengths,
    answer_labels,
    instruction_tokens,
    prompt_layout,
    student_batch,
    teacher_batch,
)
from mimic.data.icd import train_demos
from mimic.errors import TrainingDiverged
from mimic.io.logs import progress
from mimic.methods import attach, count_parameters, disabled, method_of
from mimic.models.hidden_states import HiddenStateRecorder
from mimic.pipeline.params import TRAIN_DEFAULTS as PARAMS_TRAIN_DEFAULTS
from mimic.training.teacher import TeacherCache, teacher_forward

log = logging.getLogger("mimic.train")
LOG_COLUMNS = ("step", "epoch", "loss", "align_loss", "ce_loss", "kl_loss", "lr")
LOSS_WEIGHTS = {"align": "align_weight", "ce": "ce_weight", "kl": "kl_weight",  # loss term -> its weight in hp
                "icl_ce": "icl_ce_weight"}
TEACHER_NEEDS = {"align": "states", "kl": "logits"}  # loss term -> what the teacher must provide
DEFAULT_LOGITS_TOPK = 64


def loss_weights(hp: dict) -> dict[str, float]:
    """The weight of every loss term in ``hp`` (absent: 0)."""
    return {term: float(hp.get(key) or 0.0) for term, key in LOSS_WEIGHTS.items()}


def teacher_needs(hp: dict) -> set[str]:
    """What the teacher must provide for the terms ``hp`` weights: ``states`` and/or ``logits``."""
    weights = loss_weights(hp)
    return {need for term, need in TEACHER_NEEDS.items() if weights[term] > 0}


@dataclass
class TeacherTargets:
    """The teacher's side of one batch: states [L, n_i, H] per row and/or (log-probs, ids) [a_i, k] per row."""

    states: list[torch.Tensor] | None = None
    logits: list[tuple[torch.Tensor, torch.Tensor]] | None = None


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


CE_MEANS = ("tokens", "answers")


def answer_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, mean: str = "tokens") -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled tokens (``labels != -100``).

    ``logits`` are the model's outputs for the last ``n`` positions of the sequence (all of them,
    or fewer through ``logits_to_keep``); position ``t`` predicts token ``t + 1``. Computed in at
    least float32, as transformers' own loss does. ``mean``: ``tokens``, over every labelled token of
    the batch; ``answers``, over each row's labelled tokens, then over the rows (STAVE's Eq. 5-6).
    """
    if mean not in CE_MEANS:
        raise ValueError(f"ce_mean = {mean!r}; valid: {list(CE_MEANS)}")
    n = logits.shape[1]
    target = labels[:, labels.shape[1] - n + 1 :]
    keep = target != -100
    dtype = torch.promote_types(logits.dtype, torch.float32)
    if mean == "tokens":
        return torch.nn.functional.cross_entropy(logits[:, :-1][keep].to(dtype), target[keep])
    per_token = torch.nn.functional.cross_entropy(logits[:, :-1].to(dtype).transpose(1, 2), target,
                                                  ignore_index=-100, reduction="none")  # [b, n - 1]
    counts = keep.sum(1)
    rows = counts > 0
    return (per_token.sum(1)[rows] / counts[rows]).mean()


def answer_kl(logits: torch.Tensor, answer_lengths: list[int],
              teacher: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Mean over the answer positions of the batch of KL(teacher || student) over the next token.

    ``logits``: the student's logits for the last ``n`` positions (right-aligned; row ``i``'s answer
    positions are the ``a_i`` before the last); ``teacher[i]``: the teacher's top-k log-probabilities
    and token ids [a_i, k]. With k below the vocabulary the two distributions are compared on the k
    teacher tokens plus one bin holding the rest of the mass (exact when k covers the vocabulary).
    """
    n = logits.shape[1]
    total, count = 0.0, 0
    dtype = torch.promote_types(logits.dtype, torch.float32)
    for i, (t_logp, t_ids) in enumerate(teacher):
        a = answer_lengths[i]
        s_logp = torch.log_softmax(logits[i, n - 1 - a : n - 1].to(dtype), dim=-1)  # [a, vocab]
        t_logp, t_ids = t_logp.to(s_logp.device, dtype), t_ids.to(s_logp.device)
        s_sel = s_logp.gather(-1, t_ids)
        kl = (t_logp.exp() * (t_logp - s_sel)).sum(-1)
        if t_ids.shape[-1] < s_logp.shape[-1]:
            t_rest = (1.0 - t_logp.exp().sum(-1)).clamp_min(0.0)
            s_rest = torch.logsumexp(s_logp.scatter(-1, t_ids, float("-inf")), dim=-1)
            kl = kl + torch.xlogy(t_rest, t_rest) - t_rest * s_rest
        total = total + kl.sum()
        count += a
    return total / max(1, count)


def objective_terms(model, inputs: dict, labels: torch.Tensor, answer_lengths: list[int] | None, target: str,
                    weights: dict[str, float], teacher: TeacherTargets,
                    ce_mean: str = "tokens") -> tuple[torch.Tensor, dict]:
    """``(loss, terms)`` of one student batch: ``loss = sum of weights[t] * terms[t]``.

    terms: ``ce`` (:func:`answer_cross_entropy` on ``labels``, ``ce_mean``) always; ``align``
    (:func:`alignment_loss` of the student's ``target`` states against ``teacher.states``) and ``kl``
    (:func:`answer_kl` against ``teacher.logits``) when the teacher provides them. Only the logits of
    the labelled span and the answer positions are computed (``logits_to_keep``): a full [batch,
    sequence, vocabulary] tensor would be the largest activation of a real model.
    """
    labelled = (labels != -100).any(dim=0).nonzero()
    keep = labels.shape[1] - int(labelled[0]) + 1 if len(labelled) else 1
    if teacher.logits is not None:
        keep = max(keep, max(answer_lengths) + 1)
    recorder = HiddenStateRecorder(model, target, keep_graph=True) if teacher.states is not None else None
    with recorder or contextlib.nullcontext():
        if recorder is not None:
            recorder.select(max(t.shape[1] for t in teacher.states))
        logits = model(**inputs, logits_to_keep=keep).logits
        terms = {"ce": answer_cross_entropy(logits, labels, ce_mean)}
        if recorder is not None:
            terms["align"] = alignment_loss(recorder.stacked(), teacher.states)
    if teacher.logits is not None:
        terms["kl"] = answer_kl(logits, answer_lengths, teacher.logits)
    loss = sum(weights[t] * v for t, v in terms.items() if weights.get(t))
    return loss, terms


def objective(model, inputs: dict, labels: torch.Tensor, teachers: list[torch.Tensor], target: str,
              align_weight: float, ce_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MimIC's ``(loss, align, ce)`` of one student batch: ``align_weight * align + ce_weight * ce``
    (:func:`objective_terms` with the teacher's states)."""
    loss, terms = objective_terms(model, inputs, labels, None, target, {"align": align_weight, "ce": ce_weight},
                                  TeacherTargets(states=teachers))
    return loss, terms["align"], terms["ce"]


# Optional training settings and their defaults (the paper's / reference code's choices), in mimic.pipeline.params.
TRAIN_DEFAULTS = PARAMS_TRAIN_DEFAULTS


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


def check_finite(step: int, epoch: int, loss: torch.Tensor, module: torch.nn.Module, lr: float,
                 updated: bool = False) -> None:
    """Stop at the first non-finite loss, gradient (``updated``: weight), naming the optimizer step."""
    if not torch.isfinite(loss):
        what = f"the loss is {loss.item()}"
    else:
        tensors = {n: p if updated else p.grad for n, p in module.named_parameters() if p.requires_grad}
        bad = [n for n, t in tensors.items() if t is not None and not torch.isfinite(t).all()]
        if not bad:
            return
        what = f"the {'weights' if updated else 'gradient'} of {', '.join(bad[:3])} hold nan or inf"
    raise TrainingDiverged(f"training diverged at step {step} (epoch {epoch}): {what}; nothing was saved. "
                           f"Lower the learning rate (lr = {lr:g}) or check the teacher cache")


def train(loaded, data: TaskData, icd: dict, config, hp: dict, target: str, cache: TeacherCache | None,
          logits_topk: int = DEFAULT_LOGITS_TOPK, shots: int | None = None) -> tuple[torch.nn.Module, list[dict], dict]:
    """Train (or fit) the method ``config`` describes; returns (module, per-step log rows, summary).

    The module is left attached to ``loaded.model``. ``hp``: epochs, lr, warmup_ratio, weight_decay,
    batch_size, grad_accum, seed, the weights of the loss terms (align_weight, ce_weight, kl_weight;
    absent: 0), and optionally the keys of :data:`TRAIN_DEFAULTS`; for fitted methods their fit settings.
    ``cache``: the teacher cache, or None for the online teacher (``logits_topk`` for its answer logits),
    which takes the first ``shots`` demonstrations of each stored draw (default: all; the cache has its own).
    """
    method = method_of(config)
    torch.manual_seed(hp.get("seed", 0))
    if method.fitted:
        return _fit(loaded, data, icd, config, hp)
    hp = {**TRAIN_DEFAULTS, **hp}
    weights = loss_weights(hp)
    needs = teacher_needs(hp)
    module = attach(loaded.model, config)
    method.prepare(loaded, data, icd, module)
    module.train()
    qids = sorted(icd["train"])
    batches_per_epoch = math.ceil(len(qids) / hp["batch_size"])
    total_steps = math.ceil(batches_per_epoch / hp["grad_accum"]) * hp["epochs"]
    optimizer = make_optimizer(module, hp)
    scheduler = get_cosine_schedule_with_warmup(optimizer, round(hp["warmup_ratio"] * total_steps), total_steps)
    trainable = [p for p in module.parameters() if p.requires_grad]
    rows: list[dict] = []
    step, start = 0, time.time()
    teacher_seconds = 0.0
    bar = progress(total=total_steps, desc=f"train {method.type}", logger=log)
    for epoch in range(hp["epochs"]):
        order = random.Random(hp["seed"] * 1000 + epoch).sample(qids, len(qids))
        draw = epoch % icd["draws"]
        acc: dict[str, float] = {}
        for b in range(batches_per_epoch):
            chunk_ids = order[b * hp["batch_size"] : (b + 1) * hp["batch_size"]]
            t0 = time.time()
            teacher = teacher_targets(loaded, data, icd, chunk_ids, draw, needs, target, cache, logits_topk, shots)
            teacher_seconds += time.time() - t0
            inputs, labels, answer_lengths = student_batch(loaded, data, "train", chunk_ids, hp["ce_tokens"])
            layout = prompt_layout(loaded, data.kind, inputs, answer_lengths) if method.reads_layout else None
            with method.scope(module, layout):
                loss, terms = objective_terms(loaded.model, inputs, labels, answer_lengths, target, weights, teacher,
                                              hp["ce_mean"])
            (loss / hp["grad_accum"]).backward()
            if weights["icl_ce"]:  # paired supervision: the answers after the demonstrations (a backward of its own)
                icl = icl_answer_ce(loaded, data, icd, chunk_ids, draw, shots, inputs, answer_lengths, method, module,
                                    hp["ce_mean"])
                (weights["icl_ce"] * icl / hp["grad_accum"]).backward()
                terms["icl_ce"] = icl.detach()
                loss = loss.detach() + weights["icl_ce"] * terms["icl_ce"]
            check_finite(step, epoch, loss, module, hp["lr"])
            for key, value in (("loss", loss), *((f"{t}_loss", v) for t, v in terms.items())):
                acc[key] = acc.get(key, 0.0) + value.item() / hp["grad_accum"]
            last = b == batches_per_epoch - 1
            if (b + 1) % hp["grad_accum"] == 0 or last:
                if hp["max_grad_norm"] is not None:
                    torch.nn.utils.clip_grad_norm_(trainable, hp["max_grad_norm"])
                optimizer.step()
                check_finite(step, epoch, loss, module, hp["lr"], updated=True)
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                rows.append({"step": step, "epoch": epoch, **{k: round(v, 6) for k, v in acc.items()},
                             "lr": scheduler.get_last_lr()[0]})
                bar.set_postfix(**{k: f"{v:.4f}" for k, v in acc.items()})
                bar.update(1)
                if step % 10 == 0 or last:
                    log.info("epoch %d step %d %s", epoch, step, " ".join(f"{k} {v:.5f}" for k, v in acc.items()))
                step += 1
                acc = {}
    bar.close()
    module.eval()
    seconds = time.time() - start
    counts = count_parameters(module.config)
    summary = {"steps": step, "seconds": round(seconds, 2), "teacher_seconds": round(teacher_seconds, 2),
               "teacher_mode": ("cached" if cache is not None else "online") if needs else "none",
               "teacher_needs": sorted(needs), "trainable_params": sum(p.numel() for p in trainable),
               "fitted_params": counts["fitted"]}
    log.info("trained %s: %d steps in %.1fs (teacher %.1fs, %s)", method.type, step, seconds, teacher_seconds,
             summary["teacher_mode"])
    return module, rows, summary


def icl_answer_ce(loaded, data: TaskData, icd: dict, qids: list[str], draw: int, shots: int | None,
                  student_inputs: dict, answer_lengths: list[int], method, module, ce_mean: str) -> torch.Tensor:
    """The answer CE of ``qids`` after their demonstrations (draw ``draw``, the first ``shots``), with the method
    attached; always on the answer tokens, whatever ``ce_tokens`` (STAVE's source branch, Eq. 6)."""
    demo_ids = [train_demos(icd, q, draw, shots) for q in qids]
    inputs = teacher_batch(loaded, data, "train", qids, demo_ids)
    layout = None
    if method.reads_layout:
        lengths = aligned_lengths(inputs, student_inputs, loaded.tokenizer.bos_token_id,
                                  instruction_tokens(loaded, data.kind), loaded.tokenizer)
        layout = prompt_layout(loaded, data.kind, inputs, answer_lengths, query_answer=lengths, role="teacher")
    with method.scope(module, layout):
        logits = loaded.model(**inputs, logits_to_keep=max(answer_lengths) + 1).logits
    return answer_cross_entropy(logits, answer_labels(inputs, answer_lengths), ce_mean)


def teacher_targets(loaded, data: TaskData, icd: dict, qids: list[str], draw: int, needs: set[str], target: str,
                    cache: TeacherCache | None, logits_topk: int, shots: int | None = None) -> TeacherTargets:
    """The teacher's side of a batch, from the cache or (``cache`` None) the online teacher: only what ``needs``."""
    if not needs:
        return TeacherTargets()
    if cache is not None:
        return TeacherTargets(
            states=[cache.get(q, draw) for q in qids] if "states" in needs else None,
            logits=[cache.get_answer_logits(q, draw) for q in qids] if "logits" in needs else None,
        )
    chunk = [(q, draw, train_demos(icd, q, draw, shots)) for q in qids]
    with disabled(loaded.model):
        out = teacher_forward(loaded, data, chunk, target, logits_topk if "logits" in needs else 0)
    return TeacherTargets(states=out.states if "states" in needs else None,
                          logits=list(zip(out.logprobs, out.indices, strict=True)) if "logits" in needs else None)


def _fit(loaded, data: TaskData, icd: dict, config, hp: dict) -> tuple[torch.nn.Module, list[dict], dict]:
    """A fitted method: its fit (no gradient), then the module attached as a trained one would be."""
    method = method_of(config)
    start = time.time()
    module, fit_summary = method.fit(loaded, data, icd, config, hp)
    attach(loaded.model, module.config, shift=module)
    counts = count_parameters(module.config)
    summary = {"steps": 0, "seconds": round(time.time() - start, 2), "teacher_seconds": 0.0, "teacher_mode": "none",
               "teacher_needs": [], "trainable_params": counts["trainable"], "fitted_params": counts["fitted"],
               **fit_summary}
    log.info("fitted %s in %.1fs: %s", method.type, summary["seconds"], fit_summary)
    return module, [], summary


def log_csv(rows: list[dict]) -> str:
    """The per-step log: :data:`LOG_COLUMNS`, with the columns of further loss terms (``icl_ce_loss``) before ``lr``."""
    extra = sorted({key for row in rows for key in row} - set(LOG_COLUMNS))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*LOG_COLUMNS[:-1], *extra, LOG_COLUMNS[-1]])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
