"""Each MimIC ablation is one switch, and each switch changes exactly the component it names.

insert: the same shift lands on the MLP output instead of the head outputs (the heads stay as
they were); per_head: one magnitude per layer, shared by its heads; query_dependent: a constant
magnitude, the same at every position of every query; align_weight 0: no teacher is read and the
loss is the answer CE; ce_weight 0: the loss is the alignment alone.
"""

import pytest
import torch

import mimic
from mimic import MimicConfig
from mimic.pipeline.params import ablation_changes, load_params
from mimic.tiny.families import tiny_family, tiny_task
from mimic.tiny.models import random_icl_batch, tiny_idefics2
from mimic.training.loop import train
from mimic.training.teacher import TeacherCache, extract


def test_every_ablation_of_params_yaml_changes_one_switch_of_mimic():
    params = load_params("params.yaml")
    params["run"]["trained"] = [m for m, e in params["methods"].items() if e["type"] == "mimic"]
    changes = ablation_changes(params)
    assert changes == {
        "mimic-mlp": "insert: 'attn' -> 'mlp'",
        "mimic-per-layer": "per_head: true -> false",
        "mimic-constant": "query_dependent: true -> false",
        "mimic-ce-only": "align_weight: 1.0 -> 0.0",
        "mimic-align-only": "ce_weight: 0.5 -> 0.0",
    }


def _layer0(model, inputs) -> dict:
    """Layer 0's head outputs (o_proj input) and MLP output: the same inputs reach them in every run."""
    layer = model.model.text_model.layers[0]
    seen = {}
    handles = [layer.self_attn.o_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("heads", a[0].clone())),
               layer.mlp.register_forward_hook(lambda m, a, o: seen.__setitem__("mlp", (a[0].clone(), o.clone())))]
    with torch.no_grad():
        model(**inputs)
    for h in handles:
        h.remove()
    return seen


def _shifted(model, inputs, config, state):
    shift = mimic.attach(model, config)
    shift.load_state_dict(state, strict=False)
    seen = _layer0(model, inputs)
    mimic.detach(model)
    return seen


@pytest.fixture()
def problem():
    model = tiny_idefics2(layers=2, heads=4, kv_heads=2, hidden=32)
    _, inputs, _ = random_icl_batch(model, pad=True, seed=9)
    g = torch.Generator().manual_seed(1)
    state = {"v": torch.randn(2, 4, 8, generator=g), "w": torch.randn(2, 4, 8, generator=g) * 0.3,
             "b": torch.randn(2, 4, generator=g)}
    return model, inputs, state, _layer0(model, inputs)


def _heads(x):
    return x.view(*x.shape[:2], 4, 8)  # [b, T, H, d]


def test_insert_mlp_moves_the_same_shift_from_the_heads_to_the_mlp_output(problem):
    model, inputs, state, base = problem
    at_heads = _shifted(model, inputs, MimicConfig(), state)
    at_mlp = _shifted(model, inputs, MimicConfig(insert="mlp"), state)
    delta = at_heads["heads"] - base["heads"]  # what the shift adds to the heads ...
    assert delta.abs().max() > 1e-2
    assert torch.equal(at_mlp["heads"], base["heads"])  # ... with insert=mlp the heads are untouched ...
    mlp_in, mlp_out = at_mlp["mlp"]
    with torch.no_grad():
        plain = model.model.text_model.layers[0].mlp(mlp_in)
    assert torch.allclose(mlp_out - plain, delta, atol=1e-6)  # ... and the same shift lands on the MLP output


def test_per_layer_shares_one_magnitude_among_the_heads_of_a_layer(problem):
    model, inputs, state, base = problem
    per_layer = _shifted(model, inputs, MimicConfig(per_head=False), {**state, "b": state["b"][:, :1]})
    per_head = _shifted(model, inputs, MimicConfig(), state)
    real = inputs["attention_mask"].bool()
    for run, shared in ((per_layer, True), (per_head, False)):
        mu = (_heads(run["heads"] - base["heads"]) / state["v"][0]).mean(-1)[real]  # [positions, H]
        spread = (mu.max(-1).values - mu.min(-1).values).max().item()
        assert (spread < 1e-5) if shared else (spread > 1e-2)
    shift = mimic.attach(model, MimicConfig(per_head=False))
    assert shift.b.shape == (2, 1) and shift.w.shape == shift.v.shape == (2, 4, 8)
    mimic.detach(model)


def test_constant_magnitude_is_the_same_at_every_position_of_every_query(problem):
    model, inputs, state, base = problem
    run = _shifted(model, inputs, MimicConfig(query_dependent=False), {"v": state["v"], "b": state["b"]})
    delta = _heads(run["heads"] - base["heads"])[inputs["attention_mask"].bool()]  # [positions, H, d]
    want = torch.sigmoid(state["b"][0])[:, None] * state["v"][0]
    assert torch.allclose(delta, want.expand_as(delta), atol=1e-6)
    varying = _heads(_shifted(model, inputs, MimicConfig(), state)["heads"] - base["heads"])
    assert (varying - varying[:, -1:]).abs().max() > 1e-3  # query-dependent: it varies with the position


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    lm = tiny_family("idefics2")
    data, icd = tiny_task("vqa", n_train=4, n_support=8)
    root = tmp_path_factory.mktemp("teacher")
    extract(lm, data, icd, root, {"dtype": "float32", "target": "mlp", "shard_size": 4, "batch_size": 3},
            {"model": "t", "task": "t"})
    return lm, data, icd, TeacherCache(root)


HP = {"epochs": 2, "lr": 1e-2, "warmup_ratio": 0.0, "weight_decay": 0.0, "batch_size": 2, "grad_accum": 1, "seed": 0}


def test_ce_only_reads_no_teacher_and_align_only_has_no_ce_in_its_loss(cached, monkeypatch):
    lm, data, icd, cache = cached
    reads = []
    real = cache.get
    monkeypatch.setattr(cache, "get", lambda q, d: reads.append(q) or real(q, d))
    _, rows, summary = train(lm, data, icd, MimicConfig(), {**HP, "align_weight": 0.0, "ce_weight": 0.5}, "mlp", cache)
    mimic.detach(lm.model)
    assert reads == [] and summary["teacher_mode"] == "none"
    assert all(r["loss"] == pytest.approx(0.5 * r["ce_loss"], rel=1e-6) and "align_loss" not in r for r in rows)
    _, rows, summary = train(lm, data, icd, MimicConfig(), {**HP, "align_weight": 1.0, "ce_weight": 0.0}, "mlp", cache)
    mimic.detach(lm.model)
    assert len(reads) == 2 * 4 and summary["teacher_mode"] == "cached"
    assert all(r["loss"] == pytest.approx(r["align_loss"], rel=1e-6) and r["ce_loss"] > 0 for r in rows)
