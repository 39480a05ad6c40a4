"""Model adapters: per architecture, where the decoder layers are and how prompts are built.

MimIC enters every model through transformers' attention interface, so an adapter only
has to say which modules are the decoder self-attention layers that MimIC targets (the
vision tower, the perceiver/resampler and Idefics' gated cross-attention are not), where
each layer's MLP is, and how a prompt of interleaved text and images becomes model
inputs. Adding an architecture is one ``register_adapter(ModelAdapter(...))`` call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

Segment = object  # a ``str`` or a ``PIL.Image.Image``


def _get_path(root: object, path: str) -> object:
    obj = root
    for part in filter(None, path.split(".")):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class ModelAdapter:
    name: str
    model_types: tuple[str, ...]
    layers_path: str  # dotted path from the top model to the decoder layers' ModuleList
    text_config_path: str = ""  # dotted path from the top config to the text config ("" = top)
    attn_name: str = "self_attn"
    mlp_name: str = "mlp"
    image_placeholder: str | None = "<image>"  # how an image is written in the prompt text
    interleaved_processor: bool = False  # the processor takes lists of text and images (Idefics v1)

    def text_config(self, model: nn.Module):
        return _get_path(model.config, self.text_config_path)

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        layers = _get_path(model, self.layers_path)
        if not isinstance(layers, nn.ModuleList):
            raise TypeError(f"{self.name}: {self.layers_path} is not a ModuleList of decoder layers")
        return layers

    def attention(self, model: nn.Module, layer: int) -> nn.Module:
        return getattr(self.decoder_layers(model)[layer], self.attn_name)

    def mlp(self, model: nn.Module, layer: int) -> nn.Module:
        return getattr(self.decoder_layers(model)[layer], self.mlp_name)

    def shapes(self, model: nn.Module) -> dict[str, int]:
        """Number of decoder layers, query heads, key/value heads and head size of the text stack."""
        cfg = self.text_config(model)
        heads = cfg.num_attention_heads
        return {
            "num_layers": len(self.decoder_layers(model)),
            "num_heads": heads,
            "num_kv_heads": getattr(cfg, "num_key_value_heads", None) or heads,
            "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
            "hidden_size": cfg.hidden_size,
        }

    def encode(self, processor, prompts: Sequence[Sequence[Segment]], **kwargs):
        """Turn a batch of prompts (each a list of strings and images) into model inputs.

        Padding goes on the left so that the query-and-answer tokens of every row end at
        the same position, which is what batched generation and teacher extraction need.
        """
        processor.tokenizer.padding_side = "left"
        kwargs.setdefault("padding", True)
        kwargs.setdefault("return_tensors", "pt")
        if self.interleaved_processor:
            return processor(prompts=[list(p) for p in prompts], **kwargs)
        texts, images = [], []
        for prompt in prompts:
            parts, row_images = [], []
            for seg in prompt:
                if isinstance(seg, str):
                    parts.append(seg)
                else:
                    parts.append(self.image_placeholder)
                    row_images.append(seg)
            texts.append("".join(parts))
            images.append(row_images)
        if any(images):
            return processor(text=texts, images=images, **kwargs)
        return processor(text=texts, **kwargs)


ADAPTERS: dict[str, ModelAdapter] = {}


def register_adapter(adapter: ModelAdapter) -> ModelAdapter:
    for model_type in adapter.model_types:
        ADAPTERS[model_type] = adapter
    return adapter


register_adapter(
    ModelAdapter(
        name="idefics",
        model_types=("idefics",),
        layers_path="model.layers",
        interleaved_processor=True,
    )
)
register_adapter(
    ModelAdapter(
        name="idefics2",
        model_types=("idefics2",),
        layers_path="model.text_model.layers",
        text_config_path="text_config",
    )
)
register_adapter(
    ModelAdapter(
        name="idefics3",
        model_types=("idefics3", "smolvlm"),
        layers_path="model.text_model.layers",
        text_config_path="text_config",
    )
)
register_adapter(
    ModelAdapter(
        name="causal-lm",
        model_types=("llama", "mistral", "qwen2", "qwen3", "gemma", "phi3"),
        layers_path="model.layers",
        image_placeholder=None,
    )
)


def adapter_for(model: nn.Module) -> ModelAdapter:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ADAPTERS:
        raise KeyError(
            f"no MimIC adapter for model_type {model_type!r}; known: {sorted(ADAPTERS)} "
            "(add one with mimic.adapters.register_adapter)"
        )
    return ADAPTERS[model_type]
