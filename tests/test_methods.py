"""What every method shares, checked for every method: the registry agrees with params.yaml and its
schema; attach freezes the base model and detach restores it exactly; disabled() is the base model;
the parameter counts are the module's; save/load round trips are bit-identical."""

import json
from pathlib import Path

import pytest
import torch
import yaml

import mimic
from mimic import MimicConfig
from mimic.methods import METHODS, config_from_entry
from mimic.methods.function_vector import FunctionVectorConfig
from mimic.methods.hificl import HificlConfig
from mimic.methods.i2cl import I2clConfig
from mimic.methods.live import LiveConfig
from mimic.methods.lora import LoraConfig
from mimic.methods.mimic_lora import MimicLoraConfig
from mimic.methods.mtv import MtvConfig
from mimic.methods.stave import StaveConfig
from mimic.methods.task_vector import TaskVectorConfig
from mimic.pipeline.params import FITTED_TYPES, TRAINED_TYPES, UNTRAINED_TYPES, load_params, load_schema
from mimic.tiny.models import random_icl_batch, tiny_idefics2

CONFIGS = {
    "mimic": MimicConfig,
    "live": LiveConfig,
    "hificl": HificlConfig,
    "lora": lambda: LoraConfig(r=4),
    "mimic-lora": lambda: MimicLoraConfig(lora=LoraConfig(r=4)),
    "i2cl": I2clConfig,
    "task-vector": lambda: TaskVectorConfig(layer=1),
    "function-vector": lambda: FunctionVectorConfig(layer=0),
    "mtv": lambda: MtvConfig(heads=[[0, 1], [1, 3], [1, 0]]),
    "stave": StaveConfig,
}


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def randomize(module, seed: int = 0) -> None:
    """Every tensor of the method drawn at random (so that nothing is the identity by its initialisation)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            t.copy_(torch.randn(t.shape, generator=g) * 0.3)


def test_the_registry_is_the_one_list_of_trained_types_and_the_schema_enum():
    assert sorted(METHODS) == sorted(TRAINED_TYPES)
    assert set(FITTED_TYPES) == {t for t, m in METHODS.items() if m.fitted}
    enum = load_schema()["$defs"]["method"]["properties"]["type"]["enum"]
    assert enum == [*UNTRAINED_TYPES, *TRAINED_TYPES]
    assert sorted(CONFIGS) == sorted(METHODS)


def test_the_catalog_and_params_need_no_torch_and_a_method_outside_the_catalog_is_refused():
    import subprocess
    import sys

    code = "import sys, mimic.pipeline.params, mimic.methods.catalog; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
    from mimic.methods.base import Method, register

    class Prefix(Method):
        type = "prefix-tuning"
        config_class = LiveConfig

        def install(self, model, config, module, verify):
            raise AssertionError

        def counts(self, config):
            return {}

    with pytest.raises(ValueError, match=r"^method type 'prefix-tuning' \([\w.]*test_methods\) is not in "
                                         r"mimic\.methods\.catalog\.CATALOG with that module"):
        register(Prefix())
    assert "prefix-tuning" not in METHODS


def test_every_params_entry_builds_its_config():
    params = load_params("params.yaml")
    types = set()
    for name, entry in params["methods"].items():
        if entry["type"] in TRAINED_TYPES:
            config = config_from_entry(entry, base_model="models/mini-idefics2")
            assert isinstance(config, METHODS[entry["type"]].config_class), name
            types.add(entry["type"])
    assert types == set(TRAINED_TYPES)  # params.yaml has an entry of every type


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_attach_detach_disabled_counts_save_load(kind, tmp_path):
    model = tiny_idefics2(layers=2, heads=4, kv_heads=2, hidden=32)
    _, inputs, _ = random_icl_batch(model, pad=True, seed=4)
    before = logits(model, inputs)
    modules_before = [(n, type(m)) for n, m in model.named_modules()]
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    attrs_before = set(model.__dict__)

    module = mimic.attach(model, CONFIGS[kind]())
    randomize(module)
    shifted = logits(model, inputs)
    assert (shifted - before).abs().max() > 1e-3  # the method changes the model ...
    with mimic.disabled(model):
        assert torch.equal(logits(model, inputs), before)  # ... except while disabled ...
    assert torch.equal(logits(model, inputs), shifted)  # ... and is back on afterwards

    own = {id(p) for p in module.parameters()}
    assert all(not p.requires_grad for p in model.parameters() if id(p) not in own)  # the base model is frozen
    counts = mimic.count_parameters(module.config)
    assert counts["trainable"] == sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert counts["fitted"] == sum(b.numel() for b in module.buffers())
    assert counts["total"] == counts["trainable"] + counts["fitted"] > 0

    mimic.save_pretrained(module, tmp_path / "ckpt", metadata={"task": "t"})
    doc = json.loads((tmp_path / "ckpt" / "mimic_config.json").read_text())
    assert doc["type"] == kind and doc["extra"]["task"] == "t"
    assert mimic.detach(model) is module
    assert torch.equal(logits(model, inputs), before)  # detach restores exactly ...
    assert [(n, type(m)) for n, m in model.named_modules()] == modules_before  # ... the same modules ...
    assert all(torch.equal(v, state_before[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())  # ... trainable again, as before
    assert set(model.__dict__) == attrs_before  # nothing left behind (peft_config, hook targets, records)
    assert mimic.detach(model) is None

    loaded = mimic.from_pretrained(model, tmp_path / "ckpt")
    assert type(loaded.config) is type(module.config)
    assert loaded.state_dict().keys() == module.state_dict().keys()
    assert all(torch.equal(v, module.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert torch.equal(logits(model, inputs), shifted)  # the round trip is bit-identical
    mimic.detach(model)


def test_attach_refuses_a_second_method_and_loading_onto_other_shapes(tmp_path):
    model = tiny_idefics2(layers=2)
    mimic.attach(model, LiveConfig())
    with pytest.raises(RuntimeError, match=r"a method \(live\) is already attached"):
        mimic.attach(model, HificlConfig())
    module = mimic.detach(model)
    mimic.save_pretrained(module, tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"num_layers 2 in the checkpoint vs 3 in the model"):
        mimic.from_pretrained(tiny_idefics2(layers=3), tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"unknown LiveConfig keys \['colour'\]"):
        LiveConfig.from_dict({"colour": 1})
    doc = json.loads((tmp_path / "ckpt" / "mimic_config.json").read_text())
    (tmp_path / "ckpt" / "mimic_config.json").write_text(json.dumps({**doc, "type": "prefix-tuning"}))
    with pytest.raises(ValueError, match=r"unknown method type 'prefix-tuning'; known: function-vector, hificl"):
        mimic.from_pretrained(model, tmp_path / "ckpt")


def test_a_mimic_checkpoint_records_its_type_and_one_without_a_type_loads_as_mimic(tmp_path):
    """Checkpoints written before types existed hold no ``type``: they are MimIC's."""
    model = tiny_idefics2()
    _, inputs, _ = random_icl_batch(model, pad=True, seed=1)
    shift = mimic.attach(model, MimicConfig())
    randomize(shift)
    expected = logits(model, inputs)
    mimic.save_pretrained(shift, tmp_path / "a")
    mimic.detach(model)
    assert json.loads((tmp_path / "a" / "mimic_config.json").read_text())["type"] == "mimic"
    mimic.from_pretrained(model, tmp_path / "a")
    assert torch.equal(logits(model, inputs), expected)
    mimic.detach(model)
    doc = json.loads((tmp_path / "a" / "mimic_config.json").read_text())
    del doc["type"]
    (tmp_path / "a" / "mimic_config.json").write_text(json.dumps(doc))  # as written before this change
    mimic.from_pretrained(model, tmp_path / "a")
    assert torch.equal(logits(model, inputs), expected)
    mimic.detach(model)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "live", "config": {"layers": None, "colour": 1},
          "train": {"epochs": 1, "lr": 0.1, "warmup_ratio": 0.0, "weight_decay": 0.0, "batch_size": 2,
                    "grad_accum": 1, "kl_weight": 1.0, "ce_weight": 0.5, "seed": 0}},
         "methods.x.config.colour: unknown key; known: layers, scale_init, v_init_std"),
        ({"type": "lora", "lora": {"r": 4},
          "train": {"epochs": 1, "lr": 0.1, "warmup_ratio": 0.0, "weight_decay": 0.0, "batch_size": 2,
                    "grad_accum": 1, "ce_weight": 1.0, "align_weight": 1.0, "seed": 0}},
         "methods.x.train.align_weight: unknown key; known: batch_size"),
        ({"type": "task-vector", "fit": {"batch_size": 2, "dev_fraction": 0.25, "seed": 0},
          "train": {"epochs": 1}},
         "methods.x.train: not a key of a method of type task-vector; known: config, fit, type"),
        ({"type": "hificl", "config": {"mix": "sum"},
          "train": {"epochs": 1, "lr": 0.1, "warmup_ratio": 0.0, "weight_decay": 0.0, "batch_size": 2,
                    "grad_accum": 1, "ce_weight": 1.0, "seed": 0}},
         "methods.x.config.mix = 'sum': must be one of exact, additive"),
    ],
    ids=["live-config", "lora-train", "tv-train", "hificl-mix"],
)
def test_params_errors_name_the_bad_key_of_each_type(tmp_path, entry, message):
    from mimic.pipeline.params import ParamsError

    params = yaml.safe_load(Path("params.yaml").read_text())
    params["methods"]["x"] = entry
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert message in str(err.value) and "\n" not in str(err.value)
