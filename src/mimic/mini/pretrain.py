"""Pretrain the miniature Idefics2 model on interleaved multi-shot episodes of the suite.

Two stages, as LMMs are trained: ``vision_steps`` steps of single-image, zero-shot turns
(the vision tower and the perceiver learn to read the scenes; short sequences, cheap),
then interleaved episodes of 0..``max_shots`` demonstrations (in-context learning).

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

from mimic.mini.build import IMAGE_SEQ_LEN, build_model, build_processor, build_tokenizer
from mimic.mini.collate import EpisodeCollator
from mimic.mini.episodes import sample_episode

log = logging.getLogger("mimic.pretrain")

DEFAULTS = {
    "vision_steps": 3000,  # stage 1: single-image, zero-shot turns (the vision tower and connector learn)
    "steps": 1200,  # stage 2: interleaved episodes with 0..max_shots demonstrations
    "batch_size": 32,
    "lr": 1e-3,
    "warmup_steps": 100,
    "weight_decay": 0.01,
    "max_shots": 8,
    "seed": 0,
    "threads": 2,
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
    total = hp["vision_steps"] + hp["steps"]
    bar = tqdm(range(total), desc="pretrain-mini", dynamic_ncols=True)
    for step in bar:
        vision = step < hp["vision_steps"]
        stage_step, stage_steps = (step, hp["vision_steps"]) if vision else (step - hp["vision_steps"], hp["steps"])
        for group in optimizer.param_groups:
            group["lr"] = lr_at(stage_step, stage_steps, hp["warmup_steps"], hp["lr"])
        if vision:
            episodes = [sample_episode(rng, 0, explicit_ratio=0.5) for _ in range(hp["batch_size"])]
        else:
            episodes = [sample_episode(rng, hp["max_shots"]) for _ in range(hp["batch_size"])]
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
