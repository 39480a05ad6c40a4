"""Every method type of params.yaml, and the facts about it the pipeline needs, in one torch-free place.

``mimic.pipeline.params`` reads it (which types are trained, fitted, demonstration-free, take the model's lr)
without importing torch; :mod:`mimic.methods.base` registers each method's module against it and
imports them all. ``workflow/schemas/params.schema.yaml`` lists the same types (a test keeps them
equal). A new method is a module of :mod:`mimic.methods` plus one line here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodInfo:
    """type: the ``type:`` of a params.yaml ``methods:`` entry and of its checkpoints.
    module: its module in :mod:`mimic.methods` (None: no module, nothing is trained or attached).
    trained: it has a ``mimic train`` stage and a checkpoint (trained by gradient, or fitted).
    fitted: computed from forward passes (a ``fit:`` section, no ``train:``).
    uses_demonstrations: it learns from the ICL demonstrations (else from the answers alone: 0 shots).
    takes_model_lr: its lr is ``models.<name>.train.lr`` (the paper's MimIC lr), not its own.
    section: the key of its entry that holds its config.
    """

    type: str
    module: str | None
    trained: bool = True
    fitted: bool = False
    uses_demonstrations: bool = True
    takes_model_lr: bool = False
    section: str = "config"


CATALOG: dict[str, MethodInfo] = {info.type: info for info in (
    MethodInfo("zero-shot", None, trained=False, uses_demonstrations=False),
    MethodInfo("icl", None, trained=False),
    MethodInfo("mimic", "mimic", takes_model_lr=True, section="shift"),
    MethodInfo("live", "live"),
    MethodInfo("task-vector", "task_vector", fitted=True),
    MethodInfo("function-vector", "function_vector", fitted=True),
    MethodInfo("mtv", "mtv", fitted=True),
    MethodInfo("i2cl", "i2cl"),
    MethodInfo("hificl", "hificl", uses_demonstrations=False),
    MethodInfo("lora", "lora", uses_demonstrations=False, section="lora"),
    MethodInfo("mimic-lora", "mimic_lora", takes_model_lr=True),
    MethodInfo("stave", "stave"),
)}


def types(**facts) -> tuple[str, ...]:
    """The types whose facts equal ``facts`` (e.g. ``types(trained=True)``), in catalog order."""
    return tuple(t for t, info in CATALOG.items() if all(getattr(info, k) == v for k, v in facts.items()))
