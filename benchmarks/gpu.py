"""Zero-shot vs MimIC vs k-shot ICL at full model size: random bf16 weights, built from configs on the GPU.

Shapes (configs as in the hub checkpoints; nothing is downloaded): Idefics2-8b-base
(Mistral-7B decoder, SigLIP at 980 px without image splitting, 64 image tokens per image,
8-shot ICL), Idefics-9b (LLaMA-7B with gated cross-attention, CLIP-H at 224 px, 32-shot
ICL) and llava-interleave-qwen-7b (Qwen-7B decoder, SigLIP at 384 px, 729 tokens per
image, 4-shot ICL). Prompts go through the family's real processor class with the
full-size image settings (``mimic.models.generation.encode_prompts``); the tokenizers are the
small offline BPE ones of ``mimic.tiny.families``, the models keep their real vocabulary
sizes (Idefics v1's image tokens sit at ids 32000 and 32001, as in the checkpoint).

Per shape it prints: build time and parameters; prompt lengths and the processor's time
for a zero-shot and a k-shot batch; prefill time; generation time, greedy and 3 beams, at
equal length (min = max new tokens), methods interleaved (zero-shot, MimIC, ICL, zero-shot,
...) and repeated, medians and the median of the per-round ratios, at several batch sizes;
peak GPU memory per method; one teacher-extraction batch and the teacher-cache bytes per
query; one training step with the cached teacher and with the online teacher; MimIC with
3-beam generation through ``mimic.models.generation.generate``; and the efficiency table of every method type
of ``mimic.methods.catalog.CATALOG`` (zero-shot and k-shot ICL rows included, each method configured by its
``--params`` entry): time to first token, latency of a forced 20-token answer at batch 1 with 3 beams and its
ratio to zero-shot, peak memory, stored state in KiB (``mimic.evaluation.efficiency``), parameters, and the
training cost per training query (one step through ``mimic.training.loop.train``: ms and GFLOP with the cached
teacher and with the online one, which adds the teacher pass). Each section runs on its own: an
out-of-memory or any other failure is reported in its row and the run goes on (``--strict``
re-raises instead).

    .venv/bin/python benchmarks/gpu.py                     # all shapes, CUDA, bf16 (about 4 min on an H100)
    .venv/bin/python benchmarks/gpu.py --shapes idefics2-8b-base --batches 8
    .venv/bin/python benchmarks/gpu.py --static-cache      # adds static-cache (compiled, CUDA graphs) decoding
    .venv/bin/python benchmarks/gpu.py --tiny              # the same code on tiny configs, CPU, float32
    .venv/bin/python benchmarks/gpu.py --json results/benchmarks/gpu.json   # also every figure as JSON
    .venv/bin/python benchmarks/gpu.py --csv results/benchmarks/efficiency.csv --methods zero-shot icl mimic hificl

``--json`` writes the figures per shape (seconds are medians; ``generate_s[beams][batch][method]``), which
``tools/gpu_doc.py`` turns into docs/gpu.md's resource formulas.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import random
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import transformers
from PIL import Image, ImageDraw
from torch.utils._python_dispatch import TorchDispatchMode

import mimic
from mimic.data.batches import TaskData, student_batch
from mimic.evaluation import efficiency
from mimic.evaluation.latency import Variant
from mimic.methods.catalog import CATALOG
from mimic.models.adapters import adapter_for
from mimic.models.generation import encode_prompts, generate
from mimic.models.loading import LoadedModel, stop_token_ids
from mimic.tiny.families import (
    BYTE_TOKENS,
    CAPTION,
    COLORS,
    IDEFICS_SPECIALS,
    QUESTIONS,
    SHAPES,
    _corpus,
    _train,
    qwen2_tokenizer,
    sentencepiece_tokenizer,
)
from mimic.training.loop import objective
from mimic.training.teacher import teacher_forward, teacher_states

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------------
# Shapes: (processor, model) for the full-size configuration or a tiny one with the same code path.


def _padded_sentencepiece(specials: tuple[str, ...], trailing: tuple[str, ...], size: int):
    """A small LLaMA-style tokenizer whose ``trailing`` specials get ids ``size``, ``size + 1``, ..."""
    from tokenizers import Regex, pre_tokenizers

    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\n+"), "isolated"),
                                   pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)])
    vocab, merges = _train(None, pre, ["<unk>", "<s>", "</s>", "<pad>", *specials], _corpus())
    for token in BYTE_TOKENS:
        vocab.setdefault(token, len(vocab))
    filler = 0
    while len(vocab) < size:  # unused ids up to the checkpoint's vocabulary
        vocab.setdefault(f"<unused_{filler}>", len(vocab))
        filler += 1
    for token in trailing:
        vocab[token] = len(vocab)
    return transformers.LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, pad_token="<pad>",
                                       extra_special_tokens=[*specials, *trailing], padding_side="left")


def _text(full: bool, model_type: str, tok, vocab: int, **real) -> dict:
    tiny = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2}
    sizes = real if full else tiny
    return {"model_type": model_type, "vocab_size": vocab if full else len(tok), "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, **sizes}


def idefics2_8b(full: bool):
    tok = sentencepiece_tokenizer(IDEFICS_SPECIALS)
    px, latents = (980, 64) if full else (32, 4)
    image_processor = transformers.Idefics2ImageProcessorPil(
        size={"shortest_edge": 378 if full else 16, "longest_edge": px}, do_image_splitting=False)
    processor = transformers.Idefics2Processor(image_processor, tok, image_seq_len=latents)
    text = _text(full, "mistral", tok, 32003, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, rms_norm_eps=1e-5, sliding_window=4096,
                 max_position_embeddings=32768)
    vision = ({"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16}
              if full else {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                            "num_attention_heads": 2})
    perceiver = ({"resampler_n_latents": 64, "resampler_depth": 3, "resampler_n_heads": 16,
                  "resampler_head_dim": 96, "num_key_value_heads": 4} if full else
                 {"resampler_n_latents": latents, "resampler_depth": 1, "resampler_n_heads": 2,
                  "resampler_head_dim": 8, "num_key_value_heads": 1})
    config = transformers.Idefics2Config(
        image_token_id=tok.convert_tokens_to_ids("<image>"), text_config=text,
        vision_config={**vision, "image_size": px, "patch_size": 14 if full else 8},
        perceiver_config={**perceiver, "hidden_size": text["hidden_size"]})
    return processor, transformers.Idefics2ForConditionalGeneration, config, px


def idefics_9b(full: bool):
    vocab = 32000 if full else 600
    tok = _padded_sentencepiece(("<end_of_utterance>",), ("<fake_token_around_image>", "<image>"), vocab)
    px = 224 if full else 16
    processor = transformers.IdeficsProcessor(transformers.IdeficsImageProcessorPil(image_size=px), tok)
    sizes = ({"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32}
             if full else {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                           "num_attention_heads": 4})
    vision = ({"embed_dim": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16,
               "patch_size": 14} if full else {"embed_dim": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                               "num_attention_heads": 2, "patch_size": 8})
    perceiver = ({"resampler_n_latents": 64, "resampler_depth": 6, "resampler_n_heads": 16,
                  "resampler_head_dim": 96} if full else
                 {"resampler_n_latents": 3, "resampler_depth": 1, "resampler_n_heads": 2, "resampler_head_dim": 8})
    config = transformers.IdeficsConfig(
        vocab_size=vocab, additional_vocab_size=2, **sizes, cross_layer_interval=4 if full else 1,
        use_resampler=True, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, vision_config={**vision, "image_size": px},
        perceiver_config={**perceiver, "use_resampler": True})
    return processor, transformers.IdeficsForVisionText2Text, config, px


def llava_interleave_qwen_7b(full: bool):
    tok = qwen2_tokenizer(("<image>",))
    px, patch = (384, 14) if full else (16, 8)
    processor = transformers.LlavaProcessor(
        image_processor=transformers.SiglipImageProcessorPil(size={"height": px, "width": px}), tokenizer=tok,
        patch_size=patch, vision_feature_select_strategy="full", num_additional_image_tokens=0)
    text = _text(full, "qwen2", tok, 152000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, rope_theta=1e6, max_position_embeddings=32768)
    vision = ({"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 26, "num_attention_heads": 16}
              if full else {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                            "num_attention_heads": 2})
    config = transformers.LlavaConfig(
        vision_config={"model_type": "siglip_vision_model", **vision, "image_size": px, "patch_size": patch,
                       "vision_use_head": False},
        text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="full", image_seq_length=(px // patch) ** 2)
    return processor, transformers.LlavaForConditionalGeneration, config, px


@dataclass(frozen=True)
class Shape:
    name: str
    shots: int  # k of the k-shot ICL compared against
    build: Callable[[bool], tuple]  # full -> (processor, model class, config, image pixels)


SHAPES_BY_NAME = {s.name: s for s in (
    Shape("idefics2-8b-base", 8, idefics2_8b),
    Shape("idefics-9b", 32, idefics_9b),
    Shape("llava-interleave-qwen-7b", 4, llava_interleave_qwen_7b),
)}


def instantiate(model_cls, config, device: str, dtype: torch.dtype):
    """Random weights, created on ``device`` in ``dtype`` (``meta``: shapes only)."""
    with torch.device(device):
        model = model_cls._from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def loaded_model(shape: Shape, full: bool, device: str, dtype: torch.dtype) -> tuple[LoadedModel, int]:
    processor, model_cls, config, px = shape.build(full)
    model = instantiate(model_cls, config, device, dtype)
    tok = processor.tokenizer
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    adapter = adapter_for(model)
    stops = stop_token_ids(model, tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    return LoadedModel(shape.name, model, processor, adapter, adapter.prompt_format, torch.device(device), stops,
                       pad), px


# --------------------------------------------------------------------------------------------------
# A small VQA task at the shape's image size: queries, support set, k demonstrations per query.


def _png(color: str, shape: str, px: int, seed: int) -> bytes:
    rng = random.Random(seed)
    image = Image.new("RGB", (px, px), "white")
    draw = ImageDraw.Draw(image)
    a, b = sorted(rng.sample(range(px // 8, px - px // 8), 2))
    fill = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 230, 20),
            "purple": (150, 40, 170), "orange": (250, 140, 20)}[color]
    (draw.ellipse if shape == "circle" else draw.rectangle)((a, a, b, b), fill=fill)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def task(n_queries: int, shots: int, px: int, seed: int = 0) -> tuple[TaskData, dict]:
    rng = random.Random(seed)
    tables = {}
    for split, n in (("train", n_queries), ("support", max(shots, 1) + 4), ("eval", 1)):
        rows = []
        for i in range(n):
            color, shape = rng.choice(COLORS), rng.choice(SHAPES)
            rows.append({"id": f"{split}-{i}", "image": {"bytes": _png(color, shape, px, rng.random()), "path": None},
                         "question": rng.choice(QUESTIONS).format(shape=shape), "answers": [color] * 10})
        tables[split] = pd.DataFrame(rows)
    support = list(tables["support"]["id"])
    icd = {"shots": shots, "draws": 1, "train": {q: [rng.sample(support, shots)] for q in tables["train"]["id"]}}
    assert CAPTION  # the tokenizers were trained on the same words
    return TaskData("vqa", tables), icd


# --------------------------------------------------------------------------------------------------
# Measuring.


W = 46  # label column of the printed table


class Bench:
    def __init__(self, device: str, strict: bool):
        self.device, self.strict = device, strict
        self.figures: dict = {}  # shape -> key -> value (the --json output)
        self.tables: list[pd.DataFrame] = []  # the efficiency table of each shape (the --csv output)
        self.shape = None

    def record(self, key: str, value, *path) -> None:
        """Store one figure of the current shape at ``figures[shape][key][path...]``."""
        node = self.figures.setdefault(self.shape, {})
        for part in (key, *path[:-1]) if path else ():
            node = node.setdefault(str(part), {})
        node[str(path[-1]) if path else key] = value

    def sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def seconds(self, fn) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start

    def peak_reset(self):
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated() / 2**30 if self.device == "cuda" else None

    @contextlib.contextmanager
    def section(self, label: str):
        """Run one section; an out-of-memory or another failure becomes one printed line (unless strict)."""
        try:
            yield
        except torch.cuda.OutOfMemoryError:
            if self.strict:
                raise
            print(f"  {label:<{W}} out of GPU memory (section skipped)")
        except Exception as err:  # noqa: BLE001 - report and go on with the next section
            if self.strict:
                raise
            first = (str(err).strip().splitlines() or [""])[0][:150]
            print(f"  {label:<{W}} failed: {type(err).__name__}: {first}")
            traceback.print_exc(limit=2)
        finally:
            gc.collect()
            if self.device == "cuda":
                torch.cuda.empty_cache()


def _generate_kwargs(loaded, new_tokens: int, beams: int) -> dict:
    cfg = loaded.model.config
    suppress = [i for i in (getattr(cfg, "image_token_id", None), getattr(cfg, "image_token_index", None)) if i]
    if cfg.model_type == "idefics":  # the two additional image tokens
        suppress += [cfg.vocab_size, cfg.vocab_size + 1]
    return dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=beams, do_sample=False,
                eos_token_id=loaded.stop_token_ids, pad_token_id=loaded.pad_token_id, suppress_tokens=suppress)


class Methods:
    """Zero-shot (unpatched), MimIC (attached) and k-shot ICL (unpatched, demonstrations in the prompt)."""

    def __init__(self, loaded, shift):
        self.loaded, self.shift = loaded, shift

    @contextlib.contextmanager
    def using(self, method: str):
        if method == "mimic":
            mimic.attach(self.loaded.model, self.shift.config, shift=self.shift, verify=False)
        try:
            yield
        finally:
            if method == "mimic":
                mimic.detach(self.loaded.model)


def interleaved(bench: Bench, runs: dict, repeats: int, switch=lambda method: contextlib.nullcontext()) -> dict:
    """``runs``: method -> callable, run under ``switch(method)``. One warm-up each, then ``repeats`` rounds in
    order (a, b, c, a, b, c, ...); seconds per method."""
    times = {m: [] for m in runs}
    for rnd in range(repeats + 1):
        for method, fn in runs.items():
            with switch(method):
                t = bench.seconds(fn)
            if rnd:
                times[method].append(t)
    return times


def ratio(times: dict, a: str, b: str) -> float | None:
    if a not in times or b not in times:
        return None
    return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))


def line(label: str, text: str) -> None:
    print(f"  {label:<{W}}{text}")


def row(label: str, times: dict, scale: float = 1000.0, unit: str = "ms") -> None:
    med = {m: statistics.median(v) * scale if v else None for m, v in times.items()}

    def cell(m):
        return f"{med[m]:>10.1f}" if med.get(m) is not None else f"{'-':>10}"

    r1, r2 = ratio(times, "mimic", "zero"), ratio(times, "icl", "mimic")
    print(f"  {label + ' ' + unit:<{W}}{cell('zero')}{cell('mimic')}{cell('icl')}"
          f"{(f'{r1:.3f}x' if r1 else '-'):>12}{(f'{r2:.2f}x' if r2 else '-'):>12}")


def _count(n: int) -> str:
    return f"{n / 1e9:.3f} B" if n >= 1e8 else f"{n / 1e6:.3f} M"


def _bytes(n: float) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def run_shape(shape: Shape, args, bench: Bench) -> None:
    full = not args.tiny
    dtype = torch.bfloat16 if full else torch.float32
    t0 = time.perf_counter()
    loaded, px = loaded_model(shape, full, bench.device, dtype)
    build_s = time.perf_counter() - t0
    model = loaded.model
    params = sum(p.numel() for p in model.parameters())
    k, batch = shape.shots, args.batch
    name = torch.cuda.get_device_name() if bench.device == "cuda" else "CPU"
    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    for key, value in (("parameters", params), ("dtype", str(dtype).removeprefix("torch.")), ("device", name),
                       ("shots", k), ("batch", batch), ("new_tokens", args.new_tokens), ("image_px", px),
                       ("weights_gib", weights_gib), ("tiny", args.tiny)):
        bench.record(key, value)
    print(f"\n== {shape.name} shape{' (tiny)' if args.tiny else ''}: {_count(params)} parameters, {dtype}, "
          f"{name}; {k}-shot ICL, {px} px images, {args.new_tokens} new tokens; built in {build_s:.1f} s")
    torch.manual_seed(0)
    shift = mimic.attach(model)  # the default MimicConfig; attach's dry run checks v = 0 leaves the logits alone
    mimic.detach(model)
    with torch.no_grad():
        shift.v.normal_(0, 0.02)
    methods = Methods(loaded, shift)
    data, icd = task(max(args.batches + [batch]), k, px)
    qids = sorted(icd["train"])
    header = f"  {'':<{W}}{'zero-shot':>10}{'MimIC':>10}{f'{k}-shot':>10}{'MimIC/zero':>12}{'ICL/MimIC':>12}"

    def prompts(n: int, shots: bool) -> dict:
        chosen = qids[:n]
        queries = [data.query("train", q) for q in chosen]
        demos = [[data.demo(s) for s in icd["train"][q][0]] for q in chosen] if shots else None
        return encode_prompts(loaded, "vqa", queries, demos=demos)

    inputs = {}
    with bench.section("prompts through the processor"):
        t_zero = time.perf_counter()
        inputs["zero"] = prompts(batch, False)
        t_zero = time.perf_counter() - t_zero
        t_icl = time.perf_counter()
        inputs["icl"] = prompts(batch, True)
        t_icl = time.perf_counter() - t_icl
        bench.record("prompt_tokens", inputs["zero"]["input_ids"].shape[1], "zero")
        bench.record("prompt_tokens", inputs["icl"]["input_ids"].shape[1], "icl")
        line(f"prompt tokens (batch {batch})", f"zero-shot {inputs['zero']['input_ids'].shape[1]}, {k}-shot "
             f"{inputs['icl']['input_ids'].shape[1]}; processor {t_zero:.2f} s vs {t_icl:.2f} s (encode_prompts)")
    if "icl" not in inputs:
        return
    print(header)
    with bench.section("prefill"), torch.no_grad():
        runs = {m: (lambda m=m: model(**inputs["icl" if m == "icl" else "zero"], use_cache=True, logits_to_keep=1))
                for m in ("zero", "mimic", "icl")}
        row(f"prefill (batch {batch})", interleaved(bench, runs, args.repeats, methods.using))
    for b in args.batches:
        zs = inputs["zero"] if b == batch else None
        with bench.section(f"generate (batch {b})"), torch.no_grad():
            zs = zs if zs is not None else prompts(b, False)
            for beams in (1, 3):
                kw = _generate_kwargs(loaded, args.new_tokens, beams)
                runs = {"zero": lambda kw=kw, zs=zs: model.generate(**zs, **kw),
                        "mimic": lambda kw=kw, zs=zs: model.generate(**zs, **kw)}
                if b == batch:
                    runs["icl"] = lambda kw=kw: model.generate(**inputs["icl"], **kw)
                mode = "greedy" if beams == 1 else "3 beams"
                times = interleaved(bench, runs, args.repeats, methods.using)
                for method, values in times.items():
                    bench.record("generate_s", statistics.median(values), beams, b, method)
                row(f"generate {mode} (batch {b})", times)
    if args.static_cache:
        with bench.section("static cache"), torch.no_grad():
            # generate compiles the decoding step for a static cache on CUDA (CUDA graphs). MimIC stays attached
            # and the zero-shot rounds disable it: attaching anew each round would recompile each round.
            kw = {**_generate_kwargs(loaded, args.new_tokens, 1), "cache_implementation": "static"}
            mimic.attach(model, shift.config, shift=shift, verify=False)
            try:
                def off():
                    with mimic.disabled(model):
                        model.generate(**inputs["zero"], **kw)

                times = interleaved(bench, {"zero": off, "mimic": lambda: model.generate(**inputs["zero"], **kw)},
                                    args.repeats)
            finally:
                mimic.detach(model)
            row(f"generate greedy, static cache (batch {batch})", times)
    if bench.device == "cuda":
        with bench.section("peak memory"), torch.no_grad():
            kw = _generate_kwargs(loaded, args.new_tokens, 3)
            peaks = {}
            for m in ("zero", "mimic", "icl"):
                with methods.using(m):
                    bench.peak_reset()
                    model.generate(**inputs["icl" if m == "icl" else "zero"], **kw)
                    peaks[m] = [bench.peak_gib()]
            weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
            med = {m: v[0] for m, v in peaks.items()}
            for method, gib in med.items():
                bench.record("peak_gib_3_beams", gib, method)
            print(f"  {f'peak memory, 3 beams (batch {batch}) GiB':<{W}}{med['zero']:>10.2f}{med['mimic']:>10.2f}"
                  f"{med['icl']:>10.2f}{med['mimic'] / med['zero']:>11.3f}x{'':>12}   (weights {weights:.2f})")
    chunk = [(q, 0, icd["train"][q][0]) for q in qids[:batch]]
    cached = None
    with bench.section("teacher extraction"):
        seconds = bench.seconds(lambda: teacher_states(loaded, data, chunk, "mlp"))
        states, _ = teacher_states(loaded, data, chunk, "mlp")
        per_query = sum(s.numel() * 2 for s in states) / len(states)  # stored as float16
        shape_text = "x".join(str(d) for d in states[0].shape)
        line(f"teacher extraction, batch {batch}, {k}-shot", f"{seconds:.2f} s; cache {_bytes(per_query)} per query "
             f"(float16, mlp target; [layers x positions x hidden] = {shape_text} for the first)")
        cached = [s.detach() for s in states]
        bench.record("teacher_batch_s", seconds)
        bench.record("teacher_bytes_per_query", per_query)
    with bench.section("training step"):
        shift_train = mimic.attach(model)
        shift_train.train()
        optimizer = torch.optim.AdamW(shift_train.parameters(), lr=1e-3)
        s_inputs, labels, _ = student_batch(loaded, data, "train", qids[:batch])

        def step(teachers):
            loss, _, _ = objective(model, s_inputs, labels, teachers, "mlp", 1.0, 0.5)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def online():
            with mimic.disabled(model):
                teachers, _ = teacher_states(loaded, data, chunk, "mlp")
            step(teachers)

        times = {"cached": [], "online": []}
        step(cached)  # warm-up
        for _ in range(max(1, args.repeats - 1)):
            times["cached"].append(bench.seconds(lambda: step(cached)))
            times["online"].append(bench.seconds(online))
        mimic.detach(model)
        c, o = statistics.median(times["cached"]), statistics.median(times["online"])
        bench.record("train_step_s", c, "cached")
        bench.record("train_step_s", o, "online")
        line(f"training step, batch {batch}", f"cached teacher {c:.2f} s, online teacher {o:.2f} s ({o / c:.1f}x)")
    with bench.section("MimIC + 3 beams (mimic.models.generation.generate)"), methods.using("mimic"), kernels() as seen:
        seconds = bench.seconds(lambda: generate(loaded, inputs["zero"], args.new_tokens, num_beams=3))
        line("MimIC + 3 beams via inference.generate", f"{seconds:.2f} s for batch {batch} (with decoding)")
        routes = "; ".join(f"{step}: {', '.join(sorted(names))}" for step, names in seen.items())
        line("attention kernels under MimIC", routes)
    with bench.section("efficiency table"):
        table = efficiency_table(shape, args, bench, loaded, data, icd, args.params_doc)
        print_efficiency(table, bench.device)
        bench.tables.append(table)


@contextlib.contextmanager
def kernels():
    """Which kernel sdpa picked in MimIC's attention calls, and whether log Z2 came from it (prefill / decoding)."""
    from torch.nn.attention import SDPBackend

    import mimic.shift.log_z2 as lz

    real, seen = lz.fused_sdpa, {"prefill": set(), "decoding": set()}
    names = {int(b): name for name, b in SDPBackend.__members__.items()}

    def spy(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        choice = torch._fused_sdp_choice(query, key, value, attn_mask, dropout_p, is_causal, scale=scale,
                                         enable_gqa=enable_gqa)
        out, lse = real(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
        step = "prefill" if query.shape[2] > 1 and key.shape[2] == query.shape[2] else "decoding"
        seen[step].add(f"{names.get(choice, choice)} (log Z2 {'from the kernel' if lse is not None else 'chunked'})")
        return out, lse

    lz.fused_sdpa = spy
    try:
        yield seen
    finally:
        lz.fused_sdpa = real


# --------------------------------------------------------------------------------------------------
# The efficiency table: one row per method type of the catalog (mimic.methods.catalog.CATALOG), zero-shot and
# k-shot ICL included; inference figures of mimic.evaluation.efficiency and the training cost per query.

TRAIN_COLUMNS = ("params", "train_ms_per_query_cached", "train_ms_per_query_online",
                 "train_gflop_per_query_cached", "train_gflop_per_query_online")
EFFICIENCY_COLUMNS = ("shape", *efficiency.COLUMNS, *TRAIN_COLUMNS)
# the training settings a method entry without its own take (its loss: the answers' cross-entropy)
BENCH_HP = {"lr": 1e-3, "warmup_ratio": 0.0, "weight_decay": 0.0, "grad_accum": 1, "seed": 0, "ce_weight": 1.0}


def method_entries(params: dict, kinds: list[str] | None = None) -> dict[str, dict]:
    """Per method type of the catalog (or of ``kinds``), in catalog order: its params.yaml ``methods:`` entry --
    the one named as the type, else the first of that type, else ``{"type": kind}`` (its config's defaults)."""
    out = {}
    for kind in kinds or list(CATALOG):
        entries = {name: e for name, e in params["methods"].items() if e.get("type") == kind}
        out[kind] = entries.get(kind) or next(iter(entries.values()), {"type": kind})
    return out


def bench_hp(entry: dict, n: int) -> dict:
    """The entry's ``train:`` (or ``fit:``) settings for one step over ``n`` queries (one epoch, one batch)."""
    if CATALOG[entry["type"]].fitted:
        return {**(entry.get("fit") or {}), "batch_size": n}
    return {**BENCH_HP, **(entry.get("train") or {}), "epochs": 1, "batch_size": n, "grad_accum": 1}


class MemoryTeacher:
    """The read side of the teacher cache (:class:`mimic.training.teacher.TeacherCache`'s ``get`` and
    ``get_answer_logits``) held in memory: states in float16 and top-k log-probabilities, as the cache stores
    them. Reading the cache from disk is not part of the timings."""

    def __init__(self, qids: list[str], out):
        self.states = {q: s.to(torch.float16) for q, s in zip(qids, out.states, strict=True)}
        self.logits = dict(zip(qids, zip(out.logprobs, out.indices, strict=True), strict=True)) if out.logprobs \
            else {}

    def get(self, qid: str, draw: int) -> torch.Tensor:
        return self.states[qid]

    def get_answer_logits(self, qid: str, draw: int):
        return self.logits[qid]


def count_cpu_attention() -> None:
    """Make FlopCounterMode count the CPU flash-attention kernels too (torch counts only the CUDA ones): the same
    formulas as for ``aten._scaled_dot_product_flash_attention`` and its backward."""
    from torch.utils import flop_counter as fc

    forward, backward = (torch.ops.aten._scaled_dot_product_flash_attention_for_cpu,
                         torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward)
    if forward not in fc.flop_registry:
        fc.register_flop_formula(forward, get_raw=True)(fc.sdpa_flop)  # these two take shapes already
        fc.register_flop_formula(backward, get_raw=True)(fc.sdpa_backward_flop)


class FlopCount(TorchDispatchMode):
    """The floating-point operations of the torch operations run while active, by torch's own formulas
    (``torch.utils.flop_counter.flop_registry``: matrix products, convolutions, attention). FlopCounterMode
    counts the same but also attributes them to modules, which fails under ``no_grad`` in some vision towers."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.utils.flop_counter import flop_registry

        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def flops(fn) -> tuple[object, int]:
    """``fn()`` and the floating-point operations it ran (:class:`FlopCount`)."""
    count_cpu_attention()
    with FlopCount() as counter:
        out = fn()
    return out, counter.total


def training_cost(bench: Bench, loaded, data, icd, entry: dict, qids: list[str], teacher: MemoryTeacher,
                  teacher_flops: int, target: str, topk: int, shots: int, out_dir: Path) -> dict:
    """Train (or fit) the method of ``entry`` on ``qids`` through the pipeline's one loop: once counting the
    FLOPs (also the warm-up), once timed with the cached teacher (``teacher``) and, where its loss reads the
    teacher, once with the online teacher. The cached run's checkpoint is saved in ``out_dir``."""
    from mimic.methods import config_from_entry, detach, save_pretrained
    from mimic.training.loop import teacher_needs
    from mimic.training.loop import train as train_loop

    config = config_from_entry(entry, base_model=loaded.name)
    hp, n = bench_hp(entry, len(qids)), len(qids)
    needs = teacher_needs(hp) if not CATALOG[entry["type"]].fitted else set()
    sub = {**icd, "train": {q: icd["train"][q] for q in qids}}

    def run(cache):
        return train_loop(loaded, data, sub, config, hp, target, cache, topk, shots=shots)

    _, counted = flops(lambda: run(teacher))
    detach(loaded.model)
    bench.sync()
    start = time.perf_counter()
    _, _, summary = run(teacher)
    bench.sync()
    seconds = time.perf_counter() - start
    save_pretrained(loaded.model, out_dir, card=False)
    detach(loaded.model)
    online = seconds
    if needs:
        online = bench.seconds(lambda: run(None))
        detach(loaded.model)
    return {"params": summary["trainable_params"] + summary["fitted_params"],
            "train_ms_per_query_cached": round(1000 * seconds / n, 3),
            "train_ms_per_query_online": round(1000 * online / n, 3),
            "train_gflop_per_query_cached": round(counted / n / 1e9, 6),
            "train_gflop_per_query_online": round((counted + (teacher_flops if needs else 0)) / n / 1e9, 6)}


def efficiency_table(shape: Shape, args, bench: Bench, loaded, data, icd, params: dict) -> pd.DataFrame:
    """One row per method type (:func:`method_entries`): time to first token, forced 20-token latency at batch 1
    with 3 beams and its ratio to zero-shot, peak memory, stored state, and the training cost per query."""
    import tempfile

    model, k = loaded.model, shape.shots
    qids = sorted(icd["train"])[: args.batch]
    target, topk = params["teacher"]["target"], int(params["teacher"].get("logits_topk") or 0)
    chunk = [(q, 0, icd["train"][q][0]) for q in qids]
    (teacher_out, teacher_flops) = flops(lambda: teacher_forward(loaded, data, chunk, target, topk))
    teacher = MemoryTeacher(qids, teacher_out)
    query = [data.query("train", qids[0])]
    demos = [[data.demo(s) for s in icd["train"][qids[0]][0]]]
    zero = encode_prompts(loaded, "vqa", query)
    icl = encode_prompts(loaded, "vqa", query, demos=demos)
    trained_inputs = encode_prompts(loaded, "vqa", query, role="trained")
    entries = method_entries(params, args.methods)
    variants, kinds, stored, costs = [], {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="mimic-bench-") as tmp:
        for kind, entry in entries.items():
            kinds[kind] = kind
            if kind == "zero-shot":
                variants.append(Variant(kind, zero))
                stored[kind] = 0
            elif kind == "icl":
                variants.append(Variant(kind, icl))
                stored[kind] = efficiency.demonstration_kv_bytes(loaded, icl, zero)
            else:
                out = Path(tmp) / kind
                costs[kind] = training_cost(bench, loaded, data, icd, entry, qids, teacher, teacher_flops, target,
                                            topk, k, out)
                stored[kind] = efficiency.tensor_bytes(out / "mimic.safetensors")
                variants.append(Variant(kind, trained_inputs, efficiency.installed_from(model, out)))
        for kind in ("zero-shot", "icl"):
            if kind in entries:
                costs[kind] = {"params": 0}
        baseline = "zero-shot" if "zero-shot" in entries else variants[0].name
        rows = efficiency.measure(loaded, variants, kinds, stored, args.repeats, baseline,
                                  extra=_suppress(loaded))
    table = pd.DataFrame([{"shape": shape.name, **row, **costs.get(row["method"], {})} for row in rows],
                         columns=list(EFFICIENCY_COLUMNS))
    rows = table.drop(columns="shape").astype(object)
    bench.record("efficiency", rows.where(rows.notna(), None).to_dict(orient="records"))  # NaN -> null
    bench.record("efficiency_settings", {"new_tokens": efficiency.FORCED_TOKENS, "num_beams": efficiency.FORCED_BEAMS,
                                         "batch": 1, "shots": k, "train_queries": len(qids),
                                         "peak": efficiency.peak_measure(bench.device)})
    return table


def _suppress(loaded) -> dict:
    """Image tokens kept out of the generated answers (a random model would pick them)."""
    return {"suppress_tokens": _generate_kwargs(loaded, 1, 1)["suppress_tokens"]}


def print_efficiency(table: pd.DataFrame, device: str) -> None:
    peak = efficiency.peak_measure(device)
    shown = table.drop(columns="shape").rename(columns={
        "ttft_ms": "TTFT ms", "forced_ms": f"forced-{efficiency.FORCED_TOKENS} ms",
        "forced_ratio": "ratio to zero-shot", "peak_mib": f"peak MiB ({peak})", "stored_kib": "stored KiB",
        "train_ms_per_query_cached": "train ms/query (cached teacher)",
        "train_ms_per_query_online": "train ms/query (online teacher)",
        "train_gflop_per_query_cached": "train GFLOP/query (cached)",
        "train_gflop_per_query_online": "train GFLOP/query (online)"})
    print(f"  efficiency table: batch 1, {efficiency.FORCED_BEAMS} beams, exactly {efficiency.FORCED_TOKENS} new "
          "tokens; training: one step over the benchmark's batch through mimic.training.loop.train")
    print("\n".join("  " + line for line in shown.to_string(index=False, na_rep="-").splitlines()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES_BY_NAME), choices=list(SHAPES_BY_NAME))
    parser.add_argument("--batch", type=int, default=8, help="batch of the ICL comparison, teacher and training")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32], help="batches of zero-shot vs MimIC")
    parser.add_argument("--new-tokens", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds after the warm-up")
    parser.add_argument("--static-cache", action="store_true",
                        help="also greedy generation with a static cache (compiled by generate on CUDA)")
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU in float32 (tests this script)")
    parser.add_argument("--strict", action="store_true", help="raise instead of reporting a failed section")
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file (tools/gpu_doc.py)")
    parser.add_argument("--csv", default=None, help="also write the efficiency table of every shape to this CSV file")
    parser.add_argument("--params", default=str(REPO / "params.yaml"),
                        help="the params.yaml whose methods: entries configure each method type")
    parser.add_argument("--methods", nargs="+", default=None, choices=list(CATALOG),
                        help="method types of the efficiency table (default: every type of the catalog)")
    args = parser.parse_args(argv)
    from mimic.pipeline.params import load_params

    args.params_doc = load_params(args.params)
    device = "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA GPU (or --tiny for the CPU check)")
    start = time.perf_counter()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}; times: median of {args.repeats} "
          "interleaved rounds after a warm-up; ratios: median of the per-round ratios")
    bench = Bench(device, args.strict)
    for name in args.shapes:
        bench.shape = name
        with bench.section(f"{name}: build"):
            run_shape(SHAPES_BY_NAME[name], args, bench)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        from mimic.io.atomic import atomic_write_text

        doc = {"torch": torch.__version__, "transformers": transformers.__version__, "repeats": args.repeats,
               "shapes": bench.figures}
        atomic_write_text(args.json, json.dumps(doc, indent=1) + "\n")
        print(f"figures written to {args.json}")
    if args.csv:
        from mimic.io.atomic import atomic_write_text

        table = pd.concat(bench.tables) if bench.tables else pd.DataFrame(columns=list(EFFICIENCY_COLUMNS))
        atomic_write_text(args.csv, table.to_csv(index=False))
        print(f"efficiency table written to {args.csv}")


if __name__ == "__main__":
    main()
