"""Every method of the comparison, on one engine: one module per method, a registry by ``type:``.

===================  ==========================================================  ==================
type                 what it learns or fits                                       how it enters
===================  ==========================================================  ==================
``mimic``            per-head shift, query-dependent magnitude (and ablations)   attention interface
``live``             vector + scale per layer, norm-preserving                   MLP forward hook
``task-vector``      ICL state of the last token at one layer (fitted)           layer forward hook
``function-vector``  summed mean outputs of causal heads (fitted)                layer forward hook
``i2cl``             fused context vectors, learned coefficients per layer       attn/MLP hooks
``hificl``           low-rank virtual key/value tokens per head                  attention interface
``lora``             low-rank updates of q, k, v, o (peft)                       peft layers
``mimic-lora``       MimIC and LoRA together                                     both
===================  ==========================================================  ==================

``attach`` / ``detach`` / ``disabled`` / ``count_parameters`` (:mod:`mimic.methods.base`) and
``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` (:mod:`mimic.methods.pretrained`) work for
all of them; the one training loop is :func:`mimic.training.train`.
"""

from mimic.methods import function_vector, hificl, i2cl, live, lora, mimic, mimic_lora, task_vector  # noqa: F401
from mimic.methods.base import (
    METHODS,
    Method,
    attach,
    attached,
    config_from_entry,
    count_parameters,
    detach,
    disabled,
    method_for_type,
    method_of,
    register,
)
from mimic.methods.pretrained import from_pretrained, push_to_hub, read_config, save_pretrained

__all__ = [
    "METHODS",
    "Method",
    "attach",
    "attached",
    "config_from_entry",
    "count_parameters",
    "detach",
    "disabled",
    "from_pretrained",
    "method_for_type",
    "method_of",
    "push_to_hub",
    "read_config",
    "register",
    "save_pretrained",
]
