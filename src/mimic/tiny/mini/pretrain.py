"""Pretrain the miniature Idefics2 model on interleaved multi-shot episodes of the suite.

Stages, as LMMs are trained: ``text_steps`` of text-only recall episodes (the decoder's
"language" pretraining: it learns to find a word in its context and copy what followed it),
``vision_steps`` of single-image, zero-shot turns (the vision tower and the perceiver learn
to read the scenes; short sequences, cheap), then interleaved episodes of 0..``short_shots``
and 0..``max_shots`` demonstrations (in-context learning: a task's format, and made-up names
looked up in the demonstrations). Stages after the first keep a share ``text_ratio`` of text
recall episodes in every batch.

Deterministic given the seed (fixed thread count, deterministic algorithms): the pipeline
rule ``pretrain_mini`` regenerates the shipped weights from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from mimic.tiny.mini.build import IMAGE_SEQ_LEN, build_model, build_processor, build_tokenizer
from mimic.tiny.mini.collate import EpisodeCollator
from mimic.tiny.mini.episodes import sample_episode, sample_repeat_episode, sample_text_episode

log = logging.getLogger("mimic.pretrain")

DEFAULTS = {
    "text_steps": 800,  # stage 0: text-only recall episodes (the decoder learns to look words up in context)
    "vision_steps": 1000,  # stage 1: single-image, zero-shot turns (the vision tower and connector learn)
    "short_steps": 0,  # stage 2: interleaved episodes with 0..short_shots demonstrations (cheap)
    "steps": 900,  # stage 3: interleaved episodes with 0..max_shots demonstrations
    "batch_size": 32,
    "lr": 1e-3,
    "warmup_steps": 100,
    "weight_decay": 0.01,
    "short_shots": 2,
    "max_shots": 8,
    "text_ratio": 0.125,  # share of text-only recall episodes in the batches of stages 1-3
    "nonce_ratio": 0.5,  # share of multi-shot episodes whose names are made-up words (a fresh mapping each)
    "reuse": 0.5,  # chance that a turn repeats the renamed values of an earlier turn (lookups happen)
    "seed": 0,
    "threads": 1,  # the thread count enters the bits (reductions split differently)
}
WEIGHTS = "model.safetensors"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def lr_at(step: int, steps: int, warmup: int, peak: float) -> float:
    """Linear warmup then cosine decay to 0 over ``steps`` (each stage has its own schedule)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def stage_plan(hp: dict) -> list[tuple[str, int]]:
    """The stages in order, with their step counts (each has its own warmup and cosine schedule)."""
    plan = [("text", hp["text_steps"]), ("vision", hp["vision_steps"]), ("short", hp["short_steps"]),
            ("episodes", hp["steps"])]
    return [(name, steps) for name, steps in plan if steps > 0]


def locate(plan: list[tuple[str, int]], step: int) -> tuple[str, int, int]:
    """(stage, step within the stage, the stage's steps) of a global step."""
    for name, steps in plan:
        if step < steps:
            return name, step, steps
        step -= steps
    raise IndexError(step)


def sample_batch(stage: str, rng: random.Random, hp: dict) -> list:
    """One batch of episodes of ``stage``; stages after the text stage keep a share of text-only recall."""
    n = hp["batch_size"]
    n_text = n if stage == "text" else round(n * hp["text_ratio"])
    episodes = [sample_repeat_episode(rng) if rng.random() < 0.5
                else sample_text_episode(rng, hp["max_shots"], hp["reuse"]) for _ in range(n_text)]
    for _ in range(n - n_text):
        if stage == "vision":
            episodes.append(sample_episode(rng, 0, explicit_ratio=0.5))
        else:
            shots = hp["short_shots"] if stage == "short" else hp["max_shots"]
            episodes.append(sample_episode(rng, shots, nonce_ratio=hp["nonce_ratio"], reuse=hp["reuse"]))
    return episodes


def pretrain(out_dir: str | os.PathLike, **overrides) -> dict:
    """Train from scratch and save model, processor and ``pretrain.json`` into ``out_dir`` (atomically)."""
    hp = {**DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    unknown = sorted(set(hp) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown pretraining settings {unknown}; valid: {sorted(DEFAULTS)}")
    torch.set_num_threads(hp["threads"])
    torch.use_deterministic_algorithms(True)
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    model = build_model(tokenizer, seed=hp["seed"])
    model.train()
    collate = EpisodeCollator(tokenizer, IMAGE_SEQ_LEN)
    rng = random.Random(hp["seed"])
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": hp["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=hp["lr"],
        betas=(0.9, 0.98),
    )
    start = time.time()
    losses = []
    plan = stage_plan(hp)
    total = sum(steps for _, steps in plan)
    bar = tqdm(range(total), desc="pretrain-mini", dynamic_ncols=True)
    for step in bar:
        stage, stage_step, stage_steps = locate(plan, step)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(stage_step, stage_steps, hp["warmup_steps"], hp["lr"])
        episodes = sample_batch(stage, rng, hp)
        batch = collate(episodes)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 25 == 0 or step == total - 1:
            recent = sum(losses[-25:]) / len(losses[-25:])
            bar.set_postfix(loss=f"{recent:.4f}")
            log.info("step %d loss %.4f lr %.2e elapsed %.0fs", step, recent, optimizer.param_groups[0]["lr"],
                     time.time() - start)
    model.eval()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(0o755)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    meta = {
        "settings": hp,
        "seconds": round(time.time() - start, 1),
        "final_loss": sum(losses[-25:]) / len(losses[-25:]),
        "torch": torch.__version__,
        "sha256": {WEIGHTS: sha256(tmp / WEIGHTS)},
    }
    (tmp / "pretrain.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return meta
