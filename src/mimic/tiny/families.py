"""Tiny random models of every supported family, each with its real processor, built offline.

For each family this builds, from configs only (no download):

- a small BPE tokenizer trained with the ``tokenizers`` library in the family's style
  (SentencePiece-style with byte fallback for LLaMA/Mistral, byte-level for Qwen2 and
  Llama-3, Gemma's with its newline runs and image specials), wrapped in the family's
  tokenizer class (``LlamaTokenizer``, ``Qwen2Tokenizer``, ``GemmaTokenizer``, or
  ``PreTrainedTokenizerFast`` as Llama-3 checkpoints ship it);
- the family's image processor (PIL backend) with small sizes;
- the real processor class (``IdeficsProcessor`` ... ``Gemma3Processor``);
- a tiny random-weight model of the family's architecture whose token ids, image tokens
  and vision sizes agree with the processor.

``tiny_family(name)`` returns a :class:`mimic.models.loading.LoadedModel`, so tests and the demo
drive every family through the project's own prompt, encoding, generation, teacher and
training code. ``tiny_task`` is a small in-memory VQA / captioning task for them.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
import transformers
from PIL import Image
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import BPE

from mimic.models.loading import LoadedModel, wrap_model

# ---------------------------------------------------------------------------------------
# A small task: coloured scenes, colour questions, captions. Its words make the corpus the
# tokenizers are trained on (plus the prompt format and every family's image text).

COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("square", "circle", "triangle")
QUESTIONS = ("What color is the {shape}?", "Which color does the {shape} in the picture have?",
             "Name the color of the {shape} that you can see.")
CAPTION = "there is a {color} {shape} on a white background"

IMAGE_SIZES = ((20, 20), (24, 16), (16, 28), (32, 24))  # (width, height): square and not, to exercise resizing


def _scene(rng: random.Random) -> tuple[Image.Image, str, str]:
    color, shape = rng.choice(COLORS), rng.choice(SHAPES)
    image = Image.new("RGB", rng.choice(IMAGE_SIZES), "white")
    pixels = image.load()
    rgb = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 230, 20),
           "purple": (150, 40, 170), "orange": (250, 140, 20)}[color]
    w, h = image.size
    for x in range(w // 4, 3 * w // 4):
        for y in range(h // 4, 3 * h // 4):
            pixels[x, y] = rgb
    return image, color, shape


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def tiny_task(kind: str = "vqa", n_train: int = 4, n_support: int = 8, seed: int = 0):
    """A small in-memory task (``TaskData``) and its ICD draws: ``(data, icd)``.

    ``icd`` has the layout of ``data/<task>/icd.json``: for every training query,
    ``draws`` lists of demonstration ids from the support split.
    """
    from mimic.data.batches import TaskData

    rng = random.Random(seed)
    tables = {}
    for split, n in (("train", n_train), ("support", n_support), ("eval", 2)):
        rows = []
        for i in range(n):
            image, color, shape = _scene(rng)
            question = rng.choice(QUESTIONS).format(shape=shape) if kind == "vqa" else ""
            answer = color if kind == "vqa" else CAPTION.format(color=color, shape=shape)
            rows.append({"id": f"{split}-{i}", "image": {"bytes": _png(image), "path": None},
                         "question": question, "answers": [answer] * (10 if kind == "vqa" else 5)})
        tables[split] = pd.DataFrame(rows)
    support = list(tables["support"]["id"])
    icd = {"shots": 2, "draws": 2,
           "train": {q: [rng.sample(support, 2) for _ in range(2)] for q in tables["train"]["id"]}}
    return TaskData(kind, tables), icd


def _corpus() -> list[str]:
    from mimic.models.prompts import PromptFormat

    fmt = PromptFormat()
    lines = []
    for color in COLORS:
        for shape in SHAPES:
            for q in QUESTIONS:
                lines.append(fmt.vqa.format(question=q.format(shape=shape)) + fmt.answer_prefix + color + fmt.separator)
            lines.append(fmt.caption + fmt.answer_prefix + CAPTION.format(color=color, shape=shape) + fmt.separator)
    lines += [f"{a}\n\n{b}" for a, b in zip(COLORS, SHAPES * 2, strict=True)]  # paragraph breaks
    lines += ["\n\n\n"] * 3 + [" ".join(str(i) for i in range(100))]
    return lines


# ---------------------------------------------------------------------------------------
# Tokenizers in each family's style, trained offline on the corpus.

BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]  # SentencePiece byte fallback


def _train(normalizer, pre_tokenizer, specials: list[str], corpus: list[str], alphabet=()) -> tuple[dict, list]:
    """BPE vocabulary and merges learned on ``corpus`` under the family's pre-tokenization."""
    tok = Tokenizer(BPE(unk_token=None))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=400, min_frequency=2, special_tokens=specials, show_progress=False,
                                  initial_alphabet=list(alphabet))
    tok.train_from_iterator(corpus, trainer)
    model = json.loads(tok.to_str())["model"]
    vocab, merges = dict(model["vocab"]), [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                                          for m in model["merges"]]
    return vocab, merges


def _with_bytes(vocab: dict) -> dict:
    vocab = dict(vocab)
    for t in BYTE_TOKENS:
        vocab.setdefault(t, len(vocab))
    return vocab


def sentencepiece_tokenizer(specials: tuple[str, ...], trailing: tuple[str, ...] = ()) -> transformers.LlamaTokenizer:
    """LLaMA / Mistral style: ``▁`` word prefix, byte fallback, BOS ``<s>``, newlines not merged with words.

    ``trailing`` specials get the last ids (Idefics v1 keeps its image tokens past the base vocabulary).
    """
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\n+"), "isolated"),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
    ])
    vocab, merges = _train(None, pre, ["<unk>", "<s>", "</s>", "<pad>", *specials], _corpus())
    vocab = _with_bytes(vocab)
    for t in trailing:
        vocab[t] = len(vocab)
    return transformers.LlamaTokenizer(
        vocab=vocab, merges=merges, add_bos_token=True, pad_token="<pad>",
        extra_special_tokens=[*specials, *trailing], padding_side="left",
    )


def byte_level_tokens(specials: list[str]) -> tuple[dict, list]:
    qwen_pre = transformers.Qwen2Tokenizer().backend_tokenizer.pre_tokenizer
    return _train(normalizers.NFC(), qwen_pre, specials, _corpus(), pre_tokenizers.ByteLevel.alphabet())


QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>")


def qwen2_tokenizer(specials: tuple[str, ...] = ()) -> transformers.Qwen2Tokenizer:
    """Qwen2 style: byte-level BPE with Qwen's split regex, no BOS, ``<|endoftext|>`` as pad."""
    names = [*QWEN_SPECIALS, *specials]
    vocab, merges = byte_level_tokens(names)
    return transformers.Qwen2Tokenizer(
        vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens=names[1:], padding_side="left",
    )


def byte_level_fast_tokenizer(bos: str | None, eos: str, pad: str, specials,
                              **named: str) -> transformers.PreTrainedTokenizerFast:
    """Byte-level BPE in a ``PreTrainedTokenizerFast`` (Llama-3, Mistral's Tekken, SmolLM2), BOS added if given.

    ``specials``: extra special tokens, a list or a dict whose keys become tokenizer attributes
    (``tok.image_token``, as some processors read them); ``named``: more special tokens (``unk_token``).
    """
    extra = list(specials.values()) if isinstance(specials, dict) else list(specials)
    base = [t for t in (bos, eos, pad, *named.values()) if t is not None]
    vocab, merges = byte_level_tokens(list(dict.fromkeys([*base, *extra])))
    tok = Tokenizer(BPE(vocab=vocab, merges=merges))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = transformers.Qwen2Tokenizer().backend_tokenizer.pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, vocab[bos])])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, extra_special_tokens=specials,
        padding_side="left", **named,
    )


def llama3_tokenizer(specials: tuple[str, ...]) -> transformers.PreTrainedTokenizerFast:
    """Llama-3 style (Idefics3): byte-level BPE in a ``PreTrainedTokenizerFast``, BOS ``<|begin_of_text|>``."""
    return byte_level_fast_tokenizer("<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>",
                                     list(specials))


def falcon_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """Falcon style: byte-level BPE in a ``PreTrainedTokenizerFast``, no BOS, ``<|endoftext|>`` ends and pads."""
    eos = "<|endoftext|>"
    vocab, merges = byte_level_tokens([eos])
    tok = Tokenizer(BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=eos,
                                                padding_side="left")


GEMMA_IMAGE = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}


def gemma_tokenizer() -> transformers.GemmaTokenizer:
    """Gemma style: ``▁`` for spaces, byte fallback, runs of newlines as single tokens, image specials."""
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\n+"), "isolated"),
        pre_tokenizers.Split("▁", "merged_with_next"),
    ])
    base = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>", *GEMMA_IMAGE.values()]
    vocab, merges = _train(normalizers.Replace(" ", "▁"), pre, base, _corpus())
    return transformers.GemmaTokenizer(
        vocab=_with_bytes(vocab), merges=merges, add_bos_token=True, extra_special_tokens=dict(GEMMA_IMAGE),
        padding_side="left",
    )


# ---------------------------------------------------------------------------------------
# Processors and models. Every builder returns (processor, model); sizes are tiny.

TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 512}


def _text(tok, model_type: str, **extra) -> dict:
    return {"model_type": model_type, **TEXT, "vocab_size": len(tok), "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, **extra}


def _clip(image_size: int, patch: int) -> dict:
    return {"model_type": "clip_vision_model", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "image_size": image_size, "patch_size": patch, "projection_dim": 16}


def _siglip(image_size: int, patch: int) -> dict:
    return {"model_type": "siglip_vision_model", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "image_size": image_size, "patch_size": patch}


def _finish(model, tok):
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model.eval()


IDEFICS_SPECIALS = ("<fake_token_around_image>", "<image>", "<end_of_utterance>")


def build_idefics():
    from mimic.tiny.models import tiny_idefics  # the same tiny architecture the attach tests use

    tok = sentencepiece_tokenizer(("<end_of_utterance>",), trailing=("<fake_token_around_image>", "<image>"))
    image_processor = transformers.IdeficsImageProcessorPil(image_size=16)
    processor = transformers.IdeficsProcessor(image_processor, tok)
    model = tiny_idefics(vocab_size=len(tok) - 2)  # ids >= vocab_size live in the two additional embeddings
    model.config.pad_token_id, model.config.bos_token_id = tok.pad_token_id, tok.bos_token_id
    return processor, _finish(model, tok)


def build_idefics2():
    tok = sentencepiece_tokenizer(IDEFICS_SPECIALS)
    image_processor = transformers.Idefics2ImageProcessorPil(
        size={"shortest_edge": 16, "longest_edge": 16}, do_image_splitting=False)
    processor = transformers.Idefics2Processor(image_processor, tok, image_seq_len=3)
    config = transformers.Idefics2Config(
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        text_config=_text(tok, "mistral"),
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 16, "patch_size": 8},
        perceiver_config={"hidden_size": 32, "resampler_n_latents": 3, "resampler_depth": 1, "resampler_n_heads": 2,
                          "resampler_head_dim": 8, "num_key_value_heads": 1},
    )
    return processor, _finish(transformers.Idefics2ForConditionalGeneration(config), tok)


def build_idefics3():
    tok = llama3_tokenizer(("<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>"))
    image_processor = transformers.Idefics3ImageProcessorPil(
        size={"longest_edge": 32}, max_image_size={"longest_edge": 32}, do_image_splitting=False)
    processor = transformers.Idefics3Processor(image_processor, tok, image_seq_len=4)  # (32/8)^2 / 2^2
    config = transformers.Idefics3Config(
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2,
        text_config=_text(tok, "llama"),
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
    )
    return processor, _finish(transformers.Idefics3ForConditionalGeneration(config), tok)


def _llava_processor(cls, image_processor, tok, **kwargs):
    return cls(image_processor=image_processor, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
               num_additional_image_tokens=1, **kwargs)


def build_llava():
    """LLaVA-1.5 style: CLIP tower (CLS dropped), LLaMA decoder, 576 -> 4 image tokens."""
    tok = sentencepiece_tokenizer(("<image>",))
    image_processor = transformers.LlavaImageProcessorPil(size={"shortest_edge": 16},
                                                          crop_size={"height": 16, "width": 16})
    processor = _llava_processor(transformers.LlavaProcessor, image_processor, tok)
    config = transformers.LlavaConfig(
        vision_config=_clip(16, 8), text_config=_text(tok, "llama"),
        image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
        vision_feature_select_strategy="default", image_seq_length=4,
    )
    return processor, _finish(transformers.LlavaForConditionalGeneration(config), tok)


def build_llava_interleave():
    """llava-interleave-qwen: the LLaVA architecture with a SigLIP tower and a Qwen2 decoder."""
    tok = qwen2_tokenizer(("<image>",))
    image_processor = transformers.SiglipImageProcessorPil(size={"height": 16, "width": 16})
    processor = transformers.LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=8,
                                            vision_feature_select_strategy="full", num_additional_image_tokens=0)
    config = transformers.LlavaConfig(
        vision_config=_siglip(16, 8), text_config=_text(tok, "qwen2"),
        image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="full", image_seq_length=4,
    )
    return processor, _finish(transformers.LlavaForConditionalGeneration(config), tok)


PINPOINTS = [[16, 32], [32, 16], [32, 32]]


def build_llava_next():
    """LLaVA-NeXT: any-resolution tiles (base image + grid of crops), Mistral decoder."""
    tok = sentencepiece_tokenizer(("<image>",))
    image_processor = transformers.LlavaNextImageProcessorPil(
        size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}, image_grid_pinpoints=PINPOINTS)
    processor = _llava_processor(transformers.LlavaNextProcessor, image_processor, tok)
    config = transformers.LlavaNextConfig(
        vision_config=_clip(16, 8), text_config=_text(tok, "mistral"),
        image_token_index=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=PINPOINTS,
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    return processor, _finish(transformers.LlavaNextForConditionalGeneration(config), tok)


def build_llava_onevision():
    """LLaVA-OneVision: SigLIP tower, any-resolution tiles, Qwen2 decoder."""
    tok = qwen2_tokenizer(("<image>", "<video>"))
    image_processor = transformers.LlavaOnevisionImageProcessorPil(
        size={"height": 16, "width": 16}, image_grid_pinpoints=[[16, 16], *PINPOINTS])
    processor = transformers.LlavaOnevisionProcessor(
        image_processor=image_processor, tokenizer=tok, num_image_tokens=4,
        video_processor=video_processor("LlavaOnevisionVideoProcessor"),
        vision_feature_select_strategy="full")
    config = transformers.LlavaOnevisionConfig(
        vision_config=_siglip(16, 8), text_config=_text(tok, "qwen2"),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=[[16, 16], *PINPOINTS], vision_feature_layer=-1, vision_feature_select_strategy="full",
    )
    return processor, _finish(transformers.LlavaOnevisionForConditionalGeneration(config), tok)


def video_processor(class_name: str):
    """The family's video processor where torchvision is installed, else a bare ``VideoProcessorMixin``.

    Processors of video-capable families require a video processor, and transformers'
    video processors need torchvision (which exports ``VideoProcessorMixin`` too). For
    image prompts it is never called, so without torchvision its base class stands in.
    """
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        return getattr(transformers, class_name)()
    from transformers import processing_utils
    from transformers.video_processing_utils import VideoProcessorMixin

    # The processor's argument check looks the class up by name in transformers' namespace,
    # which exports it only with torchvision.
    namespace = processing_utils.transformers_module
    if not hasattr(namespace, "VideoProcessorMixin"):
        namespace.VideoProcessorMixin = VideoProcessorMixin
    return VideoProcessorMixin()


QWEN_PATCH, QWEN_MERGE = 4, 2
QWEN_PIXELS = 16 * 16  # images are resized to about 16 x 16 pixels: 4 x 4 patches, 2 x 2 tokens


def _qwen_image_processor():
    return transformers.Qwen2VLImageProcessorPil(
        patch_size=QWEN_PATCH, merge_size=QWEN_MERGE, temporal_patch_size=2,
        size={"shortest_edge": QWEN_PIXELS, "longest_edge": 2 * QWEN_PIXELS})


def _qwen_ids(tok) -> dict:
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    return ids


def build_qwen2_vl():
    tok = qwen2_tokenizer()
    processor = transformers.Qwen2VLProcessor(image_processor=_qwen_image_processor(), tokenizer=tok,
                                              video_processor=video_processor("Qwen2VLVideoProcessor"))
    config = transformers.Qwen2VLConfig(
        text_config=_text(tok, "qwen2_vl_text", rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1]}),
        vision_config={"depth": 1, "embed_dim": 16, "hidden_size": 32, "num_heads": 2, "patch_size": QWEN_PATCH,
                       "spatial_merge_size": QWEN_MERGE, "temporal_patch_size": 2},
        **_qwen_ids(tok),
    )
    return processor, _finish(transformers.Qwen2VLForConditionalGeneration(config), tok)


def build_qwen2_5_vl():
    tok = qwen2_tokenizer()
    processor = transformers.Qwen2_5_VLProcessor(image_processor=_qwen_image_processor(), tokenizer=tok,
                                                 video_processor=video_processor("Qwen2VLVideoProcessor"))
    config = transformers.Qwen2_5_VLConfig(
        text_config=_text(tok, "qwen2_5_vl_text",
                          rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1]}),
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
                       "out_hidden_size": 32, "patch_size": QWEN_PATCH, "spatial_merge_size": QWEN_MERGE,
                       "temporal_patch_size": 2, "window_size": 16, "fullatt_block_indexes": [1]},
        **_qwen_ids(tok),
    )
    return processor, _finish(transformers.Qwen2_5_VLForConditionalGeneration(config), tok)


def build_qwen3_vl():
    tok = qwen2_tokenizer()
    processor = transformers.Qwen3VLProcessor(image_processor=_qwen_image_processor(), tokenizer=tok,
                                              video_processor=video_processor("Qwen3VLVideoProcessor"))
    config = transformers.Qwen3VLConfig(
        text_config=_text(tok, "qwen3_vl_text", head_dim=8,
                          rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1],
                                           "mrope_interleaved": True}),
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
                       "out_hidden_size": 32, "patch_size": QWEN_PATCH, "spatial_merge_size": QWEN_MERGE,
                       "temporal_patch_size": 2, "num_position_embeddings": 16, "deepstack_visual_indexes": [0]},
        **_qwen_ids(tok),
    )
    return processor, _finish(transformers.Qwen3VLForConditionalGeneration(config), tok)


def build_gemma3():
    """Gemma 3: SigLIP tower pooled to 4 soft tokens, Gemma 3 decoder (sliding + global layers)."""
    tok = gemma_tokenizer()
    image_processor = transformers.Gemma3ImageProcessorPil(size={"height": 16, "width": 16})
    processor = transformers.Gemma3Processor(image_processor=image_processor, tokenizer=tok, image_seq_length=4)
    config = transformers.Gemma3Config(
        text_config=_text(tok, "gemma3_text", head_dim=8, query_pre_attn_scalar=8, sliding_window=8,
                          layer_types=["sliding_attention", "full_attention"]),
        vision_config=_siglip(16, 4), mm_tokens_per_image=4,
        boi_token_index=tok.boi_token_id, eoi_token_index=tok.eoi_token_id, image_token_index=tok.image_token_id,
    )
    return processor, _finish(transformers.Gemma3ForConditionalGeneration(config), tok)


SMOLVLM_SPECIALS = {"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
                    "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"}


def build_smolvlm():
    """SmolVLM through its own processor: images split into 32 x 32 tiles plus a global image (SmolLM2 decoder).

    The processor needs ``num2words`` (for video prompts; it refuses to start without it).
    """
    tok = byte_level_fast_tokenizer(None, "<end_of_utterance>", "<|im_end|>", SMOLVLM_SPECIALS)
    image_processor = transformers.SmolVLMImageProcessorPil(
        size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True)
    processor = transformers.SmolVLMProcessor(image_processor=image_processor, tokenizer=tok, image_seq_len=4,
                                              video_processor=video_processor("SmolVLMVideoProcessor"))
    config = transformers.SmolVLMConfig(
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2,
        text_config=_text(tok, "llama"),
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
    )
    return processor, _finish(transformers.SmolVLMForConditionalGeneration(config), tok)


INTERNVL_SPECIALS = {"start_image_token": "<img>", "end_image_token": "</img>",
                     "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}


def build_internvl():
    """InternVL 3: 16 x 16 tiles (up to 4, plus a thumbnail when tiled), 4 tokens each after pixel shuffle; Qwen2."""
    vocab, merges = byte_level_tokens([*QWEN_SPECIALS, *INTERNVL_SPECIALS.values()])
    tok = transformers.Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                      extra_special_tokens=INTERNVL_SPECIALS, padding_side="left")
    image_processor = transformers.GotOcr2ImageProcessorPil(size={"height": 16, "width": 16}, min_patches=1,
                                                            max_patches=4)
    processor = transformers.InternVLProcessor(image_processor=image_processor, tokenizer=tok, image_seq_length=4,
                                               video_processor=video_processor("InternVLVideoProcessor"))
    config = transformers.InternVLConfig(
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": [16, 16], "patch_size": [4, 4]},  # (16 / 4)^2 patches, pixel shuffle 0.5
        text_config=_text(tok, "qwen2"), image_token_id=tok.context_image_token_id, image_seq_length=4,
    )
    return processor, _finish(transformers.InternVLForConditionalGeneration(config), tok)


PIXTRAL_SPECIALS = ("[IMG]", "[IMG_BREAK]", "[IMG_END]")


def _pixtral_processor(tok, patch: int, merge: int):
    """PixtralProcessor (needs torchvision, which its module imports): images resized to multiples of
    ``patch * merge`` pixels, longest edge 32; one [IMG] per merged patch, a row break after each row."""
    from transformers.models.pixtral.processing_pixtral import PixtralProcessor

    image_processor = transformers.PixtralImageProcessorPil(size={"longest_edge": 32}, patch_size=patch * merge)
    return PixtralProcessor(image_processor=image_processor, tokenizer=tok, patch_size=patch,
                            spatial_merge_size=merge)


def _pixtral_vision(patch: int) -> dict:
    return {"model_type": "pixtral", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "head_dim": 8, "image_size": 32, "patch_size": patch}


def tekken_tokenizer():
    """Mistral's Tekken style: byte-level BPE, BOS ``<s>``, image specials ``[IMG]``, ``[IMG_BREAK]``, ``[IMG_END]``."""
    return byte_level_fast_tokenizer("<s>", "</s>", "<pad>", list(PIXTRAL_SPECIALS), unk_token="<unk>")


def build_mistral3():
    """Mistral 3 (Mistral-Small-3.1): Pixtral tower, 2 x 2 patch merger, Mistral decoder."""
    tok = tekken_tokenizer()
    processor = _pixtral_processor(tok, patch=4, merge=2)
    config = transformers.Mistral3Config(
        vision_config=_pixtral_vision(4), text_config=_text(tok, "mistral"),
        image_token_index=tok.convert_tokens_to_ids("[IMG]"), spatial_merge_size=2, vision_feature_layer=-1,
    )
    return processor, _finish(transformers.Mistral3ForConditionalGeneration(config), tok)


def build_pixtral_llava():
    """Pixtral-12B as transformers saves it: ``model_type`` llava, a Pixtral tower, a PixtralProcessor."""
    tok = tekken_tokenizer()
    processor = _pixtral_processor(tok, patch=8, merge=1)
    config = transformers.LlavaConfig(
        vision_config=_pixtral_vision(8), text_config=_text(tok, "mistral"),
        image_token_index=tok.convert_tokens_to_ids("[IMG]"), vision_feature_layer=-1,
        vision_feature_select_strategy="full", multimodal_projector_bias=True,
    )
    return processor, _finish(transformers.LlavaForConditionalGeneration(config), tok)


LLAMA4_IMAGE = ("<|image_start|>", "<|image_end|>", "<|image|>", "<|patch|>", "<|tile_x_separator|>",
                "<|tile_y_separator|>")


def build_llama4():
    """Llama 4: 16 x 16 tiles (up to 4, plus the global image when tiled), 4 <|patch|> tokens each after pixel
    shuffle; a decoder of chunked-attention RoPE layers and global NoPE layers, dense and mixture-of-experts MLPs.

    Its image processor needs torchvision (it has no PIL backend) and writes bfloat16 pixels.
    The attention chunk (512) holds every prompt here: MimIC's split is exact only within a chunk.
    """
    tok = byte_level_fast_tokenizer("<|begin_of_text|>", "<|eot|>", "<|finetune_right_pad|>", list(LLAMA4_IMAGE))
    image_processor = transformers.Llama4ImageProcessor(size={"height": 16, "width": 16}, max_patches=4)
    processor = transformers.Llama4Processor(image_processor=image_processor, tokenizer=tok, patch_size=4,
                                             pixel_shuffle_ratio=0.5)
    text = _text(tok, "llama4_text", head_dim=8, intermediate_size_mlp=64, num_hidden_layers=4,
                 num_local_experts=2, num_experts_per_tok=1, interleave_moe_layer_step=2, no_rope_layer_interval=2,
                 attention_chunk_size=512)  # layers: chunked + RoPE + dense, full + NoPE + MoE, twice
    vision = {"hidden_size": 16, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 16, "patch_size": 4, "pixel_shuffle_ratio": 0.5, "vision_output_dim": 32,
              "projector_input_dim": 32, "projector_output_dim": 32}
    config = transformers.Llama4Config(
        vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<|patch|>"),
        boi_token_index=tok.convert_tokens_to_ids("<|image_start|>"),
        eoi_token_index=tok.convert_tokens_to_ids("<|image_end|>"),
    )
    return processor, _finish(transformers.Llama4ForConditionalGeneration(config), tok)


PHI4_SPECIALS = {"image_token": "<|endoftext10|>", "audio_token": "<|endoftext11|>"}  # ids 200010, 200011 there


def build_phi4_multimodal():
    """Phi-4-multimodal: its image processor hard-codes the 448 px crops of 14 px patches (256 global tokens), so the
    vision tower keeps that geometry, at width 16; a Phi-3 style decoder; a tiny audio encoder it builds anyway.

    Its image processor needs torchvision (it has no PIL backend).
    """
    tok = byte_level_fast_tokenizer(None, "<|endoftext|>", "<|endoftext|>", PHI4_SPECIALS)
    processor = transformers.Phi4MultimodalProcessor(
        image_processor=transformers.Phi4MultimodalImageProcessor(dynamic_hd=4),
        audio_processor=transformers.Phi4MultimodalFeatureExtractor(), tokenizer=tok)
    text = {k: v for k, v in _text(tok, "phi4_multimodal").items() if k != "model_type"}
    config = transformers.Phi4MultimodalConfig(
        **text, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 448, "patch_size": 14, "crop_size": 448, "image_token_id": tok.image_token_id},
        audio_config={"hidden_size": 16, "intermediate_size": 32, "num_blocks": 1, "num_attention_heads": 2,
                      "ext_pw_out_channel": 16, "depthwise_separable_out_channel": 16, "nemo_conv_channels": 16,
                      "audio_token_id": tok.audio_token_id},
    )
    from mimic.models.adapters import ADAPTERS

    model = transformers.Phi4MultimodalForCausalLM(config)
    model.set_attn_implementation(ADAPTERS["phi4_multimodal"].attn_implementation)  # as load_model loads it
    return processor, _finish(model, tok)


@dataclass(frozen=True)
class TinyFamily:
    name: str  # the adapter's name
    build: Callable[[], tuple]  # () -> (processor, model)
    requires: tuple[str, ...] = ()  # modules its real processor imports that the project does not depend on

    def missing(self) -> list[str]:
        """The modules in ``requires`` that are not installed."""
        import importlib.util

        return [m for m in self.requires if importlib.util.find_spec(m) is None]


FAMILIES: dict[str, TinyFamily] = {
    f.name: f
    for f in (
        TinyFamily("idefics", build_idefics),
        TinyFamily("idefics2", build_idefics2),
        TinyFamily("idefics3", build_idefics3),
        TinyFamily("llava", build_llava),
        TinyFamily("llava-interleave", build_llava_interleave),
        TinyFamily("llava-next", build_llava_next),
        TinyFamily("llava-onevision", build_llava_onevision),
        TinyFamily("qwen2-vl", build_qwen2_vl),
        TinyFamily("qwen2.5-vl", build_qwen2_5_vl),
        TinyFamily("qwen3-vl", build_qwen3_vl),
        TinyFamily("gemma3", build_gemma3),
        TinyFamily("smolvlm", build_smolvlm, requires=("num2words",)),
        TinyFamily("internvl", build_internvl),
        TinyFamily("mistral3", build_mistral3, requires=("torchvision",)),
        TinyFamily("pixtral-llava", build_pixtral_llava, requires=("torchvision",)),
        TinyFamily("llama4", build_llama4, requires=("torchvision",)),
        TinyFamily("phi4-multimodal", build_phi4_multimodal, requires=("torchvision",)),
    )
}


def tiny_family(name: str, seed: int = 0) -> LoadedModel:
    """A tiny random model of family ``name`` with its real processor, as a ``LoadedModel`` (fp32, CPU)."""
    if name not in FAMILIES:
        raise KeyError(f"no tiny family {name!r}; known: {sorted(FAMILIES)}")
    missing = FAMILIES[name].missing()
    if missing:
        raise ImportError(f"tiny family {name!r}: its processor needs {', '.join(missing)} (pip install it)")
    torch.manual_seed(seed)
    processor, model = FAMILIES[name].build()
    return wrap_model(model, processor, name)
