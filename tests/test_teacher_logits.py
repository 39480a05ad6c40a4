"""The teacher cache's answer distributions (top-k), the KL on them, and LIVE's training on them.

The tiny Idefics2 family (real processor, a vocabulary of a few hundred tokens) makes top-k
smaller than the vocabulary; a k above it stores the whole distribution.
"""

import math

import pytest
import torch

import mimic
from mimic.batches import student_batch, teacher_batch
from mimic.methods.live import LiveConfig
from mimic.teacher import TeacherCache, extract
from mimic.tiny_families import tiny_family, tiny_task
from mimic.training import TeacherTargets, answer_kl, objective_terms, train

SETTINGS = {"dtype": "float32", "target": "mlp", "shard_size": 4, "batch_size": 3}
HP = {"epochs": 2, "lr": 1e-2, "warmup_ratio": 0.0, "weight_decay": 0.0, "batch_size": 2, "grad_accum": 1,
      "kl_weight": 1.0, "ce_weight": 0.5, "seed": 0}


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    lm = tiny_family("idefics2")
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
        assert a["kl_loss"] == pytest.approx(b["kl_loss"], rel=1e-4)


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
    import mimic.training as training

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
