"""Loading models and processors from a hub id or a local path."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

from mimic.models.adapters import ModelAdapter, adapter_for, check_model_type
from mimic.models.generation import eos_token_ids
from mimic.models.prompts import PromptFormat, preset_format

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def model_class(config):
    """The transformers class named by the config's ``architectures`` (else the Auto class)."""
    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    try:
        return AutoModelForImageTextToText._model_mapping[type(config)]
    except KeyError:
        return AutoModelForCausalLM._model_mapping[type(config)]


@dataclass
class LoadedModel:
    name: str
    model: torch.nn.Module
    processor: object
    adapter: ModelAdapter
    prompt_format: PromptFormat
    device: torch.device
    stop_token_ids: list[int]
    pad_token_id: int

    @property
    def tokenizer(self):
        """The processor's tokenizer (or the processor itself, for text-only models)."""
        return getattr(self.processor, "tokenizer", self.processor)


def pick_device(requested: str | None) -> torch.device:
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def load_model(name: str, source: str, dtype: str = "float32", device: str | None = "auto", prompt: str = "clean",
               processor_kwargs: dict | None = None) -> LoadedModel:
    """Load a model and its processor from ``source`` (a local directory or a hub id).

    prompt: the prompt preset (:data:`mimic.models.prompts.PRESETS`); processor_kwargs: passed to
    ``AutoProcessor.from_pretrained`` (e.g. ``do_image_splitting: false`` for Idefics2, as the paper).
    """
    if dtype not in DTYPES:
        raise ValueError(f"models.{name}.dtype = {dtype!r}; valid: {sorted(DTYPES)}")
    try:
        config = transformers.AutoConfig.from_pretrained(source)
    except OSError as err:
        raise OSError(
            f"model {name!r}: cannot load {source!r} ({err.__class__.__name__}); set models.{name}.path in "
            "params.yaml to a local copy, or make the hub reachable"
        ) from err
    adapter = check_model_type(getattr(config, "model_type", None))  # before the weights: one line if unknown
    dev = pick_device(device)
    model = model_class(config).from_pretrained(source, dtype=DTYPES[dtype],
                                                attn_implementation=adapter.attn_implementation or "sdpa")
    model.to(dev).eval()
    processor = AutoProcessor.from_pretrained(source, **(processor_kwargs or {}))
    return wrap_model(model, processor, name, prompt)


def wrap_model(model, processor, name: str | None = None, prompt: str = "clean") -> LoadedModel:
    """A model and its processor (or tokenizer) already in memory, as the stages use them: its family's
    adapter, the prompt preset ``prompt``, its stop tokens (EOS and newlines) and pad token."""
    tokenizer = getattr(processor, "tokenizer", processor)
    stops = stop_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    adapter = adapter_for(model, processor)
    fmt = preset_format(prompt, adapter.name, adapter.prompt_format)
    device = next(model.parameters()).device
    return LoadedModel(name or getattr(model.config, "_name_or_path", "") or model.config.model_type, model,
                       processor, adapter, fmt, device, stops, pad)


NEWLINE_TOKENS = ("\n", "\n\n", "Ċ", "ĊĊ", "<0x0A>")  # plain, byte-level BPE, SentencePiece byte fallback


def stop_token_ids(model, tokenizer) -> list[int]:
    """The model's end-of-sequence ids plus its newline tokens: answers end at a line break."""
    stops = eos_token_ids(model)
    for token in NEWLINE_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is not None and token_id != tokenizer.unk_token_id and token_id not in stops:
            stops.append(token_id)
    return stops
