"""MimIC (Jiang et al., CVPR 2025): a learned shift per head with a query-dependent magnitude.

For head ``h`` of layer ``l`` the head output before ``o_proj`` becomes
``SA(q, K, V) + sigmoid(w[l,h].q + b[l,h] - log Z2) * v[l,h]`` (:class:`mimic.shift.MimicShift`,
entering through the attention interface, :mod:`mimic.api`). Trained with
``align_weight * MSE(teacher states) + ce_weight * CE(answer)``. Its ablations are switches of
the same config (``insert``, ``per_head``, ``query_dependent``) or of its training
(``align_weight: 0``, ``ce_weight: 0``): every one is a ``methods:`` entry of type ``mimic``.

Parameters: ``L*H*d`` (v) + ``L*H*d`` (w, query-dependent only) + ``L*H`` (b; ``L`` per layer).
"""

from __future__ import annotations

from mimic import api
from mimic.config import MimicConfig
from mimic.methods.base import Installed, Method, register
from mimic.shift import MimicShift


class Mimic(Method):
    type = "mimic"
    config_class = MimicConfig
    section = "shift"

    def complete(self, config: MimicConfig, model) -> MimicConfig:
        from mimic.adapters import adapter_for

        api.check_supported(model)  # before anything else, as mimic.api.attach does
        return api._complete(config, model, adapter_for(model))

    def install(self, model, config: MimicConfig, module, verify: bool):
        shift = module if module is not None else build_shift(config, model)
        api.attach(model, config, shift=shift, freeze_base=False, verify=verify)
        return shift, Installed(undo=[lambda: api.detach(model)], switches=[lambda: api.disabled(model)])

    def counts(self, config: MimicConfig) -> dict[str, int]:
        return {"trainable": api.count_parameters(config)["total"], "fitted": 0}


def build_shift(config: MimicConfig, model) -> MimicShift:
    shift = MimicShift(config, len(config.layers), config.num_heads, config.head_dim)
    return shift.to(next(model.parameters()).device)


register(Mimic())
