"""MTV (mimic.methods.mtv) against hand computations on tiny models.

The mean activations are each head's ``o_proj`` input at the last token of ICL prompts built here
with the real processor, averaged by hand; the patch writes exactly those means into exactly the
chosen heads at the last position (seen at ``o_proj``'s input), nothing else; REINFORCE's step is
recomputed from its formula, and on a constructed loss it finds the one helpful head; detach and
save/load restore bit-identical outputs; the fit runs through ``mimic train``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

import mimic
from mimic.methods import METHODS
from mimic.methods.function_vector import first_answer_tokens, mean_head_outputs
from mimic.methods.mtv import (
    EPS,
    THETA_INIT,
    MtvConfig,
    best_draw,
    iteration_prompts,
    policy_objective,
    reinforce,
)
from mimic.methods.vectors import split_dev
from mimic.models.generation import encode_prompts
from mimic.tiny.families import tiny_family, tiny_task
from mimic.tiny.models import random_icl_batch, tiny_idefics2

REPO = Path(__file__).resolve().parents[1]
FIT = {"batch_size": 3, "dev_fraction": 0.25, "seed": 0}
HEADS = [[0, 1], [1, 3], [1, 0]]


@pytest.fixture(scope="module")
def family():
    lm = tiny_family("idefics2")
    data, icd = tiny_task("vqa", n_train=8, n_support=8)
    return lm, data, icd


def _o_proj_inputs(model, inputs) -> list[torch.Tensor]:
    """Each decoder layer's ``o_proj`` input (the heads' outputs, concatenated), [b, n, H*d]."""
    seen, handles = [], []
    for layer in model.model.text_model.layers:
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(
            lambda m, args: seen.append(args[0].detach().clone())))
    with torch.no_grad():
        logits = model(**inputs).logits
    for h in handles:
        h.remove()
    return seen, logits


def test_the_prompts_walk_the_fit_queries_then_their_next_draws_and_too_many_is_one_line():
    assert iteration_prompts(["a", "b", "c"], 2, None) == (["a", "b", "c", "a", "b", "c"], [0, 0, 0, 1, 1, 1])
    assert iteration_prompts(["a", "b", "c"], 2, 4) == (["a", "b", "c", "a"], [0, 0, 0, 1])
    with pytest.raises(ValueError, match=r"^MtvConfig.iterations = 7: only 6 ICL prompts exist \(3 fit queries x 2 "
                                         r"draws of icd\); lower it"):
        iteration_prompts(["a", "b", "c"], 2, 7)
    with pytest.raises(ValueError, match=r"^MtvConfig.samples = 1: must be an integer >= 2$"):
        MtvConfig(samples=1)


@torch.no_grad()
def test_the_means_are_each_heads_last_token_output_averaged_over_the_n_shot_prompts(family):
    lm, data, icd = family
    config = METHODS["mtv"].complete(MtvConfig(), lm.model)
    fit_ids, _ = split_dev(sorted(icd["train"]), 0.25, 0)
    qids, draws = iteration_prompts(fit_ids, icd["draws"], 9)  # 6 queries with draw 0, 3 with draw 1
    means = mean_head_outputs(lm, data, icd, qids, config, 4, draws, n_shots=1)

    # by hand: each prompt alone (one demonstration: the first of its draw), o_proj's input at the last token
    total = torch.zeros(2, 4, 8, dtype=torch.float64)
    for q, d in zip(qids, draws, strict=True):
        demo = data.demo(icd["train"][q][d][0])
        inputs = encode_prompts(lm, data.kind, [data.query("train", q)], demos=[[demo]], role="teacher")
        heads, _ = _o_proj_inputs(lm.model, inputs)
        total += torch.stack([h[0, -1].view(4, 8) for h in heads]).double()
    assert torch.allclose(means, (total / 9).float(), atol=1e-5)
    assert not torch.allclose(means, mean_head_outputs(lm, data, icd, qids, config, 4, draws), atol=1e-3)  # 2 shots


def test_the_chosen_heads_output_their_means_at_the_last_position_and_nothing_else_moves():
    model = tiny_idefics2(layers=2, heads=4, kv_heads=2, hidden=32)
    _, inputs, _ = random_icl_batch(model, pad=True, seed=3)
    base, before = _o_proj_inputs(model, inputs)
    mtv = mimic.attach(model, MtvConfig(heads=HEADS))
    with torch.no_grad():
        mtv.means.copy_(torch.randn(3, 8))
    patched, _ = _o_proj_inputs(model, inputs)
    b, n = inputs["input_ids"].shape
    base = [x.view(b, n, 4, 8) for x in base]
    patched = [x.view(b, n, 4, 8) for x in patched]
    for k, (layer, head) in enumerate(HEADS):
        assert torch.equal(patched[layer][:, -1, head], mtv.means[k].expand(b, -1))  # exactly the mean, every row
    assert torch.equal(patched[0][:, :-1], base[0][:, :-1])  # layer 0: every earlier position untouched ...
    assert torch.equal(patched[0][:, -1, [0, 2, 3]], base[0][:, -1, [0, 2, 3]])  # ... and every other head
    assert torch.equal(patched[1][:, :-1], base[1][:, :-1])  # layer 1: earlier positions untouched (causal)
    assert (patched[1][:, -1, [1, 2]] - base[1][:, -1, [1, 2]]).abs().max() > 1e-4  # moved by layer 0's patch only

    assert mimic.detach(model) is mtv
    after, logits = _o_proj_inputs(model, inputs)
    assert torch.equal(logits, before)  # detach restores the outputs exactly
    assert all(torch.equal(a.view(b, n, 4, 8), x) for a, x in zip(after, base, strict=True))


def test_every_generated_token_gets_the_means_as_the_reference_generation_hook_does():
    """Cached generation = uncached forwards with the heads set at the last prompt token and every later one."""
    model = tiny_idefics2(layers=2, heads=4, kv_heads=2, hidden=32)
    _, inputs, _ = random_icl_batch(model, batch_size=2, pad=False, seed=7)
    mtv = mimic.attach(model, MtvConfig(heads=HEADS))
    with torch.no_grad():
        mtv.means.copy_(torch.randn(3, 8) * 2)
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=0)
    mimic.detach(model)
    n = inputs["input_ids"].shape[1]
    for step in range(3):
        ids = out.sequences[:, : n + step]

        def patch(m, args, layer):
            x = args[0].clone()
            for k, (at, head) in enumerate(HEADS):
                if at == layer:
                    x[:, n - 1 :, head * 8 : (head + 1) * 8] = mtv.means[k]
            return (x,)
        layers = model.model.text_model.layers
        handles = [layers[i].self_attn.o_proj.register_forward_pre_hook(lambda m, a, i=i: patch(m, a, i))
                   for i in range(2)]
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                           pixel_values=inputs["pixel_values"]).logits[:, -1]
        for h in handles:
            h.remove()
        assert torch.allclose(logits, out.logits[step], atol=1e-5), step


def test_one_reinforce_step_is_the_normalised_reward_times_the_score_function_then_adam():
    n, samples, lr = 5, 6, 0.1
    losses = torch.tensor([2.0, 1.0, 3.0, 0.5, 2.5, 1.5], dtype=torch.float64)
    generator = torch.Generator().manual_seed(4)
    theta, trace = reinforce(lambda masks: losses, n, 1, lr, samples, generator)

    p = torch.full((n,), 1 / (1 + math.exp(-THETA_INIT)))  # sigmoid(-1), inside the clamp
    masks = torch.bernoulli(p.expand(samples, n), generator=torch.Generator().manual_seed(4))
    assert ((masks.sum(0) > 0) & (masks.sum(0) < samples)).all()  # every head drawn in some masks, not in all
    mean = losses.mean()
    std = math.sqrt(sum((x - mean) ** 2 for x in losses) / (samples - 1))  # unbiased, as torch.std
    reward = (losses - mean) / (std + EPS)
    grad = sum(reward[s] * (masks[s].double() - p.double()) for s in range(samples))  # d/dtheta sum_s R_s log P(x_s)
    # Adam's first step: m_hat = g, v_hat = g^2, so theta moves by lr * g / (|g| + 1e-8)
    want = THETA_INIT - lr * grad / (grad.abs() + 1e-8)
    assert torch.allclose(theta.double(), want, atol=1e-6)
    assert trace == [pytest.approx(losses.mean().item())]

    # the objective's gradient itself, at other probabilities
    logits = torch.tensor([-2.0, -0.5, 0.0, 0.7, 1.5], requires_grad=True)
    q = torch.sigmoid(logits)
    policy_objective(q, masks, losses).backward()
    want = sum(reward[s] * (masks[s].double() - q.detach().double()) for s in range(samples))
    assert torch.allclose(logits.grad.double(), want, atol=1e-6)


def test_reinforce_finds_the_one_head_whose_patch_lowers_the_loss():
    helpful, harmful = 2, 4

    def losses(masks):  # head 2 lowers the loss, head 4 raises it, the others do nothing
        return 3.0 - masks[:, helpful].double() + 0.5 * masks[:, harmful].double()

    generator = torch.Generator().manual_seed(0)
    theta, trace = reinforce(losses, 6, 80, 0.1, 16, generator)
    p = torch.sigmoid(theta)
    assert p[helpful] > 0.95 and p.argmax() == helpful
    assert p[harmful] < 0.01
    assert trace[-1] < trace[0]
    best, scores = best_draw(theta, lambda mask: losses(mask).mean().item(), 10, generator)
    assert best[helpful] and not best[harmful]
    assert len(scores) == 10 and losses(best[None]).item() == min(scores)


def test_save_and_load_round_trip(tmp_path):
    model = tiny_idefics2(layers=2, heads=4, kv_heads=2, hidden=32)
    _, inputs, _ = random_icl_batch(model, pad=True, seed=4)
    mtv = mimic.attach(model, MtvConfig(heads=HEADS))
    with torch.no_grad():
        mtv.means.copy_(torch.randn(3, 8))
        shifted = model(**inputs).logits
    assert mimic.count_parameters(mtv.config) == {"trainable": 0, "fitted": 3 * 8, "total": 24}
    mimic.save_pretrained(mtv, tmp_path / "ckpt")
    mimic.detach(model)
    loaded = mimic.from_pretrained(model, tmp_path / "ckpt")
    assert loaded.config.heads == HEADS and torch.equal(loaded.means, mtv.means)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, shifted)
    mimic.detach(model)


@torch.no_grad()
def test_the_fit_keeps_the_means_of_the_heads_it_chose_and_is_seeded(family):
    import mimic.training.loop as training

    lm, data, icd = family
    config = MtvConfig(iterations=None, steps=6, samples=4, best_of=3)
    module, rows, summary = training.train(lm, data, icd, config, FIT, "mlp", None)
    mimic.detach(lm.model)
    heads = module.config.heads
    assert rows == [] and summary["heads"] == heads and summary["iterations"] == 12  # 6 fit queries x 2 draws
    assert summary["fitted_params"] == len(heads) * 8 and summary["trainable_params"] == 0
    assert summary["dev_loss_by_draw"][0] == pytest.approx(module.config.extra["dev_loss_by_draw"][0], abs=1e-6)
    fit_ids, _ = split_dev(sorted(icd["train"]), 0.25, 0)
    qids, draws = iteration_prompts(fit_ids, 2, None)
    means = mean_head_outputs(lm, data, icd, qids, METHODS["mtv"].complete(config, lm.model), 3, draws)
    assert torch.equal(module.means, torch.stack([means[a, b] for a, b in heads]) if heads else module.means)
    again, _ = METHODS["mtv"].fit(lm, data, icd, config, FIT)
    assert again.config.heads == heads and torch.equal(again.means, module.means)  # the same seed, the same fit

    # the dev losses by hand: each dev query's zero-shot prompt alone, CE of its first answer token
    _, dev_ids = split_dev(sorted(icd["train"]), 0.25, 0)

    def dev_loss():
        total = 0.0
        for q in dev_ids:
            inputs = encode_prompts(lm, data.kind, [data.query("train", q)], role="student")
            target = first_answer_tokens(lm, data, [q])
            total += torch.nn.functional.cross_entropy(lm.model(**inputs).logits[:, -1], target).item()
        return total / len(dev_ids)

    assert summary["dev_loss_zero_shot"] == pytest.approx(dev_loss(), abs=1e-5)
    mimic.attach(lm.model, module.config, shift=module)
    assert min(summary["dev_loss_by_draw"]) == pytest.approx(dev_loss(), abs=1e-5)  # the kept draw is the best
    mimic.detach(lm.model)


def test_mtv_is_fitted_by_mimic_train(tmp_path, monkeypatch):
    from mimic.cli import main
    from mimic.methods import read_config

    monkeypatch.chdir(tmp_path)
    task, model = "shapes-vqa", "mini-idefics2"
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"][model]["path"] = str(REPO / "models" / model)
    params["run"].update(models=[model], tasks=[task], untrained=["zero-shot"], trained=["mtv"])
    params["tasks"][task].update(n_train=8, n_support=16, n_eval=4)
    params["icd"].update(shots=2, draws=1, embedding=None)
    params["methods"]["mtv"]["config"].update(steps=4, samples=4, best_of=2)
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for argv in (("prepare", "--task", task), ("sample-icd", "--task", task),
                 ("train", "--model", model, "--task", task, "--method", "mtv")):
        assert main([*argv, "--params", "params.yaml"]) == 0, argv
    ckpt = next(tmp_path.glob(f"results/checkpoints/{model}/{task}/seed-0/mtv"))
    doc = json.loads((ckpt / "mimic_config.json").read_text())
    summary = json.loads((ckpt / "train_summary.json").read_text())
    config = read_config(ckpt)
    assert doc["type"] == "mtv" and config.heads == summary["heads"]
    assert (summary["fit_queries"], summary["dev_queries"], summary["iterations"]) == (6, 2, 6)
    assert summary["candidate_heads"] == 4 * 4 and len(summary["dev_loss_by_draw"]) == 2
    assert summary["fitted_params"] == len(config.heads) * 32 == mimic.count_parameters(config)["fitted"]
