"""The one configuration object of a MimIC attachment; saved next to the weights."""

from __future__ import annotations

from dataclasses import dataclass

from mimic.models.adapters import ModelShapes

INSERT_POINTS = ("attn", "mlp")
MAGNITUDE_INITS = ("normal", "linear")


@dataclass
class MimicConfig(ModelShapes):
    """Switches of MimIC and its ablations.

    insert: ``attn`` adds the shift to each head's output before ``o_proj`` (MimIC);
        ``mlp`` adds it to the decoder layer's MLP output (as LIVE does).
    per_head: one shift vector and one magnitude per head (MimIC) or one per layer.
    query_dependent: magnitude ``sigmoid(w.q + b - log Z2)`` (MimIC) or a learned
        constant ``sigmoid(b)`` per layer/head.
    layers: decoder layers to patch (``None``: all of them).
    magnitude_init: ``normal``: ``w ~ N(0, w_init_std)``, ``b = 0`` (the reference code's per-head
        magnitude); ``linear``: ``w, b ~ U(-1/sqrt(n), 1/sqrt(n))`` over the ``n`` inputs of one magnitude
        (``head_dim`` per head, ``heads x head_dim`` per layer), torch's ``nn.Linear`` default, which the
        reference code's per-layer magnitude keeps (``src/shift_encoder.py:600-607`` at 9eda50b).
    """

    insert: str = "attn"
    per_head: bool = True
    query_dependent: bool = True
    layers: list[int] | None = None
    v_init_std: float = 1e-3
    w_init_std: float = 0.02
    magnitude_init: str = "normal"

    def __post_init__(self) -> None:
        if self.insert not in INSERT_POINTS:
            raise ValueError(f"MimicConfig.insert={self.insert!r} is not valid; use one of {INSERT_POINTS}")
        if self.magnitude_init not in MAGNITUDE_INITS:
            raise ValueError(f"MimicConfig.magnitude_init={self.magnitude_init!r} is not valid; use one of "
                             f"{MAGNITUDE_INITS}")
        if self.layers is not None:
            self.layers = sorted({int(i) for i in self.layers})
