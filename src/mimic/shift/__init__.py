"""MimIC's whole math: the config, the learned shift, the attention hook, log Z2, the checks, install.

For head ``h`` of decoder layer ``l`` the head output before ``o_proj`` becomes
``SA(q, K, V) + sigmoid(w[l,h].q + b[l,h] - log Z2) * v[l,h]``, with ``log Z2`` the exact
log-sum-exp of the head's scaled scores under the attention's own mask.

- :mod:`mimic.shift.config`: :class:`MimicConfig`, the switches of MimIC and its ablations;
- :mod:`mimic.shift.module`: :class:`MimicShift`, the learned ``v``, ``w``, ``b``;
- :mod:`mimic.shift.attention`: the function MimIC puts on transformers' attention interface;
- :mod:`mimic.shift.log_z2`: ``log Z2`` under any mask (and sdpa's own log-sum-exp);
- :mod:`mimic.shift.compat`: attention MimIC cannot describe, and the dry run that proves an install;
- :mod:`mimic.shift.install`: installing any shift into a model's decoder layers, and taking it out.

Attaching, saving and loading go through :mod:`mimic.methods` (MimIC is one of its methods).
"""

from mimic.shift.config import MimicConfig
from mimic.shift.module import MimicShift, count_shift_parameters

__all__ = ["MimicConfig", "MimicShift", "count_shift_parameters"]
