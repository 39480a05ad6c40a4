"""Model adapters: per architecture, where the decoder layers are and how prompts are built.

MimIC enters every model through transformers' attention interface, so an adapter only
has to say which modules are the decoder self-attention layers that MimIC targets (the
vision tower, the perceiver/resampler and Idefics' gated cross-attention are not), where
each layer's MLP is, and how a prompt of interleaved text and images becomes model
inputs: how an image is written in the text for that family's processor, and whether
the processor takes the images per prompt or one by one. Adding an architecture is one
``register_adapter(ModelAdapter(...))`` call; ``tests/test_families.py`` runs every
registered family through its real processor.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace

import torch
from torch import nn

from mimic.models.prompts import PromptFormat

Segment = object  # a ``str`` or a ``PIL.Image.Image``


def _get_path(root: object, path: str) -> object:
    obj = root
    for part in filter(None, path.split(".")):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class ModelAdapter:
    """How MimIC finds its way around one architecture family.

    name: the family's name (reports, errors, ``README`` table).
    model_types: the ``config.model_type`` values it serves.
    layers_path: dotted path from the top model to the decoder layers' ``ModuleList``.
    text_config_path: dotted path from the top config to the text config (``""``: the top one).
    attn_name, mlp_name: each decoder layer's self-attention and MLP attribute.
    image_placeholder: how one image is written in the prompt text for the family's
        processor, which expands it into the image tokens (``None``: a text-only model);
        ``{image_token}`` in it stands for the processor's ``image_token`` (Phi-4-multimodal
        takes its tokenizer's).
    interleaved_processor: the processor takes each prompt as a list of strings and
        images (Idefics v1) instead of a text with placeholders plus the images.
    images_one_by_one: hand the processor a flat list of images, so it treats each as a
        single image (LLaVA-OneVision: encoded the same with or without demonstrations).
    prompt_format: how demonstrations and queries are written for this family.
    position_ids: ``encode`` adds position ids counted from each row's first real token,
        as ``generate()`` counts them under left padding. MimIC's magnitude reads the
        query after RoPE, so the training forward must see the positions decoding will
        see. ``False`` where the model derives its own from the mask (Qwen-VL's m-RoPE).
    text_only_inputs: extra inputs the model needs for a text-only forward (``attach``'s
        dry run), as a function of the model and ``input_ids``.
    attn_implementation: what ``load_model`` asks for instead of ``"sdpa"`` everywhere, per sub-config
        (transformers' dict form), where a part of the model must not run under SDPA.
    processor_classes: processor class names that choose this adapter whatever the model type
        (a Pixtral checkpoint saved as ``llava`` takes ``[IMG]``, not ``<image>``): the
        processor decides how an image is written; the model type only where the layers are.
    """

    name: str
    model_types: tuple[str, ...]
    layers_path: str
    text_config_path: str = ""
    attn_name: str = "self_attn"
    mlp_name: str = "mlp"
    image_placeholder: str | None = "<image>"
    interleaved_processor: bool = False
    images_one_by_one: bool = False
    prompt_format: PromptFormat = field(default_factory=PromptFormat)
    position_ids: bool = True
    text_only_inputs: Callable[[nn.Module, torch.Tensor], dict] | None = None
    processor_classes: tuple[str, ...] = ()
    attn_implementation: dict | None = None

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
        Every input the processor returns (``pixel_values``, ``image_grid_thw``,
        ``image_sizes``, ``pixel_attention_mask``, ``mm_token_type_ids`` ...) is kept, so
        that ``model(**inputs)`` gets all of them, plus ``position_ids`` (see the class).
        """
        inputs = self._encode(processor, prompts, **kwargs)
        if self.position_ids:
            inputs["position_ids"] = positions_from_mask(inputs["attention_mask"])
        return inputs

    def placeholder_for(self, processor) -> str | None:
        """How one image is written for ``processor`` (``image_placeholder``, its ``{image_token}`` filled)."""
        if self.image_placeholder is None or "{image_token}" not in self.image_placeholder:
            return self.image_placeholder
        token = getattr(processor, "image_token", None)
        if token is None:
            raise ValueError(f"model family {self.name!r} writes images as its processor's image_token, but "
                             f"{type(processor).__name__} has none")
        return self.image_placeholder.replace("{image_token}", token)

    def _encode(self, processor, prompts, **kwargs):
        tokenizer = getattr(processor, "tokenizer", processor)
        tokenizer.padding_side = "left"
        kwargs.setdefault("padding", True)
        kwargs.setdefault("return_tensors", "pt")
        has_image = any(not isinstance(seg, str) for prompt in prompts for seg in prompt)
        if has_image and self.image_placeholder is None:
            raise ValueError(f"model family {self.name!r} takes no images, but a prompt holds one; "
                             "use a text-only task or a multimodal model")
        if self.interleaved_processor:
            return processor(text=[list(p) for p in prompts], **kwargs)
        placeholder = self.placeholder_for(processor)
        texts, images = [], []
        for prompt in prompts:
            parts, row_images = [], []
            for seg in prompt:
                if isinstance(seg, str):
                    parts.append(seg)
                else:
                    parts.append(placeholder)
                    row_images.append(seg)
            texts.append("".join(parts))
            images.append(row_images)
        if not has_image:
            return processor(text=texts, **kwargs) if processor is not tokenizer else tokenizer(texts, **kwargs)
        if self.images_one_by_one:
            images = [img for row in images for img in row]
        return processor(text=texts, images=images, **kwargs)


class ConfigMixin:
    """``to_dict`` / ``to_json`` / ``from_dict`` / ``from_json`` for a config dataclass (unknown keys refused)."""

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys are {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))


SHAPE_FIELDS = ("num_layers", "num_heads", "num_kv_heads", "head_dim", "hidden_size")


@dataclass(kw_only=True)
class ModelShapes(ConfigMixin):
    """The base model a method's config was completed for, saved with its weights (every method config
    inherits these fields; ``attach`` fills them: :func:`complete_for`). ``extra``: free metadata."""

    base_model: str | None = None
    model_type: str | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    hidden_size: int | None = None
    extra: dict = field(default_factory=dict)


def complete_for(config, model: nn.Module):
    """``config`` (a :class:`ModelShapes` dataclass) with ``model``'s name, type and text-stack shapes filled
    in, and its ``layers`` (if it has them) checked and sorted (None: every decoder layer)."""
    shapes = adapter_for(model).shapes(model)
    changes = {key: shapes[key] for key in SHAPE_FIELDS}
    changes["model_type"] = model.config.model_type
    changes["base_model"] = config.base_model or getattr(model.config, "_name_or_path", None) or None
    if "layers" in {f.name for f in fields(config)}:
        layers = sorted({int(i) for i in config.layers}) if config.layers is not None else None
        layers = list(range(shapes["num_layers"])) if layers is None else layers
        bad = [i for i in layers if not 0 <= i < shapes["num_layers"]]
        if bad:
            raise ValueError(f"{type(config).__name__}.layers {bad} out of range: the model has "
                             f"{shapes['num_layers']} decoder layers")
        changes["layers"] = layers
    return replace(config, **changes)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids as ``generate()`` makes them: 0 at each row's first real token, 0 on the padding."""
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def sequence_output(output, args) -> tuple[torch.Tensor, Callable[[torch.Tensor], object]]:
    """A module's (first) output as ``[batch, positions, hidden]``, and how to put an edited one back.

    Llama 4's mixture-of-experts MLP returns ``(out, router_logits)`` with ``out`` flattened to
    ``[batch * positions, hidden]``; it is viewed in the shape of the module's input (``args[0]``).
    """
    first = output[0] if isinstance(output, tuple) else output
    flat = first.dim() == 2 and bool(args) and torch.is_tensor(args[0]) and args[0].dim() == 3
    seq = first.view(*args[0].shape[:2], first.shape[-1]) if flat else first

    def put_back(edited: torch.Tensor):
        edited = edited.reshape(first.shape) if flat else edited
        return (edited, *output[1:]) if isinstance(output, tuple) else edited

    return seq, put_back


ADAPTERS: dict[str, ModelAdapter] = {}
PROCESSOR_ADAPTERS: dict[str, ModelAdapter] = {}  # processor class name -> the adapter it chooses


def register_adapter(adapter: ModelAdapter) -> ModelAdapter:
    for model_type in adapter.model_types:
        ADAPTERS[model_type] = adapter
    for name in adapter.processor_classes:
        PROCESSOR_ADAPTERS[name] = adapter
    return adapter


def _idefics_text_only(model: nn.Module, input_ids: torch.Tensor) -> dict:
    """Idefics v1 always cross-attends to images: give it one blank perceiver output, attended by no token."""
    cfg = model.config
    b, n = input_ids.shape
    latents = cfg.perceiver_config.resampler_n_latents
    param = next(model.parameters())
    blank = torch.zeros(b, latents, cfg.vision_config.embed_dim, dtype=param.dtype, device=param.device)
    return {
        "perceiver_embeddings" if cfg.use_resampler else "image_encoder_embeddings": blank,
        "image_attention_mask": torch.zeros(b, n, 1, dtype=torch.long, device=input_ids.device),
    }


register_adapter(
    ModelAdapter(
        name="idefics",
        model_types=("idefics",),
        layers_path="model.layers",
        interleaved_processor=True,
        text_only_inputs=_idefics_text_only,
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
        name="llava",  # LLaVA-1.5, LLaVA-NeXT, llava-interleave (a Qwen2 decoder): <image> expands per image
        model_types=("llava", "llava_next"),
        layers_path="model.language_model.layers",
        text_config_path="text_config",
    )
)
register_adapter(
    ModelAdapter(
        name="llava-onevision",
        model_types=("llava_onevision",),
        layers_path="model.language_model.layers",
        text_config_path="text_config",
        # The processor encodes the images of a multi-image prompt at base resolution and a lone image
        # in tiles, so the query image would differ with and without demonstrations; one by one, every
        # image is tiled the same way in every prompt.
        images_one_by_one=True,
    )
)
register_adapter(
    ModelAdapter(
        name="qwen-vl",  # Qwen2-VL, Qwen2.5-VL, Qwen3-VL: <|image_pad|> expands per image (m-RoPE positions)
        model_types=("qwen2_vl", "qwen2_5_vl", "qwen3_vl"),
        layers_path="model.language_model.layers",
        text_config_path="text_config",
        image_placeholder="<|vision_start|><|image_pad|><|vision_end|>",
        position_ids=False,  # m-RoPE: the model computes 3-D positions from the mask and the image grids
    )
)
register_adapter(
    ModelAdapter(
        name="gemma3",
        model_types=("gemma3",),
        layers_path="model.language_model.layers",
        text_config_path="text_config",
        image_placeholder="<start_of_image>",
        # The processor writes "\n\n" before and after every image: a "\n" after each demonstration
        # would merge with it into one "\n\n\n" token, and the query would tokenize differently
        # after demonstrations than alone.
        prompt_format=PromptFormat(separator=""),
    )
)
register_adapter(
    ModelAdapter(
        name="internvl",  # InternVL 2.5 / 3 (Qwen2 decoder): <IMG_CONTEXT> becomes <img>, its tokens per tile, </img>
        model_types=("internvl",),
        layers_path="model.language_model.layers",
        text_config_path="text_config",
        image_placeholder="<IMG_CONTEXT>",
    )
)
register_adapter(
    ModelAdapter(
        name="pixtral",  # Mistral 3 (Mistral-Small-3.1) and Pixtral saved as llava: [IMG] becomes rows ending
        model_types=("mistral3",),  # in [IMG_BREAK], the last in [IMG_END]
        layers_path="model.language_model.layers",
        text_config_path="text_config",
        image_placeholder="[IMG]",
        processor_classes=("PixtralProcessor",),
    )
)
register_adapter(
    ModelAdapter(
        name="llama4",  # Llama 4 Scout / Maverick: <|image|> becomes <|image_start|>, <|patch|> tiles, <|image_end|>
        model_types=("llama4",),
        layers_path="language_model.model.layers",
        text_config_path="text_config",
        mlp_name="feed_forward",  # a dense MLP or a mixture of experts (flat output: sequence_output)
        image_placeholder="<|image|>",
    )
)
register_adapter(
    ModelAdapter(
        name="phi4-multimodal",  # Phi-4-multimodal: the tokenizer's image token, repeated per crop token
        model_types=("phi4_multimodal",),
        layers_path="model.layers",
        image_placeholder="{image_token}",
        # Its vision attention is marked causal: under SDPA a batch without a padded crop runs it causally, one
        # with a padded crop bidirectionally, so an image's features would depend on the others in the batch
        # (transformers 5.25). Eager attention is bidirectional always.
        attn_implementation={"": "sdpa", "vision_config": "eager"},
    )
)
register_adapter(
    ModelAdapter(
        name="causal-lm",
        model_types=("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3"),
        layers_path="model.layers",
        image_placeholder=None,
    )
)

register_adapter(
    ModelAdapter(
        name="falcon",  # rotary Falcon (MHA, multi-query, or grouped keys); ALiBi Falcon is refused by attach
        model_types=("falcon",),
        layers_path="transformer.h",
        attn_name="self_attention",
        image_placeholder=None,
    )
)


class UnsupportedModelError(ValueError):
    """A model type no adapter serves (a ``ValueError``: its message is one line, without ``KeyError``'s quotes)."""


def check_model_type(model_type: str | None) -> ModelAdapter:
    """The adapter of ``model_type``; else one line naming the supported model types."""
    if model_type not in ADAPTERS:
        raise UnsupportedModelError(
            f"no MimIC adapter for model_type {model_type!r}; supported: {', '.join(sorted(ADAPTERS))} "
            "(add one with mimic.models.adapters.register_adapter)"
        )
    return ADAPTERS[model_type]


def adapter_for(model: nn.Module, processor=None) -> ModelAdapter:
    """The adapter of ``model``'s type, or the one its ``processor``'s class chooses (``processor_classes``)."""
    adapter = check_model_type(getattr(model.config, "model_type", None))
    routed = PROCESSOR_ADAPTERS.get(type(processor).__name__) if processor is not None else None
    if routed is None or routed is adapter:
        return adapter
    if routed.layers_path != adapter.layers_path or routed.text_config_path != adapter.text_config_path:
        raise ValueError(f"{type(processor).__name__} chooses the {routed.name!r} adapter, whose decoder layers "
                         f"({routed.layers_path}) are not where {model.config.model_type!r} keeps them "
                         f"({adapter.layers_path})")
    return routed
