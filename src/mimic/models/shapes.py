"""Text-stack shapes of the models in the paper, so parameter counts need no download."""

from __future__ import annotations

KNOWN_SHAPES = {
    # LLaMA-7B decoder of HuggingFaceM4/idefics-9b
    "idefics-9b": {"model_type": "idefics", "num_layers": 32, "num_heads": 32, "num_kv_heads": 32, "head_dim": 128,
                   "hidden_size": 4096},
    # Mistral-7B decoder of HuggingFaceM4/idefics2-8b-base
    "idefics2-8b-base": {
        "model_type": "idefics2",
        "num_layers": 32,
        "num_heads": 32,
        "num_kv_heads": 8,
        "head_dim": 128,
        "hidden_size": 4096,
    },
}
