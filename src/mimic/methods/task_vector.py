"""Task Vector (Hendel et al., 2023): the ICL prompt's state at the last token, patched into the zero-shot query.

Fit (no gradient): for each training query of the fit part, its ICL prompt (its demonstrations,
then the query itself as the "dummy" query, without its answer) runs through the frozen model;
the output of every decoder layer at the last token is averaged over the prompts: ``theta[l]``.
For each candidate layer ``L``, ``theta[L]`` replaces the state of the last prompt token at
layer ``L``'s output in the zero-shot prompts of the held-out (dev) training queries; the layer
with the lowest answer cross-entropy is kept (Hendel et al. choose it by dev accuracy).

Fitted numbers: ``hidden`` (one vector); trained: 0.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from mimic.methods.base import Method, register
from mimic.methods.vectors import LayerVector, choose_layer, chunks, icl_inputs, install_layer_vector, split_dev
from mimic.models.adapters import ModelShapes, complete_for

FIT_DEFAULTS = {"batch_size": 16, "dev_fraction": 0.25, "seed": 0}


@dataclass
class TaskVectorConfig(ModelShapes):
    """layer: where the vector goes (None: chosen by the fit among ``layers``, the candidates; None: all)."""

    layer: int | None = None
    layers: list[int] | None = None


class TaskVector(Method):
    type = "task-vector"
    config_class = TaskVectorConfig

    def complete(self, config: TaskVectorConfig, model) -> TaskVectorConfig:
        config = complete_for(config, model)
        if config.layer is not None and not 0 <= config.layer < config.num_layers:
            raise ValueError(f"TaskVectorConfig.layer {config.layer} out of range: the model has "
                             f"{config.num_layers} decoder layers")
        return config

    def install(self, model, config: TaskVectorConfig, module, verify: bool):
        if config.layer is None:
            raise ValueError("TaskVectorConfig.layer is not set: fit the task vector first (mimic train)")
        module = module if module is not None else LayerVector(config, config.hidden_size)
        module.config = config
        module.to(next(model.parameters()).device)
        return module, install_layer_vector(model, module, config.layer, "replace")

    def counts(self, config: TaskVectorConfig) -> dict[str, int]:
        return {"trainable": 0, "fitted": config.hidden_size}

    def fit(self, loaded, data, icd: dict, config: TaskVectorConfig, hp: dict):
        from mimic.models.hidden_states import HiddenStateRecorder

        hp = {**FIT_DEFAULTS, **hp}
        config = self.complete(config, loaded.model)
        fit_ids, dev_ids = split_dev(sorted(icd["train"]), hp["dev_fraction"], hp["seed"])
        theta = torch.zeros(config.num_layers, config.hidden_size, dtype=torch.float64)
        with torch.no_grad(), HiddenStateRecorder(loaded.model, "layer") as rec:
            for chunk in chunks(fit_ids, hp["batch_size"]):
                rec.select(1)
                loaded.model(**icl_inputs(loaded, data, chunk, icd))
                theta += rec.stacked()[:, :, 0].double().sum(dim=1).cpu()
        theta = (theta / len(fit_ids)).float()
        candidates = [config.layer] if config.layer is not None else config.layers
        layer, losses = choose_layer(loaded, data, dev_ids, hp["batch_size"], candidates, theta, config, "replace")
        config = replace(config, layer=layer, extra={**config.extra, "dev_answer_loss_by_layer": losses})
        module = LayerVector(config, config.hidden_size)
        module.vector.copy_(theta[layer])
        summary = {"fit_queries": len(fit_ids), "dev_queries": len(dev_ids), "layer": layer,
                   "dev_answer_loss_by_layer": {str(k): round(v, 6) for k, v in losses.items()}}
        return module, summary


register(TaskVector())
