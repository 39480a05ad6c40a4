"""The training objective: its gradient, each term and its weight, the draw per epoch, the online teacher.

The gradient of every MimIC parameter is compared with central finite differences (float64) through
the whole hooked model. The objective tests run on the shipped, pretrained miniature model, where the
alignment term is of the same order as the CE term (on a random model it vanishes beside CE, and a
test of their sum could not tell whether it is there).
"""

from pathlib import Path

import pytest
import torch

import mimic
from mimic import MimicConfig
from mimic.data.batches import TaskData, student_batch
from mimic.data.icd import sample_icds
from mimic.data.loaders import prepare_task
from mimic.data.schema import SPLITS, read_table
from mimic.methods import disabled
from mimic.models.hidden_states import HiddenStateRecorder
from mimic.models.loading import load_model
from mimic.tiny.models import random_icl_batch, tiny_idefics2
from mimic.training.loop import alignment_loss, objective, train
from mimic.training.teacher import TeacherCache, extract, teacher_states

MODEL = Path(__file__).resolve().parents[1] / "models" / "mini-idefics2"
CACHE = {"dtype": "float32", "target": "mlp", "shard_size": 8, "batch_size": 8}
HP = {"epochs": 1, "lr": 1e-2, "warmup_ratio": 0.0, "weight_decay": 0.0, "batch_size": 8, "grad_accum": 1,
      "align_weight": 1.0, "ce_weight": 0.5, "seed": 0}


# -- the gradient, by finite differences -------------------------------------------------------------


def _float64_norm(module, args, output):
    """RMSNorm in the input's precision (transformers' norms round through float32, which would make
    finite differences in float64 as noisy as in float32)."""
    (x,) = args
    return module.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + module.variance_epsilon))


def _tiny_problem(config: MimicConfig):
    model = tiny_idefics2(layers=2, heads=4, kv_heads=2, hidden=32).double()
    for module in model.model.text_model.modules():
        if type(module).__name__.endswith("RMSNorm"):
            module.register_forward_hook(_float64_norm)
    _, inputs, qlens = random_icl_batch(model, batch_size=2, pad=True, seed=3)
    inputs["pixel_values"] = inputs["pixel_values"].double()
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, -2:] = inputs["input_ids"][:, -2:]
    g = torch.Generator().manual_seed(4)
    teachers = [torch.randn(2, n, 32, generator=g, dtype=torch.float64) for n in qlens]
    shift = mimic.attach(model, config).double()
    with torch.no_grad():
        for p in shift.parameters():
            p.normal_(0, 0.5, generator=g)
    return model, shift, inputs, labels, teachers


@pytest.mark.parametrize("config", [MimicConfig(), MimicConfig(per_head=False), MimicConfig(query_dependent=False),
                                    MimicConfig(insert="mlp")], ids=["per-head", "per-layer", "constant", "mlp"])
def test_gradient_of_every_parameter_matches_finite_differences(config):
    model, shift, inputs, labels, teachers = _tiny_problem(config)

    def loss() -> torch.Tensor:
        return objective(model, inputs, labels, teachers, "mlp", 1.0, 0.5)[0]

    loss().backward()
    g = torch.Generator().manual_seed(5)
    eps = 1e-6
    for name, p in shift.named_parameters():
        coords = torch.randperm(p.numel(), generator=g)[:6]
        for c in coords.tolist():
            flat = p.data.view(-1)
            keep = flat[c].item()
            with torch.no_grad():
                flat[c] = keep + eps
                up = loss().item()
                flat[c] = keep - eps
                down = loss().item()
                flat[c] = keep
            numeric = (up - down) / (2 * eps)
            analytic = p.grad.view(-1)[c].item()
            assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), (name, c, numeric, analytic)
        assert p.grad.abs().max() > 1e-6, name  # every parameter really receives a gradient
    mimic.detach(model)


# -- the pretrained miniature model on a small task ---------------------------------------------------


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    torch.manual_seed(0)
    loaded = load_model("mini", str(MODEL))
    root = tmp_path_factory.mktemp("task")
    spec = {"name": "t", "loader": "synthetic", "kind": "vqa", "attribute": "color", "n_train": 8,
            "n_support": 24, "n_eval": 4}
    prepare_task(spec, root / "data", seed=0)
    tables = {s: read_table(root / "data" / f"{s}.parquet") for s in SPLITS}
    icd = sample_icds("t", tables["train"], tables["support"], tables["eval"], shots=4, draws=2, seed=0)
    data = TaskData("vqa", tables)
    extract(loaded, data, icd, root / "teacher", CACHE, {"model": "mini", "task": "t"})
    return loaded, data, icd, TeacherCache(root / "teacher")


def _batch(mini, draw=0):
    loaded, data, icd, cache = mini
    qids = sorted(icd["train"])
    inputs, labels, _ = student_batch(loaded, data, "train", qids)
    return qids, inputs, labels, [cache.get(q, draw) for q in qids]


def _fresh_shift(loaded, seed=0):
    torch.manual_seed(seed)
    shift = mimic.attach(loaded.model, MimicConfig())
    with torch.no_grad():  # a shift large enough that both terms move noticeably
        shift.v.normal_(0, 0.05)
    return shift


def _ce(model, inputs, labels) -> torch.Tensor:
    """Mean cross-entropy of the next-token predictions on the labelled (answer) tokens, by hand."""
    logits = model(**inputs).logits[:, :-1].double()
    target = labels[:, 1:]
    keep = target != -100
    return torch.nn.functional.cross_entropy(logits[keep], target[keep])


def test_both_terms_are_present_with_their_weights_in_loss_and_gradient(mini):
    loaded = mini[0]
    qids, inputs, labels, teachers = _batch(mini)
    shift = _fresh_shift(loaded)
    try:
        # Each term on its own, computed independently of `objective`.
        with HiddenStateRecorder(loaded.model, "mlp", keep_graph=True) as rec:
            rec.select(max(t.shape[1] for t in teachers))
            ce = _ce(loaded.model, inputs, labels)
            align = alignment_loss(rec.stacked(), teachers)
        grads = {}
        for name, term in (("align", align), ("ce", ce)):
            grads[name] = torch.autograd.grad(term, list(shift.parameters()), retain_graph=True)
        # Alignment is not negligible on the pretrained model: the test could not miss it.
        assert align.item() > 0.05 * ce.item() > 0
        for a_w, c_w in ((1.0, 0.5), (0.3, 2.0), (1.0, 0.0), (0.0, 1.0)):
            loss, a, c = objective(loaded.model, inputs, labels, teachers, "mlp", a_w, c_w)
            assert a.item() == pytest.approx(align.item(), rel=1e-5)
            assert c.item() == pytest.approx(ce.item(), rel=1e-5)
            assert loss.item() == pytest.approx(a_w * align.item() + c_w * ce.item(), rel=1e-5)
            got = torch.autograd.grad(loss, list(shift.parameters()))
            for g, ga, gc in zip(got, grads["align"], grads["ce"], strict=True):
                want = a_w * ga + c_w * gc
                # float32 gradients summed in another order: within a few float32 eps of the largest entry
                assert torch.allclose(g, want, rtol=1e-4, atol=1e-6 * want.abs().max().item())
    finally:
        mimic.detach(loaded.model)


def test_ce_labels_are_exactly_the_answer_and_its_stop_token(mini):
    loaded, data, icd, _ = mini
    qids, inputs, labels, _ = _batch(mini)
    tok = loaded.processor.tokenizer
    for i, q in enumerate(qids):
        answer_ids = tok(" " + data.target("train", q) + "\n", add_special_tokens=False)["input_ids"]
        n = len(answer_ids)
        assert labels[i, -n:].tolist() == answer_ids == inputs["input_ids"][i, -n:].tolist()
        assert (labels[i, :-n] == -100).all()


def test_each_epoch_uses_draw_epoch_mod_draws(mini, monkeypatch):
    loaded, data, icd, cache = mini
    requested = []
    real_get = cache.get

    def spy(qid, draw):
        requested.append(draw)
        return real_get(qid, draw)

    monkeypatch.setattr(cache, "get", spy)
    _, rows, _ = train(loaded, data, icd, MimicConfig(), {**HP, "epochs": 3, "batch_size": 4}, "mlp", cache)
    mimic.detach(loaded.model)
    per_epoch = len(icd["train"])
    assert requested == [0] * per_epoch + [1] * per_epoch + [0] * per_epoch
    # the online teacher takes the same draws: its demonstrations are icd["train"][q][draw]
    demos = []
    import mimic.training.loop as training

    real_forward = training.teacher_forward

    def spy_forward(loaded_, data_, chunk, target, logits_topk=0, split="train"):
        demos.extend((q, d, list(ids)) for q, d, ids in chunk)
        return real_forward(loaded_, data_, chunk, target, logits_topk, split)

    monkeypatch.setattr(training, "teacher_forward", spy_forward)
    train(loaded, data, icd, MimicConfig(), {**HP, "epochs": 3, "batch_size": 4}, "mlp", None)
    mimic.detach(loaded.model)
    assert [d for _, d, _ in demos] == [0] * per_epoch + [1] * per_epoch + [0] * per_epoch
    assert all(ids == icd["train"][q][d] for q, d, ids in demos)


def test_the_online_teacher_is_the_unshifted_model(mini):
    loaded, data, icd, _ = mini
    qids = sorted(icd["train"])[:4]
    chunk = [(q, 1, icd["train"][q][1]) for q in qids]
    reference, _ = teacher_states(loaded, data, chunk, "mlp")  # nothing attached
    _fresh_shift(loaded)
    try:
        shifted, _ = teacher_states(loaded, data, chunk, "mlp")
        with disabled(loaded.model):
            teacher, _ = teacher_states(loaded, data, chunk, "mlp")
        shifted_again, _ = teacher_states(loaded, data, chunk, "mlp")  # re-enabled afterwards
    finally:
        mimic.detach(loaded.model)
    assert all(torch.equal(a, b) for a, b in zip(teacher, reference, strict=True))
    assert all((a - b).abs().max() > 1e-3 for a, b in zip(shifted, reference, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(shifted_again, shifted, strict=True))


def test_online_training_equals_cached_training_step_by_step(mini):
    """Cached (float32) and online teachers give the same alignment at every step, tightly."""
    loaded, data, icd, cache = mini
    hp = {**HP, "epochs": 4, "batch_size": 4, "lr": 5e-2}
    _, cached, _ = train(loaded, data, icd, MimicConfig(), hp, "mlp", cache)
    mimic.detach(loaded.model)
    _, online, _ = train(loaded, data, icd, MimicConfig(), hp, "mlp", None)
    mimic.detach(loaded.model)
    assert len(cached) == len(online) == 8
    for a, b in zip(cached, online, strict=True):
        assert a["align_loss"] == pytest.approx(b["align_loss"], rel=1e-4)
        assert a["ce_loss"] == pytest.approx(b["ce_loss"], rel=1e-4)


# -- optimiser settings ---------------------------------------------------------------------------------


def _shift_of_ones():
    from mimic import MimicShift

    shift = MimicShift(MimicConfig(), 2, 2, 3)
    with torch.no_grad():
        for p in shift.parameters():
            p.fill_(1.0)
    return shift


@pytest.mark.parametrize("decay_bias", [False, True])
def test_biases_get_no_weight_decay_unless_asked(decay_bias):
    from mimic.training.loop import make_optimizer

    shift = _shift_of_ones()
    opt = make_optimizer(shift, {"lr": 0.1, "weight_decay": 0.5, "decay_bias": decay_bias})
    for p in shift.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # a zero gradient: only the decoupled weight decay moves a parameter, by lr * wd
    assert torch.allclose(shift.v, torch.full_like(shift.v, 1 - 0.1 * 0.5))
    assert torch.allclose(shift.w, torch.full_like(shift.w, 1 - 0.1 * 0.5))
    assert torch.allclose(shift.b, torch.full_like(shift.b, 1 - 0.1 * 0.5 if decay_bias else 1.0))


@pytest.mark.parametrize("max_norm", [None, 0.05])
def test_gradients_are_clipped_to_max_grad_norm_before_each_step(mini, monkeypatch, max_norm):
    import mimic.training.loop as training

    loaded, data, icd, cache = mini
    norms = []
    real_step = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    training.train(loaded, data, icd, MimicConfig(), {**HP, "epochs": 2, "batch_size": 4, "max_grad_norm": max_norm},
                   "mlp", cache)
    mimic.detach(loaded.model)
    assert len(norms) == 4
    if max_norm is None:
        assert max(norms) > 0.05  # unclipped, the gradients are larger than the bound tested below
    else:
        assert max(norms) <= max_norm * (1 + 1e-5)


def test_prompt_ce_labels_every_real_token_after_the_first(mini):
    loaded, data, icd, _ = mini
    qids = sorted(icd["train"])[:3]
    inputs, labels, _ = student_batch(loaded, data, "train", qids, ce_tokens="prompt")
    for i in range(len(qids)):
        real = inputs["attention_mask"][i].bool().nonzero().flatten()
        assert (labels[i, real[1:]] == inputs["input_ids"][i, real[1:]]).all()
        assert labels[i, real[0]] == -100 and (labels[i, : real[0]] == -100).all()
    with pytest.raises(ValueError, match="ce_tokens = 'all'"):
        student_batch(loaded, data, "train", qids, ce_tokens="all")


# -- the loss terms' precision and device, the optimiser's groups, the divergence check, the log ------------


def test_alignment_loss_is_float32_on_the_students_device_whatever_the_inputs_precision():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(2, 2, 3, 4, generator=g).to(torch.bfloat16)  # [L, b, n_max, H]
    teachers = [torch.randn(2, 2, 4, generator=g).to(torch.bfloat16), torch.randn(2, 3, 4, generator=g).double()]
    sq = torch.zeros(2, dtype=torch.float64)
    for i, t in enumerate(teachers):  # by hand, in float64
        sq += (student[:, i, 3 - t.shape[1] :].double() - t.double()).pow(2).sum(dim=(1, 2))
    want = (sq / (2 * 4 + 3 * 4)).mean().item()
    got = alignment_loss(student, teachers)
    assert got.dtype == torch.float32 and got.item() == pytest.approx(want, rel=1e-6)
    # a cache on the CPU, a student elsewhere: the teacher follows the student
    assert alignment_loss(student.to("meta"), teachers).device.type == "meta"


def test_answer_kl_is_float32_on_the_students_device_whatever_the_inputs_precision():
    from mimic.training.loop import answer_kl

    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(1, 4, 6, generator=g) * 3).to(torch.bfloat16)  # 3 answer positions, vocabulary 6
    top = torch.topk(torch.log_softmax(torch.randn(3, 6, generator=g, dtype=torch.float64) * 2, -1), 4)
    s = torch.log_softmax(logits[0, :3].double(), -1)
    t = top.values
    kl = (t.exp() * (t - s.gather(-1, top.indices))).sum(-1)
    t_rest = 1 - t.exp().sum(-1)
    s_rest = torch.log(1 - s.exp().gather(-1, top.indices).sum(-1))
    want = (kl + t_rest * (t_rest.log() - s_rest)).mean().item()
    got = answer_kl(logits, [3], [(top.values, top.indices)])
    assert got.dtype == torch.float32 and got.item() == pytest.approx(want, rel=1e-5)
    assert answer_kl(logits.to("meta"), [3], [(top.values, top.indices)]).device.type == "meta"


def test_is_bias_takes_the_last_name_only():
    from mimic.training.loop import is_bias

    assert [is_bias(n) for n in ("b", "bias", "lin.bias", "layers.0.mlp.b", "v", "w", "lin.weight", "bias.w",
                                 "my bias", "bias_scale")] == [True, True, True, True] + [False] * 6


def test_biases_are_optimised_without_decay_and_the_rest_with_it():
    from mimic.training.loop import make_optimizer

    shift = _shift_of_ones()
    opt = make_optimizer(shift, {"lr": 0.1, "weight_decay": 0.5, "decay_bias": False})
    for p in shift.parameters():
        p.grad = torch.ones_like(p)
    opt.step()  # Adam's first step moves every parameter by lr (unit gradient), after decay of lr * wd
    assert torch.allclose(shift.v, torch.full_like(shift.v, 1 - 0.1 * 0.5 - 0.1))
    assert torch.allclose(shift.b, torch.full_like(shift.b, 1 - 0.1))


def test_check_finite_names_the_step_and_the_first_three_bad_tensors():
    from mimic.errors import TrainingDiverged
    from mimic.training.loop import check_finite

    module = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(3)])
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    module.append(frozen)
    for p in module.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    check_finite(3, 1, torch.tensor(0.5), module, 0.01)  # all finite: nothing raised
    check_finite(3, 1, torch.tensor(0.5), module, 0.01, updated=True)
    with torch.no_grad():
        frozen.weight.fill_(float("nan"))  # not trained: never looked at
    check_finite(3, 1, torch.tensor(0.5), module, 0.01, updated=True)
    tail = "; nothing was saved. Lower the learning rate (lr = 0.001) or check the teacher cache"
    module[0].bias.grad[0] = float("inf")
    module[1].weight.grad[1, 0] = float("nan")
    module[2].weight.grad[0, 0] = float("nan")
    module[2].bias.grad[0] = float("nan")
    with pytest.raises(TrainingDiverged) as err:
        check_finite(7, 2, torch.tensor(0.5), module, 1e-3)
    assert str(err.value) == "training diverged at step 7 (epoch 2): the gradient of 0.bias, 1.weight, 2.weight " \
                             "hold nan or inf" + tail
    with torch.no_grad():
        module[1].bias.fill_(float("inf"))
    with pytest.raises(TrainingDiverged) as err:
        check_finite(7, 2, torch.tensor(0.5), module, 1e-3, updated=True)
    assert str(err.value) == "training diverged at step 7 (epoch 2): the weights of 1.bias hold nan or inf" + tail
    with pytest.raises(TrainingDiverged) as err:
        check_finite(0, 0, torch.tensor(float("inf")), module, 1e-3)
    assert str(err.value) == "training diverged at step 0 (epoch 0): the loss is inf" + tail


def test_log_csv_writes_every_column_in_order():
    from mimic.training.loop import log_csv

    rows = [{"step": 0, "epoch": 0, "loss": 1.5, "ce_loss": 1.5, "lr": 0.01},
            {"step": 1, "epoch": 0, "loss": 0.25, "align_loss": 0.125, "ce_loss": 0.25, "kl_loss": 0.0, "lr": 0.005}]
    assert log_csv(rows) == ("step,epoch,loss,align_loss,ce_loss,kl_loss,lr\r\n"
                             "0,0,1.5,,1.5,,0.01\r\n"
                             "1,0,0.25,0.125,0.25,0.0,0.005\r\n")


def test_the_student_states_cover_teacher_rows_longer_than_the_hidden_size():
    model = tiny_idefics2(layers=2, heads=2, kv_heads=1, hidden=8)
    _, inputs, qlens = random_icl_batch(model, batch_size=2, pad=True, seed=3)
    assert max(qlens) > 8  # more aligned positions than hidden features
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, -2:] = inputs["input_ids"][:, -2:]
    g = torch.Generator().manual_seed(4)
    teachers = [torch.randn(2, n, 8, generator=g) for n in qlens]
    mimic.attach(model, MimicConfig())
    try:
        with torch.no_grad():
            with HiddenStateRecorder(model, "mlp") as rec:
                rec.select(max(qlens))
                model(**inputs)
                want = alignment_loss(rec.stacked(), teachers)
            _, align, _ = objective(model, inputs, labels, teachers, "mlp", 1.0, 0.0)
    finally:
        mimic.detach(model)
    assert align.item() == pytest.approx(want.item(), rel=1e-6)
