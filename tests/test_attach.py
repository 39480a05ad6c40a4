"""attach / detach / save / load, identity at v = 0, frozen base, parameter counts."""

import json

import pytest
import torch

import mimic
from mimic import MimicConfig
from mimic.tiny.models import random_icl_batch, tiny_idefics2, tiny_idefics3

SWITCHES = [
    MimicConfig(),
    MimicConfig(insert="mlp"),
    MimicConfig(per_head=False),
    MimicConfig(query_dependent=False),
    MimicConfig(layers=[1]),
]


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def test_zero_shift_is_the_identity_and_detach_restores(tiny_model):
    _, zs, _ = random_icl_batch(tiny_model, pad=True, seed=2)
    before = _logits(tiny_model, zs)
    shift = mimic.attach(tiny_model)
    with torch.no_grad():
        shift.v.zero_()
    assert torch.equal(_logits(tiny_model, zs), before)
    with torch.no_grad():
        shift.v.normal_(0, 1.0)
    assert not torch.allclose(_logits(tiny_model, zs), before)
    mimic.detach(tiny_model)
    assert torch.equal(_logits(tiny_model, zs), before)


@pytest.mark.parametrize("config", SWITCHES, ids=["default", "mlp", "per-layer", "constant", "one-layer"])
def test_every_switch_shifts_only_when_v_nonzero(config):
    model = tiny_idefics2()
    _, zs, _ = random_icl_batch(model, pad=True, seed=2)
    before = _logits(model, zs)
    shift = mimic.attach(model, config)
    with torch.no_grad():
        shift.v.zero_()
    assert torch.equal(_logits(model, zs), before)
    with torch.no_grad():
        shift.v.normal_(0, 1.0)
    assert not torch.allclose(_logits(model, zs), before)
    mimic.detach(model)


def test_mlp_insertion_adds_the_shift_to_the_mlp_output():
    """insert='mlp' adds mu * v (flattened over heads) to each MLP output, not through o_proj."""
    model = tiny_idefics2(layers=1)
    _, zs, _ = random_icl_batch(model, pad=False, seed=2)
    config = MimicConfig(insert="mlp", query_dependent=False)
    recorder = mimic.HiddenStateRecorder(model, "mlp")
    with recorder, torch.no_grad():
        recorder.select(3)
        model(**zs)
        plain = recorder.stacked()
        shift = mimic.attach(model, config)
        shift.v.normal_(0, 1.0)
        shift.b.fill_(0.3)
        model(**zs)
        shifted = recorder.stacked()
    expected = torch.sigmoid(torch.tensor(0.3)) * shift.v[0].reshape(-1)
    assert torch.allclose(shifted - plain, expected.expand_as(plain), atol=1e-5)
    mimic.detach(model)


def test_gradients_reach_only_mimic_parameters():
    model = tiny_idefics3()
    icl, zs, _ = random_icl_batch(model, pad=True, seed=3)
    shift = mimic.attach(model)
    model(**zs).logits.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in shift.parameters())
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())
    mimic.detach(model)
    assert all(p.requires_grad for p in model.parameters())


def test_save_load_round_trip_is_bit_identical(tmp_path):
    model = tiny_idefics2()
    _, zs, _ = random_icl_batch(model, pad=True, seed=4)
    shift = mimic.attach(model, MimicConfig(layers=[0, 1]))
    with torch.no_grad():
        shift.v.normal_(0, 0.5)
        shift.b.normal_(0, 0.5)
    expected = _logits(model, zs)
    mimic.save_pretrained(shift, tmp_path / "ckpt", metadata={"task": "demo"})
    mimic.detach(model)
    doc = json.loads((tmp_path / "ckpt" / "mimic_config.json").read_text())
    assert (doc["num_layers"], doc["num_heads"], doc["head_dim"], doc["model_type"]) == (2, 4, 8, "idefics2")
    assert doc["extra"]["task"] == "demo" and doc["layers"] == [0, 1]
    mimic.from_pretrained(model, tmp_path / "ckpt")
    assert torch.equal(_logits(model, zs), expected)


def test_loading_onto_other_shapes_fails_clearly(tmp_path):
    shift = mimic.attach(tiny_idefics2(layers=2, heads=4))
    mimic.save_pretrained(shift, tmp_path / "ckpt")
    other = tiny_idefics2(layers=3, heads=4)
    with pytest.raises(ValueError, match=r"num_layers 2 in the checkpoint vs 3 in the model"):
        mimic.from_pretrained(other, tmp_path / "ckpt")
    assert mimic.attach(other) is not None  # nothing was left attached by the failed load
    with pytest.raises(FileNotFoundError, match="mimic_config.json is missing"):
        mimic.from_pretrained(tiny_idefics2(), tmp_path / "nowhere")


def test_attach_twice_and_bad_config_fail_clearly():
    model = tiny_idefics2()
    mimic.attach(model)
    with pytest.raises(RuntimeError, match="already attached"):
        mimic.attach(model)
    mimic.detach(model)
    with pytest.raises(ValueError, match="out of range"):
        mimic.attach(model, MimicConfig(layers=[5]))
    with pytest.raises(ValueError, match="insert"):
        MimicConfig(insert="ffn")


def test_parameter_count_matches_the_module():
    model = tiny_idefics2(layers=3, heads=4, hidden=32)
    for config in SWITCHES:
        shift = mimic.attach(model, config)
        assert mimic.count_parameters(shift.config)["total"] == sum(p.numel() for p in shift.parameters())
        mimic.detach(model)
