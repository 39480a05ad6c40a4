"""The fitted methods and I2CL's context vectors, recomputed by hand on the tiny Idefics2 family.

Task Vector: the vector is the mean over the fit queries' ICL prompts of the chosen layer's output
at the last token (each prompt alone, no padding), and the layer is the one with the lowest
dev-query answer loss, recomputed here with a hook of our own. Function Vector: each head's causal
effect is the rise in the first answer token's probability when that head's output is set to its
mean (patched here at ``o_proj``'s input), and the vector sums the top heads. I2CL: the context
vectors are the mean of each demonstration's own attention and MLP outputs at its last token.
"""

import logging
import random

import pytest
import torch

import mimic
from mimic.data.batches import student_batch
from mimic.methods import METHODS
from mimic.methods.function_vector import (
    FunctionVectorConfig,
    causal_effects,
    first_answer_tokens,
    head_vector,
    mean_head_outputs,
)
from mimic.methods.i2cl import I2clConfig, demonstrations
from mimic.methods.task_vector import TaskVectorConfig
from mimic.methods.vectors import icl_inputs, split_dev
from mimic.models.generation import encode_prompts
from mimic.tiny.families import tiny_family, tiny_task

FIT = {"batch_size": 3, "dev_fraction": 0.25, "seed": 0}


@pytest.fixture(scope="module")
def family():
    lm = tiny_family("idefics2")
    data, icd = tiny_task("vqa", n_train=8, n_support=8)
    return lm, data, icd


def _layers(lm):
    return lm.adapter.decoder_layers(lm.model)


def _icl_prompt(lm, data, icd, q, rng=None):
    return icl_inputs(lm, data, [q], icd, corrupt=rng)


@torch.no_grad()
def test_task_vector_is_the_mean_icl_state_at_the_layer_with_the_lowest_dev_loss(family):
    lm, data, icd = family
    module, summary = METHODS["task-vector"].fit(lm, data, icd, TaskVectorConfig(), FIT)
    fit_ids, dev_ids = split_dev(sorted(icd["train"]), 0.25, 0)
    assert (summary["fit_queries"], summary["dev_queries"]) == (6, 2)
    states = {i: [] for i in range(2)}
    handles = [layer.register_forward_hook(lambda m, a, o, i=i: states[i].append(o[0, -1].clone()))
               for i, layer in enumerate(_layers(lm))]
    for q in fit_ids:  # each ICL prompt alone
        lm.model(**_icl_prompt(lm, data, icd, q))
    for h in handles:
        h.remove()
    theta = {i: torch.stack(v).mean(0) for i, v in states.items()}
    layer = module.config.layer
    assert torch.allclose(module.vector, theta[layer], atol=1e-5)

    def dev_loss(i):  # our own patch: the last prompt token of each dev query, alone
        total, count = 0.0, 0
        for q in dev_ids:
            inputs, labels, (a,) = student_batch(lm, data, "train", [q])

            def patch(m, args, out, at=inputs["input_ids"].shape[1] - a - 1):
                out = out.clone()
                out[0, at] = theta[i]
                return out
            handle = _layers(lm)[i].register_forward_hook(patch)
            logits = lm.model(**inputs).logits[0, :-1]
            handle.remove()
            keep = labels[0, 1:] != -100
            total += torch.nn.functional.cross_entropy(logits[keep], labels[0, 1:][keep], reduction="sum").item()
            count += int(keep.sum())
        return total / count

    losses = {i: dev_loss(i) for i in range(2)}
    assert summary["layer"] == layer == min(losses, key=losses.get)
    for i, loss in losses.items():
        assert summary["dev_answer_loss_by_layer"][str(i)] == pytest.approx(loss, rel=1e-4)


@torch.no_grad()
def test_function_vector_ranks_heads_by_their_causal_effect_and_sums_the_top_ones(family):
    lm, data, icd = family
    fit_ids, _ = split_dev(sorted(icd["train"]), 0.25, 0)
    config = METHODS["function-vector"].complete(FunctionVectorConfig(top_heads=3, cie_prompts=3), lm.model)
    means = mean_head_outputs(lm, data, icd, fit_ids, config, 3)
    effects = causal_effects(lm, data, icd, fit_ids[:3], means, FIT)

    # by hand: each corrupted prompt alone, the head's slice of o_proj's input set to its mean
    rng = random.Random(FIT["seed"])
    prompts = [_icl_prompt(lm, data, icd, q, rng) for q in fit_ids[:3]]
    targets = first_answer_tokens(lm, data, fit_ids[:3])

    def probabilities(layer=None, head=None):
        out = []
        for inputs, target in zip(prompts, targets, strict=True):
            handle = None
            if layer is not None:
                def patch(m, args):
                    x = args[0].clone()
                    x[0, -1, head * 8 : (head + 1) * 8] = means[layer, head]
                    return (x,)
                handle = _layers(lm)[layer].self_attn.o_proj.register_forward_pre_hook(patch)
            p = torch.softmax(lm.model(**inputs).logits[0, -1], -1)[target].item()
            if handle is not None:
                handle.remove()
            out.append(p)
        return torch.tensor(out, dtype=torch.float64)

    base = probabilities()
    for layer, head in ((0, 1), (1, 3)):
        assert effects[layer, head].item() == pytest.approx((probabilities(layer, head) - base).mean().item(),
                                                            rel=1e-4, abs=1e-7)
    module, summary = METHODS["function-vector"].fit(lm, data, icd, FunctionVectorConfig(top_heads=3, cie_prompts=3),
                                                     FIT)
    top = torch.topk(effects.flatten(), 3).indices.tolist()
    assert module.config.heads == [[i // 4, i % 4] for i in top]
    assert torch.allclose(module.vector, head_vector(lm.model, means, module.config.heads), atol=1e-6)


def test_a_fitted_method_goes_through_the_training_entry_point(family, fake_training_clock, caplog):
    import mimic.training.loop as training

    lm, data, icd = family
    caplog.set_level(logging.INFO, logger="mimic.train")
    module, rows, summary = training.train(lm, data, icd, TaskVectorConfig(layers=[1]), FIT, "mlp", None)
    fit_summary = {k: v for k, v in summary.items() if k not in ("steps", "seconds", "teacher_seconds", "teacher_mode",
                                                                  "teacher_needs", "trainable_params", "fitted_params")}
    assert rows == [] and fit_summary["layer"] == 1
    assert summary == {"steps": 0, "seconds": 0.06, "teacher_seconds": 0.0, "teacher_mode": "none",  # 2 clock reads
                       "teacher_needs": [], "trainable_params": 0, "fitted_params": 32, **fit_summary}
    assert [r.getMessage() for r in caplog.records if r.name == "mimic.train"] == \
        [f"fitted task-vector in 0.1s: {fit_summary}"]
    attached = mimic.methods.attached(lm.model)
    assert attached.module is module and attached.method.type == "task-vector"  # left attached as a trained one is
    mimic.detach(lm.model)


def test_i2cl_is_prepared_through_the_training_entry_point(family):
    from mimic.training.loop import train

    lm, data, icd = family
    direct = mimic.attach(lm.model, I2clConfig(n_demos=3))
    METHODS["i2cl"].prepare(lm, data, icd, direct)
    mimic.detach(lm.model)
    hp = {"epochs": 1, "lr": 1e-2, "warmup_ratio": 0.0, "weight_decay": 0.0, "batch_size": 8, "grad_accum": 1,
          "ce_weight": 1.0, "seed": 0}
    module, rows, summary = train(lm, data, icd, I2clConfig(n_demos=3), hp, "mlp", None)
    mimic.detach(lm.model)
    assert len(rows) == 1 and torch.equal(module.context, direct.context)
    assert (summary["teacher_mode"], summary["teacher_needs"]) == ("none", [])  # CE only: no teacher


@torch.no_grad()
def test_i2cl_context_vectors_are_the_mean_of_each_demonstrations_own_outputs(family):
    lm, data, icd = family
    i2cl = mimic.attach(lm.model, I2clConfig(n_demos=3))
    METHODS["i2cl"].prepare(lm, data, icd, i2cl)
    mimic.detach(lm.model)
    ids = demonstrations(icd, 3)
    in_order = list(dict.fromkeys(s for q in sorted(icd["train"]) for s in icd["train"][q][0]))
    assert len(set(ids)) == 3 and ids == in_order[:3]
    seen = []
    handles = []
    for i, layer in enumerate(_layers(lm)):
        for w, module in enumerate((layer.self_attn, layer.mlp)):
            handles.append(module.register_forward_hook(
                lambda m, a, o, i=i, w=w: seen.append((i, w, (o[0] if isinstance(o, tuple) else o)[0, -1].clone()))))
    for sid in ids:
        image, question, answer = data.demo(sid)
        lm.model(**encode_prompts(lm, data.kind, [(image, question)], answers=[answer]))
    for h in handles:
        h.remove()
    for i in range(2):
        for w in range(2):
            want = torch.stack([v for li, wi, v in seen if (li, wi) == (i, w)]).mean(0)
            assert torch.allclose(i2cl.context[i, w], want, atol=1e-6)
