"""Every method of the comparison, on one engine: one module per method, a registry by ``type:``.

===================  ==========================================================  ==================
type                 what it learns or fits                                       how it enters
===================  ==========================================================  ==================
``mimic``            per-head shift, query-dependent magnitude (and ablations)   attention interface
``live``             vector + scale per layer, norm-preserving                   MLP forward hook
``task-vector``      ICL state of the last token at one layer (fitted)           layer forward hook
``function-vector``  summed mean outputs of causal heads (fitted)                layer forward hook
``mtv``              mean head outputs of many shots in REINFORCE-chosen heads     attention interface
``i2cl``             fused context vectors, learned coefficients per layer       attn/MLP hooks
``hificl``           low-rank virtual key/value tokens per head                  attention interface
``lora``             low-rank updates of q, k, v, o (peft)                       peft layers
``mimic-lora``       MimIC and LoRA together                                     both
``stave``            readout + context vector on the input embeddings            decoder input hooks
===================  ==========================================================  ==================

``attach`` / ``detach`` / ``disabled`` / ``count_parameters`` (:mod:`mimic.methods.base`) and
``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` (:mod:`mimic.methods.pretrained`) work for
all of them; the one training loop is :func:`mimic.training.loop.train`.

Importing this package is light (``mimic.methods.catalog`` needs no torch); the names below load
:mod:`mimic.methods.base`, which registers every method of the catalog, on first use.
"""

from importlib import import_module

_BASE = ("METHODS", "Method", "attach", "attached", "config_from_entry", "count_parameters", "detach", "disabled",
         "method_for_type", "method_of", "register")
_PRETRAINED = ("from_pretrained", "push_to_hub", "read_config", "save_pretrained")
__all__ = sorted(_BASE + _PRETRAINED)


def __getattr__(name: str):
    if name in _BASE:
        return getattr(import_module("mimic.methods.base"), name)
    if name in _PRETRAINED:
        return getattr(import_module("mimic.methods.pretrained"), name)
    raise AttributeError(f"module 'mimic.methods' has no attribute {name!r}")


def __dir__():
    return __all__
