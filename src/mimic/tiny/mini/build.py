"""Build the miniature model's tokenizer, processor and (untrained) model from configs.

The tokenizer is a word-level ``tokenizers`` model over the synthetic suite's vocabulary;
the processor is a real ``Idefics2Processor``; the model is
``Idefics2ForConditionalGeneration`` with a small config. Saved with ``save_pretrained``,
all three load through exactly the code path of ``HuggingFaceM4/idefics2-8b-base``.
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    Idefics2Config,
    Idefics2ForConditionalGeneration,
    Idefics2ImageProcessorPil,
    Idefics2Processor,
    PreTrainedTokenizerFast,
)

from mimic.data import synthetic as syn
from mimic.models.prompts import PromptFormat

SPECIAL = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}
IMAGE_TOKENS = ("<fake_token_around_image>", "<image>", "<end_of_utterance>")
NEWLINE = "\n"
IMAGE_SEQ_LEN = 8  # perceiver latents per image

PRE_TOKENIZER = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])

MODEL_CONFIG = {
    "text_config": {
        "model_type": "mistral",
        "hidden_size": 128,
        "intermediate_size": 384,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "sliding_window": None,
        "tie_word_embeddings": True,  # copying a word from the context needs its input and output vectors alike
    },
    "vision_config": {
        "hidden_size": 96,
        "intermediate_size": 192,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": syn.IMAGE_SIZE,
        "patch_size": 8,
    },
    "perceiver_config": {
        "hidden_size": 128,
        "resampler_n_latents": IMAGE_SEQ_LEN,
        "resampler_depth": 1,
        "resampler_n_heads": 4,
        "resampler_head_dim": 32,
        "num_key_value_heads": 2,
    },
}


def _suite_texts() -> list[str]:
    """Every string the suite and the prompt format can produce (the vocabulary's source)."""
    fmt = PromptFormat()
    texts = [fmt.vqa, fmt.caption, *syn.GENERIC_QUESTIONS]
    texts += [q for qs in syn.EXPLICIT_QUESTIONS.values() for q in qs]
    texts += [s for options in syn.SYNONYMS.values() for s in options]
    texts += [str(i) for i in range(10)] + list(syn.NUMBER_WORDS.values()) + list(syn.NONCE_WORDS)
    for color in syn.COLORS:
        for shape in syn.SHAPES:
            for count in syn.COUNTS:
                for size in syn.SIZES:
                    for bg in syn.BACKGROUNDS:
                        scene = syn.Scene(color, shape, size, count, bg, ())
                        texts += [syn.caption(scene, style, v) for style in syn.CAPTION_STYLES for v in range(9)]
    return texts


def build_vocab() -> list[str]:
    words = set()
    for text in _suite_texts():
        words.update(w for w, _ in PRE_TOKENIZER.pre_tokenize_str(text))
    return [*SPECIAL.values(), *IMAGE_TOKENS, NEWLINE, *sorted(words)]


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(build_vocab())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk"]))
    tok.pre_tokenizer = PRE_TOKENIZER
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL['bos']} $A", special_tokens=[(SPECIAL["bos"], vocab[SPECIAL["bos"]])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL["bos"],
        eos_token=SPECIAL["eos"],
        unk_token=SPECIAL["unk"],
        pad_token=SPECIAL["pad"],
        padding_side="left",
        model_max_length=2048,
    )
    fast.add_tokens([NEWLINE])
    fast.add_special_tokens({"additional_special_tokens": list(IMAGE_TOKENS)})
    return fast


def build_processor(tokenizer: PreTrainedTokenizerFast | None = None) -> Idefics2Processor:
    tokenizer = tokenizer or build_tokenizer()
    image_processor = Idefics2ImageProcessorPil(
        size={"shortest_edge": syn.IMAGE_SIZE, "longest_edge": syn.IMAGE_SIZE},
        do_image_splitting=False,
        do_convert_rgb=True,
    )
    return Idefics2Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=IMAGE_SEQ_LEN)


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> Idefics2ForConditionalGeneration:
    import torch

    torch.manual_seed(seed)
    text = dict(MODEL_CONFIG["text_config"])
    text.update(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = Idefics2Config(
        text_config=text,
        vision_config=MODEL_CONFIG["vision_config"],
        perceiver_config=MODEL_CONFIG["perceiver_config"],
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=MODEL_CONFIG["text_config"]["tie_word_embeddings"],
    )
    model = Idefics2ForConditionalGeneration(config)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(NEWLINE)]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model
