"""MimIC (Jiang et al., CVPR 2025): a learned shift per head with a query-dependent magnitude.

For head ``h`` of layer ``l`` the head output before ``o_proj`` becomes
``SA(q, K, V) + sigmoid(w[l,h].q + b[l,h] - log Z2) * v[l,h]`` (:class:`mimic.shift.MimicShift`,
entering through the attention interface, :mod:`mimic.shift.install`). Trained with
``align_weight * MSE(teacher states) + ce_weight * CE(answer)``. Its ablations are switches of
the same config (``insert``, ``per_head``, ``query_dependent``) or of its training
(``align_weight: 0``, ``ce_weight: 0``): every one is a ``methods:`` entry of type ``mimic``.

Parameters: ``L*H*d`` (v) + ``L*H*d`` (w, query-dependent only) + ``L*H`` (b; ``L`` per layer).
"""

from __future__ import annotations

from mimic.methods.base import Installed, Method, register
from mimic.shift import install as shift_install
from mimic.shift.config import MimicConfig
from mimic.shift.module import MimicShift, count_shift_parameters


class Mimic(Method):
    type = "mimic"
    config_class = MimicConfig

    def complete(self, config: MimicConfig, model) -> MimicConfig:
        shift_install.check_supported(model)  # before the shapes: a refused model is named first
        return shift_install.complete(config, model)

    def install(self, model, config: MimicConfig, module, verify: bool):
        shift = module if module is not None else build_shift(config, model)
        shift_install.install(model, shift, config.layers, config.insert, verify)
        return shift, Installed(undo=[lambda: shift_install.uninstall(model)],
                                switches=[lambda: shift_install.switched_off(model)])

    def counts(self, config: MimicConfig) -> dict[str, int]:
        return {"trainable": count_shift_parameters(config)["total"], "fitted": 0}


def build_shift(config: MimicConfig, model) -> MimicShift:
    shift = MimicShift(config, len(config.layers), config.num_heads, config.head_dim)
    return shift.to(next(model.parameters()).device)


register(Mimic())
