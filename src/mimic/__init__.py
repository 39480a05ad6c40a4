"""MimIC: Mimic In-Context Learning for multimodal tasks (Jiang et al., CVPR 2025).

Learned per-head shift vectors with a query-dependent magnitude, attached to any
transformers model through its attention interface.
"""

from mimic.adapters import ModelAdapter, adapter_for, register_adapter
from mimic.attach import attach, count_parameters, detach, load, read_config, save
from mimic.config import MimicConfig
from mimic.recording import HiddenStateRecorder
from mimic.shift import MimicShift

__all__ = [
    "HiddenStateRecorder",
    "MimicConfig",
    "MimicShift",
    "ModelAdapter",
    "adapter_for",
    "attach",
    "count_parameters",
    "detach",
    "load",
    "read_config",
    "register_adapter",
    "save",
]
__version__ = "0.1.0"
