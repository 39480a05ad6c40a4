"""Tiny random models built from configs, for tests and the offline demo.

Each builder returns a model in the real transformers architecture with small sizes, so
that the whole MimIC code path (attention interface, masks, caches) runs on a laptop CPU.
"""

from __future__ import annotations

import torch
from transformers import (
    Idefics2Config,
    Idefics2ForConditionalGeneration,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    IdeficsConfig,
    IdeficsForVisionText2Text,
)

VOCAB = 128
IMAGE_SIZE = 16
PATCH = 8


def tiny_idefics(seed: int = 0, layers: int = 2, heads: int = 4, hidden: int = 32, vocab_size: int = VOCAB):
    """Idefics (v1): LLaMA decoder with gated cross-attention to a perceiver over CLIP features.

    Token ids ``vocab_size`` and ``vocab_size + 1`` are the two additional (image) tokens.
    """
    torch.manual_seed(seed)
    config = IdeficsConfig(
        vocab_size=vocab_size,
        additional_vocab_size=2,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        cross_layer_interval=1,
        use_resampler=True,
        freeze_text_layers=False,
        freeze_vision_layers=False,
        alpha_initializer="ones",
        vision_config={
            "embed_dim": 16,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
        },
        perceiver_config={
            "use_resampler": True,
            "resampler_n_latents": 3,
            "resampler_depth": 1,
            "resampler_n_heads": 2,
            "resampler_head_dim": 8,
        },
    )
    model = IdeficsForVisionText2Text(config).eval()
    # Open the tanh gates part-way so that the cross-attention to the images really matters.
    with torch.no_grad():
        for block in model.model.gated_cross_attn_layers:
            block.alpha_cross_attn.fill_(0.5)
            block.alpha_dense.fill_(0.5)
    return model


def tiny_idefics2(
    seed: int = 0, layers: int = 2, heads: int = 4, kv_heads: int = 2, hidden: int = 32, sliding_window=None
):
    """Idefics2: SigLIP-style encoder, perceiver connector, Mistral decoder (GQA, optional sliding window)."""
    torch.manual_seed(seed)
    config = Idefics2Config(
        image_token_id=VOCAB - 1,
        text_config={
            "model_type": "mistral",
            "vocab_size": VOCAB,
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "sliding_window": sliding_window,
            "pad_token_id": 0,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH,
        },
        perceiver_config={
            "hidden_size": hidden,
            "resampler_n_latents": 3,
            "resampler_depth": 1,
            "resampler_n_heads": 2,
            "resampler_head_dim": 8,
            "num_key_value_heads": 1,
        },
    )
    return Idefics2ForConditionalGeneration(config).eval()


def tiny_idefics3(seed: int = 0, layers: int = 2, heads: int = 4, kv_heads: int = 2, hidden: int = 32):
    """Idefics3 / SmolVLM: SigLIP-style encoder, pixel-shuffle connector, LLaMA decoder (GQA)."""
    torch.manual_seed(seed)
    config = Idefics3Config(
        image_token_id=VOCAB - 1,
        scale_factor=2,
        text_config={
            "model_type": "llama",
            "vocab_size": VOCAB,
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "pad_token_id": 0,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH,
        },
    )
    return Idefics3ForConditionalGeneration(config).eval()


def _image_tokens(model) -> tuple[int, int]:
    """(token id, count) that stand for one image in the text of ``model``."""
    cfg = model.config
    if cfg.model_type == "idefics":
        return VOCAB, 1  # first additional-vocabulary token; Idefics v1 routes images by image_attention_mask
    if cfg.model_type == "idefics2":
        return cfg.image_token_id, cfg.perceiver_config.resampler_n_latents
    per_side = cfg.vision_config.image_size // cfg.vision_config.patch_size
    return cfg.image_token_id, per_side**2 // cfg.scale_factor**2


def _collate(model, rows: list[list[tuple[torch.Tensor, list[int]]]]) -> dict:
    """Left-pad rows of (image, text tokens) chunks into model inputs."""
    image_id, n_image_tokens = _image_tokens(model)
    seqs, owners, images = [], [], []
    for chunks in rows:
        ids, owner = [], []
        for j, (_, text) in enumerate(chunks):
            ids += [image_id] * n_image_tokens + text
            owner += [j] * (n_image_tokens + len(text))
        seqs.append(ids)
        owners.append(owner)
        images.append([img for img, _ in chunks])
    length, n_img = max(map(len, seqs)), max(map(len, images))
    b = len(rows)
    input_ids = torch.zeros(b, length, dtype=torch.long)
    attention_mask = torch.zeros(b, length, dtype=torch.long)
    pixel_values = torch.zeros(b, n_img, 3, IMAGE_SIZE, IMAGE_SIZE)
    image_attention_mask = torch.zeros(b, length, n_img, dtype=torch.long)
    for i, (ids, owner, imgs) in enumerate(zip(seqs, owners, images, strict=True)):
        pad = length - len(ids)
        input_ids[i, pad:] = torch.tensor(ids)
        attention_mask[i, pad:] = 1
        for j, img in enumerate(imgs):
            pixel_values[i, j] = img
        for t, j in enumerate(owner):
            image_attention_mask[i, pad + t, j] = 1  # each token sees the image of its own chunk
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}
    if model.config.model_type == "idefics":
        inputs["image_attention_mask"] = image_attention_mask
    return inputs


def random_icl_batch(model, batch_size: int = 3, shots: int = 2, pad: bool = True, seed: int = 0):
    """Random ICL and zero-shot inputs for one batch: (icl_inputs, zero_shot_inputs, query_lengths).

    Every row is ``shots`` demonstrations (image + text) followed by a query (image +
    text); the zero-shot row is the query alone. With ``pad`` the rows have different
    lengths and are left-padded; without, every row has the same length (no padding).
    """
    g = torch.Generator().manual_seed(seed)
    image_id, n_image_tokens = _image_tokens(model)

    def chunk(n_text: int):
        image = torch.rand(3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
        return image, torch.randint(1, VOCAB - 2, (n_text,), generator=g).tolist()

    def length(base: int) -> int:
        return base + (int(torch.randint(0, 4, (1,), generator=g)) if pad else 0)

    icl_rows, zs_rows, query_lengths = [], [], []
    for _ in range(batch_size):
        demos = [chunk(length(4)) for _ in range(shots)]
        query = chunk(length(3))
        icl_rows.append(demos + [query])
        zs_rows.append([query])
        query_lengths.append(n_image_tokens + len(query[1]))
    return _collate(model, icl_rows), _collate(model, zs_rows), query_lengths
