"""MimIC + LoRA: MimIC's shifts and LoRA on the attention projections, trained together with MimIC's loss.

LoRA enters first (peft replaces the projections), then MimIC's shift through the attention
interface, so MimIC's magnitude reads the LoRA-adapted query. Trained with
``align_weight * MSE(teacher states) + ce_weight * CE(answer)``.

Parameters: MimIC's plus LoRA's (see :mod:`mimic.methods.mimic`, :mod:`mimic.methods.lora`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from torch import nn

from mimic.methods.base import Installed, Method, register
from mimic.methods.lora import Lora, LoraConfig, install_lora
from mimic.methods.mimic import Mimic
from mimic.models.adapters import ConfigMixin
from mimic.shift.config import MimicConfig


@dataclass
class MimicLoraConfig(ConfigMixin):
    shift: MimicConfig = field(default_factory=MimicConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.shift, dict):
            self.shift = MimicConfig.from_dict(self.shift)
        if isinstance(self.lora, dict):
            self.lora = LoraConfig.from_dict(self.lora)


class MimicLoraModules(nn.Module):
    def __init__(self, config: MimicLoraConfig, shift: nn.Module, lora: nn.Module):
        super().__init__()
        self.config = config
        self.shift = shift
        self.lora = lora


class MimicLora(Method):
    type = "mimic-lora"
    config_class = MimicLoraConfig

    def config_from_entry(self, entry: dict) -> MimicLoraConfig:
        return MimicLoraConfig(MimicConfig.from_dict(dict(entry.get("shift") or {})),
                               LoraConfig.from_dict(dict(entry.get("lora") or {})))

    def complete(self, config: MimicLoraConfig, model) -> MimicLoraConfig:
        return replace(config, shift=Mimic().complete(config.shift, model), lora=Lora().complete(config.lora, model))

    def install(self, model, config: MimicLoraConfig, module, verify: bool):
        lora, lora_installed = install_lora(model, config.lora)
        try:
            given = module.shift if module is not None else None
            shift, mimic_installed = Mimic().install(model, config.shift, given, verify)
        except BaseException:
            for undo in reversed(lora_installed.undo):
                undo()
            raise
        if module is not None:
            lora.load_state_dict(module.lora.state_dict())
        installed = Installed(undo=lora_installed.undo + mimic_installed.undo,
                              switches=lora_installed.switches + mimic_installed.switches)
        return MimicLoraModules(config, shift, lora), installed

    def counts(self, config: MimicLoraConfig) -> dict[str, int]:
        return {"trainable": Mimic().counts(config.shift)["trainable"] + Lora().counts(config.lora)["trainable"],
                "fitted": 0}


register(MimicLora())
