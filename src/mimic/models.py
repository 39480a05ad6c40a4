"""Loading models and processors from a hub id or a local path."""

from __future__ import annotations

import transformers
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText


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
