"""MimIC: Mimic In-Context Learning for multimodal tasks (Jiang et al., CVPR 2025).

Learned per-head shift vectors with a query-dependent magnitude, attached to any
transformers model through its attention interface; the other methods of the comparison
(LIVE, Task / Function Vector, I2CL, HiFICL, LoRA) attach, save and load the same way
(``mimic.methods``). The public names below are imported lazily, so that
``import mimic.metrics`` (or ``mimic report``) does not import torch.
"""

from importlib import import_module

_EXPORTS = {
    "ModelAdapter": "mimic.models.adapters",
    "adapter_for": "mimic.models.adapters",
    "register_adapter": "mimic.models.adapters",
    "attach": "mimic.methods",
    "count_parameters": "mimic.methods",
    "detach": "mimic.methods",
    "disabled": "mimic.methods",
    "from_pretrained": "mimic.methods",
    "push_to_hub": "mimic.methods",
    "read_config": "mimic.methods",
    "save_pretrained": "mimic.methods",
    "train": "mimic.training.learn",
    "MimicConfig": "mimic.shift.config",
    "HiddenStateRecorder": "mimic.models.hidden_states",
    "MimicShift": "mimic.shift",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mimic' has no attribute {name!r}")


def __dir__():
    return __all__
