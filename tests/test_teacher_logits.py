"""The teacher cache's answer distributions (top-k), the KL on them, and LIVE's training on them.

The tiny Idefics2 family (real processor, a vocabulary of a few hundred tokens) makes top-k
smaller than the vocabulary; a k above it stores the whole distribution.
"""

import logging
import math

import pytest
import torch

import mimic
from mimic.data.batches import student_batch, teacher_batch
from mimic.methods.live import LiveConfig
from mimic.tiny.families import tiny_family, tiny_task
from mimic.training.loop import TeacherTargets, answer_kl, objective_terms, train
from mimic.training.teacher import TeacherCache, extract

SETTINGS = {"dtype": "float32", "target": "mlp", "shard_size": 4, "batch_size": 3}
HP = {"epochs": 2, "lr": 1e-2, "warmup_ratio": 0.0, "weight_decay": 0.0, "batch_size": 2, "grad_accum": 1,
      "kl_weight": 1.0, "ce_weight": 0.5, "seed": 0}


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    lm = tiny_family("idefics2")
    # A random tiny model's answer distributions are nearly uniform (KL ~1e-6, at the 6 decimals of a training
    # row, where cached and online differed by rounding alone); a sharper head gives KLs of ~0.04 to compare.
    with torch.no_grad():
        lm.model.lm_head.weight.mul_(30)
    data, icd = tiny_task("vqa", n_train=4, n_support=8)
    root = tmp_path_factory.mktemp("teacher")
    for k in (5, 100_000):
        extract(lm, data, icd, root / f"k{k}", {**SETTINGS, "logits_topk": k}, {"model": "t", "task": "t"})
    return lm, data, icd, root


def test_cached_answer_logits_are_the_teachers_own_top_k(family):
    lm, data, icd, root = family
    cache = TeacherCache(root / "k5")
    assert cache.manifest["logits_topk"] == 5
    for q in sorted(icd["train"]):
        for d in range(icd["draws"]):
            t_in = teacher_batch(lm, data, "train", [q], [icd["train"][q][d]])  # alone: no padding
            _, labels, (a,) = student_batch(lm, data, "train", [q])
            assert t_in["input_ids"][0, -a:].tolist() == labels[0, -a:].tolist()  # the last a tokens: the answer
            with torch.no_grad():
                logits = lm.model(**t_in).logits[0, -(a + 1) : -1]  # the a positions that predict them
            top = torch.topk(torch.log_softmax(logits.float(), dim=-1), 5)
            logprobs, ids = cache.get_answer_logits(q, d)
            assert logprobs.shape == (a, 5) and torch.equal(ids, top.indices)
            assert torch.allclose(logprobs, top.values, atol=1e-5)


def test_a_k_above_the_vocabulary_keeps_the_whole_distribution(family):
    lm, data, icd, root = family
    cache = TeacherCache(root / "k100000")
    vocab = lm.model.config.text_config.vocab_size
    logprobs, ids = cache.get_answer_logits(sorted(icd["train"])[0], 1)
    assert ids.shape[-1] == vocab and torch.equal(ids.sort(dim=-1).values, torch.arange(vocab).expand_as(ids))
    assert torch.allclose(logprobs.exp().sum(-1), torch.ones(len(ids)), atol=1e-5)
    with pytest.raises(KeyError, match="teacher.logits_topk = 0"):
        stale = TeacherCache(root / "k5")
        stale.manifest["logits_topk"] = 0
        stale.get_answer_logits(sorted(icd["train"])[0], 0)


def test_answer_kl_by_hand():
    # one row, 3 kept positions, vocabulary 4; the answer is 2 tokens: positions 0 and 1 predict them
    student = torch.tensor([[[1.0, 0.0, -1.0, 0.5], [0.2, 0.3, 2.0, -0.5], [9.0, 9.0, 9.0, 9.0]]])
    teacher = torch.tensor([[0.5, 1.5, 0.0, -1.0], [-2.0, 0.0, 1.0, 1.0]])

    def softmax(row):
        z = [math.exp(x) for x in row]
        return [x / sum(z) for x in z]

    p = [softmax(r) for r in teacher.tolist()]
    s = [softmax(r) for r in student[0, :2].tolist()]
    full = sum(pi * math.log(pi / si) for pr, sr in zip(p, s, strict=True) for pi, si in zip(pr, sr, strict=True)) / 2
    logp = torch.log_softmax(teacher, dim=-1)
    ids = torch.arange(4).expand(2, 4)
    assert answer_kl(student, [2], [(logp, ids)]).item() == pytest.approx(full, rel=1e-6)
    # top-2 of the teacher plus one bin for the rest of each distribution
    top = torch.topk(logp, 2)
    coarse = 0.0
    for t in range(2):
        keep = top.indices[t].tolist()
        rest_p = 1 - sum(p[t][i] for i in keep)
        rest_s = 1 - sum(s[t][i] for i in keep)
        coarse += sum(p[t][i] * math.log(p[t][i] / s[t][i]) for i in keep) + rest_p * math.log(rest_p / rest_s)
    assert answer_kl(student, [2], [(top.values, top.indices)]).item() == pytest.approx(coarse / 2, rel=1e-6)
    assert coarse / 2 < full  # coarsening a distribution can only lower the KL


def test_live_trains_on_kl_and_ce_from_the_cached_logits_and_online_agrees(family, monkeypatch):
    lm, data, icd, root = family
    cache = TeacherCache(root / "k5")
    calls = {"states": 0, "logits": 0}
    real_get, real_logits = cache.get, cache.get_answer_logits
    monkeypatch.setattr(cache, "get", lambda *a: calls.__setitem__("states", calls["states"] + 1) or real_get(*a))
    monkeypatch.setattr(cache, "get_answer_logits",
                        lambda *a: calls.__setitem__("logits", calls["logits"] + 1) or real_logits(*a))
    _, cached, summary = train(lm, data, icd, LiveConfig(), HP, "mlp", cache)
    mimic.detach(lm.model)
    assert calls == {"states": 0, "logits": 2 * 4}  # every query at every epoch, never the states
    assert summary["teacher_needs"] == ["logits"] and summary["trainable_params"] == 2 * 32 + 2
    assert all(r["loss"] == pytest.approx(r["kl_loss"] + 0.5 * r["ce_loss"], rel=1e-5) for r in cached)
    assert all("align_loss" not in r for r in cached)
    _, online, summary = train(lm, data, icd, LiveConfig(), HP, "mlp", None, logits_topk=5)
    mimic.detach(lm.model)
    assert summary["teacher_mode"] == "online"
    for a, b in zip(cached, online, strict=True):
        assert a["kl_loss"] > 1e-3 and a["kl_loss"] == pytest.approx(b["kl_loss"], rel=1e-4)


def test_the_kl_term_is_in_the_loss_and_gradient_with_its_weight(family):
    lm, data, icd, root = family
    qids = sorted(icd["train"])
    inputs, labels, lengths = student_batch(lm, data, "train", qids)
    # a peaked made-up teacher (the random tiny model's own ICL distribution is close to its zero-shot one)
    g = torch.Generator().manual_seed(0)
    vocab = lm.model.config.text_config.vocab_size
    fake = [torch.topk(torch.log_softmax(torch.randn(a, vocab, generator=g) * 4, -1), 5) for a in lengths]
    teacher = TeacherTargets(logits=[(t.values, t.indices) for t in fake])
    live = mimic.attach(lm.model, LiveConfig())
    with torch.no_grad():
        live.v.normal_(0, 1.0)
    try:
        _, terms = objective_terms(lm.model, inputs, labels, lengths, "mlp", {"kl": 1.0}, teacher)
        g_kl = torch.autograd.grad(terms["kl"], [live.v])[0]
        _, terms = objective_terms(lm.model, inputs, labels, lengths, "mlp", {"ce": 1.0}, teacher)
        g_ce = torch.autograd.grad(terms["ce"], [live.v])[0]
        loss, terms = objective_terms(lm.model, inputs, labels, lengths, "mlp", {"kl": 2.0, "ce": 0.5}, teacher)
        assert terms["kl"].item() > 0.1
        assert loss.item() == pytest.approx(2 * terms["kl"].item() + 0.5 * terms["ce"].item())
        g = torch.autograd.grad(loss, [live.v])[0]
        assert torch.allclose(g, 2 * g_kl + 0.5 * g_ce, atol=1e-7, rtol=1e-4)
    finally:
        mimic.detach(lm.model)


def _kept_logits(model):
    """A forward hook recording how many positions' logits each call of ``model`` computed."""
    widths = []
    handle = model.register_forward_hook(lambda m, a, out: widths.append(out.logits.shape[1]))
    return widths, handle


def test_only_the_labelled_span_and_the_answer_positions_get_logits(family):
    lm, data, icd, root = family
    qids = sorted(icd["train"])
    inputs, labels, lengths = student_batch(lm, data, "train", qids)
    first = int((labels != -100).any(dim=0).nonzero()[0])  # the first column any row labels
    with torch.no_grad():
        full = lm.model(**inputs).logits
    widths, handle = _kept_logits(lm.model)
    try:
        with torch.no_grad():
            _, terms = objective_terms(lm.model, inputs, labels, lengths, "mlp", {"ce": 1.0}, TeacherTargets())
            assert widths == [labels.shape[1] - first + 1] and widths[0] < labels.shape[1]
            # nothing labelled, no teacher: one position; the KL alone still gets all answer positions
            unlabelled = torch.full_like(labels, -100)
            objective_terms(lm.model, inputs, unlabelled, lengths, "mlp", {"align": 1.0}, TeacherTargets())
            g = torch.Generator().manual_seed(0)
            fake = [torch.topk(torch.log_softmax(torch.randn(a, full.shape[-1], generator=g), -1), 5) for a in lengths]
            teacher = TeacherTargets(logits=[(t.values, t.indices) for t in fake])
            loss, terms = objective_terms(lm.model, inputs, unlabelled, lengths, "mlp", {"kl": 1.0}, teacher)
    finally:
        handle.remove()
    assert widths[1:] == [1, max(lengths) + 1]
    want = answer_kl(full, lengths, teacher.logits)
    assert terms["kl"].item() == pytest.approx(want.item(), rel=1e-5) and loss.item() == terms["kl"].item()


def test_teacher_targets_fetch_or_compute_only_what_the_terms_need(family, monkeypatch):
    import mimic.training.loop as training

    lm, data, icd, root = family
    cache = TeacherCache(root / "k5")
    qids = sorted(icd["train"])[:3]
    calls = []
    real = training.teacher_forward

    def spy(loaded_, data_, chunk, target, logits_topk=0, split="train"):
        calls.append(([(q, d, list(ids)) for q, d, ids in chunk], logits_topk))
        return real(loaded_, data_, chunk, target, logits_topk, split)

    monkeypatch.setattr(training, "teacher_forward", spy)
    none = training.teacher_targets(lm, data, icd, qids, 1, set(), "mlp", None, 5)
    assert (none.states, none.logits, calls) == (None, None, [])
    # the cache: states, logits or both, of this draw
    states = training.teacher_targets(lm, data, icd, qids, 1, {"states"}, "mlp", cache, 5)
    logits = training.teacher_targets(lm, data, icd, qids, 1, {"logits"}, "mlp", cache, 5)
    both = training.teacher_targets(lm, data, icd, qids, 1, {"states", "logits"}, "mlp", cache, 5)
    assert states.logits is None and logits.states is None and calls == []
    for i, q in enumerate(qids):
        assert torch.equal(states.states[i], cache.get(q, 1)) and torch.equal(both.states[i], cache.get(q, 1))
        for got in (logits.logits[i], both.logits[i]):
            assert all(torch.equal(a, b) for a, b in zip(got, cache.get_answer_logits(q, 1), strict=True))
    # online: the teacher runs once per batch on the first `shots` demonstrations, top-k only when needed
    states = training.teacher_targets(lm, data, icd, qids, 1, {"states"}, "mlp", None, 5, shots=1)
    logits = training.teacher_targets(lm, data, icd, qids, 1, {"logits"}, "mlp", None, 5)
    chunk = [(q, 1, icd["train"][q][1]) for q in qids]
    assert calls == [([(q, d, ids[:1]) for q, d, ids in chunk], 0), (chunk, 5)]
    assert states.logits is None and logits.states is None
    reference = real(lm, data, chunk, "mlp", 5)
    assert len(logits.logits) == len(qids)
    for (lp, ids), want_lp, want_ids in zip(logits.logits, reference.logprobs, reference.indices, strict=True):
        assert torch.equal(ids, want_ids) and torch.allclose(lp, want_lp, atol=1e-6)
    one_shot = real(lm, data, [(q, d, ids[:1]) for q, d, ids in chunk], "mlp")
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(states.states, one_shot.states, strict=True))


def _lr_at(step: int, warmup: int, total: int, lr: float) -> float:
    """Linear warmup then cosine decay to 0 (transformers' schedule), by hand."""
    if step < warmup:
        return lr * step / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def test_train_accumulates_steps_logs_and_times_as_documented(family, monkeypatch, fake_training_clock, caplog):
    """LIVE on the cached top-5 logits, 4 queries in batches of 1, 3 batches per step, 6 epochs: every
    row, gradient, learning rate, log line and summary figure, recomputed from what the loop was given."""
    import random

    import mimic.training.loop as training

    lm, data, icd, root = family
    cache = TeacherCache(root / "k5")
    hp = {**HP, "epochs": 6, "batch_size": 1, "grad_accum": 3, "seed": 3, "warmup_ratio": 0.5, "max_grad_norm": None}
    torch.manual_seed(hp["seed"])
    start_v = mimic.attach(lm.model, LiveConfig()).v.detach().clone()  # the seed drives the module's init
    mimic.detach(lm.model)
    batches, steps = [], []
    real_terms, real_targets = training.objective_terms, training.teacher_targets

    def targets(loaded_, data_, icd_, qids, draw, *args):
        batches.append({"qids": list(qids), "draw": draw})
        return real_targets(loaded_, data_, icd_, qids, draw, *args)

    def terms(model, *args):
        loss, parts = real_terms(model, *args)
        params = list(mimic.methods.attached(model).module.parameters())
        if len(batches) == 1:
            assert torch.equal(params[0], start_v)
        grads = torch.autograd.grad(loss, params, retain_graph=True)
        batches[-1].update(loss=loss.item(), terms={k: v.item() for k, v in parts.items()}, grads=grads)
        return loss, parts

    real_step = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        steps.append([p.grad.clone() for g in self.param_groups for p in g["params"]])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(training, "teacher_targets", targets)
    monkeypatch.setattr(training, "objective_terms", terms)
    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    caplog.set_level(logging.INFO, logger="mimic.train")
    module, rows, summary = train(lm, data, icd, LiveConfig(), hp, "mlp", cache)
    mimic.detach(lm.model)

    qids = sorted(icd["train"])
    want_order = [([q], e % 2) for e in range(6) for q in random.Random(3 * 1000 + e).sample(qids, 4)]
    assert [(b["qids"], b["draw"]) for b in batches] == want_order
    windows = [batches[e * 4 + s : e * 4 + s + n] for e in range(6) for s, n in ((0, 3), (3, 1))]  # the last: short
    assert len(rows) == len(steps) == 12
    lines = [r.getMessage() for r in caplog.records if r.name == "mimic.train" and not hasattr(r, "progress")]
    logged = []
    for k, (row, window, grads) in enumerate(zip(rows, windows, steps, strict=True)):
        acc = {}
        for b in window:
            for key, value in (("loss", b["loss"]), *((f"{t}_loss", v) for t, v in b["terms"].items())):
                acc[key] = acc.get(key, 0.0) + value / 3
        assert row == {"step": k, "epoch": k // 2, **{key: round(v, 6) for key, v in acc.items()},
                       "lr": pytest.approx(_lr_at(k + 1, 6, 12, hp["lr"]), abs=1e-12)}
        assert list(row) == ["step", "epoch", "loss", "ce_loss", "kl_loss", "lr"]
        for g, *parts in zip(grads, *(b["grads"] for b in window), strict=True):  # the mean gradient / grad_accum
            want = sum(parts) / 3
            assert torch.allclose(g, want, rtol=1e-4, atol=1e-6 * want.abs().max().item())
        if k % 10 == 0 or k % 2 == 1:  # every 10th step and each epoch's last
            logged.append(f"epoch {k // 2} step {k} " + " ".join(f"{key} {v:.5f}" for key, v in acc.items()))
    assert lines == logged + ["trained live: 12 steps in 3.1s (teacher 1.5s, cached)"]
    progress = [r.getMessage() for r in caplog.records if r.name == "mimic.train" and hasattr(r, "progress")]
    assert progress[-1].startswith("train live: 12/12 (100%) ")
    # 1 + 2 per batch + 1 clock reads: 50 * 1/16 s, less the first; the teacher: 24 * 1/16 s
    assert summary == {"steps": 12, "seconds": 3.06, "teacher_seconds": 1.5, "teacher_mode": "cached",
                       "teacher_needs": ["logits"], "trainable_params": 2 * 32 + 2, "fitted_params": 0}


def test_training_stops_at_the_first_non_finite_loss_or_weight(family, monkeypatch):
    from mimic.errors import TrainingDiverged

    lm, data, icd, root = family
    cache = TeacherCache(root / "k5")
    tail = "; nothing was saved. Lower the learning rate (lr = {}) or check the teacher cache"
    with pytest.raises(TrainingDiverged) as err:  # an infinite step: finite gradients, then weights of inf / nan
        train(lm, data, icd, LiveConfig(), {**HP, "lr": float("inf")}, "mlp", cache)
    mimic.detach(lm.model)
    assert str(err.value) == "training diverged at step 0 (epoch 0): the weights of v, scale hold nan or inf" + \
        tail.format("inf")
    real = cache.get_answer_logits
    monkeypatch.setattr(cache, "get_answer_logits", lambda q, d: (real(q, d)[0] * float("nan"), real(q, d)[1]))
    with pytest.raises(TrainingDiverged) as err:
        train(lm, data, icd, LiveConfig(), HP, "mlp", cache)
    mimic.detach(lm.model)
    assert str(err.value) == "training diverged at step 0 (epoch 0): the loss is nan" + tail.format("0.01")
