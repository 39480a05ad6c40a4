"""STAVE (mimic.methods.stave) against hand computations: the decoder's input is the input embeddings
plus the readout vector / sqrt(N_readout) on the last prompt token and the answer cue, plus the context
vector / sqrt(N_context) on every other real non-BOS token (the query image's merged embeddings
included), nothing on a cached decoding step; zero vectors are the zero-shot model; 2 x hidden
parameters; checkpoints round-trip; the training groups of real prompts leave demonstrations (but
FIRST), BOS, padding and answers alone; paired training through the real loop lowers both losses."""

import math

import pytest
import torch

import mimic
from mimic.data.batches import aligned_lengths, instruction_tokens, prompt_layout, student_batch, teacher_batch
from mimic.methods import METHODS
from mimic.methods.stave import CONTEXT, NONE, READOUT, StaveConfig, layout_groups, prompt_groups
from mimic.models.adapters import positions_from_mask
from mimic.tiny.models import random_icl_batch, tiny_idefics, tiny_idefics2
from mimic.training.loop import answer_cross_entropy, train

BOS = 1  # the tiny models' bos_token_id


def batch_with_bos(model, seed: int = 4) -> dict:
    """A padded zero-shot batch (image tokens, then text) whose rows 0 and 1 start with the BOS; row 2 does not."""
    _, inputs, _ = random_icl_batch(model, pad=True, seed=seed)
    b = inputs["input_ids"].shape[0]
    first = torch.tensor([[BOS], [BOS]] + [[0]] * (b - 2))
    inputs["input_ids"] = torch.cat([first, inputs["input_ids"]], 1)
    inputs["attention_mask"] = torch.cat([torch.tensor([[1], [1]] + [[0]] * (b - 2)), inputs["attention_mask"]], 1)
    inputs["position_ids"] = positions_from_mask(inputs["attention_mask"])
    return inputs


def decoder_inputs(model, layers) -> tuple[list, object]:
    """Record every hidden state entering the first decoder layer (the decoder's input embeddings)."""
    seen = []

    def hook(mod, args, kwargs):
        seen.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    return seen, layers[0].register_forward_pre_hook(hook, with_kwargs=True)


def hand_expected(embeds: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, vectors: torch.Tensor, cue) -> tuple:
    """embeds + v_readout / sqrt(N_A) on the readout span, + v_context / sqrt(N_B) on every other real non-BOS token."""
    out, spans = embeds.clone(), []
    for i in range(ids.shape[0]):
        real = [t for t in range(ids.shape[1]) if mask[i, t]]
        if ids[i, real[0]] == BOS:
            real = real[1:]
        r = len(cue) if cue and ids[i, real[-len(cue):]].tolist() == cue else 1
        readout, context = real[-r:], real[:-r]
        spans.append((r, len(context)))
        for tokens, v in ((readout, vectors[0]), (context, vectors[1])):
            scale = torch.tensor(1 / math.sqrt(len(tokens)), dtype=torch.float32)
            for t in tokens:
                out[i, t] = embeds[i, t] + v * scale
    return out, spans


@torch.no_grad()
def test_the_prefill_input_embeddings_are_the_hand_computed_sums():
    model = tiny_idefics2()
    inputs = batch_with_bos(model)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    cue = ids[0, -2:].tolist()  # row 0 ends with its "answer cue"; the others (most likely) do not
    stave = mimic.attach(model, StaveConfig(answer_cue=cue))
    stave.vectors.copy_(torch.randn(2, stave.config.hidden_size))
    seen, handle = decoder_inputs(model, model.model.text_model.layers)
    with mimic.disabled(model):
        model(**inputs)
    model(**inputs)
    handle.remove()
    base, shifted = seen
    want, spans = hand_expected(base, ids, mask, stave.vectors, cue)
    assert [r for r, _ in spans] == [2, 1, 1] and spans[0][1] > 0
    assert torch.equal(shifted, want)
    image = ids == model.config.image_token_id
    assert image.any() and (shifted - base)[image].abs().amax(-1).gt(0).all()  # the merged image embeddings too
    assert torch.equal(shifted[mask == 0], base[mask == 0]) and torch.equal(shifted[:2, 0], base[:2, 0])  # pad, BOS
    mimic.detach(model)


@torch.no_grad()
def test_idefics_v1_gets_the_vectors_on_its_embeddings_before_the_first_cross_attention():
    model = tiny_idefics()
    _, inputs, _ = random_icl_batch(model, pad=True, seed=2)
    stave = mimic.attach(model, StaveConfig())
    stave.vectors.copy_(torch.randn(2, stave.config.hidden_size))
    seen = []
    handle = model.model.embed_tokens.register_forward_hook(lambda m, a, o: seen.append(o.detach().clone()))
    with mimic.disabled(model):
        model(**inputs)
    model(**inputs)
    handle.remove()
    want, _ = hand_expected(seen[0], inputs["input_ids"], inputs["attention_mask"], stave.vectors, None)
    assert torch.equal(seen[1], want)  # the embedding output the decoder (its gated cross-attention first) reads
    mimic.detach(model)


@torch.no_grad()
def test_a_cached_decoding_step_adds_nothing_and_agrees_with_teacher_forcing():
    model = tiny_idefics2()
    inputs = batch_with_bos(model, seed=5)
    stave = mimic.attach(model, StaveConfig())
    stave.vectors.copy_(torch.randn(2, stave.config.hidden_size) * 2)
    seen, handle = decoder_inputs(model, model.model.text_model.layers)
    gen_inputs = {k: v for k, v in inputs.items() if k != "position_ids"}
    out = model.generate(**gen_inputs, max_new_tokens=2, do_sample=False, output_logits=True,
                         return_dict_in_generate=True)
    handle.remove()
    prefill, step = seen
    assert prefill.shape[1] == inputs["input_ids"].shape[1] and step.shape[1] == 1
    token = out.sequences[:, -2]
    assert torch.equal(step[:, 0], model.get_input_embeddings()(token))  # the generated token: no update
    # the same step teacher-forced: the prompt's groups, nothing on the generated token
    ids = torch.cat([inputs["input_ids"], token[:, None]], 1)
    mask = torch.cat([inputs["attention_mask"], torch.ones_like(token)[:, None]], 1)
    groups = prompt_groups(inputs["input_ids"], inputs["attention_mask"], BOS, None)
    stave.groups = torch.cat([groups, torch.full_like(groups[:, :1], NONE)], 1)
    forced = model(**{**inputs, "input_ids": ids, "attention_mask": mask,
                      "position_ids": positions_from_mask(mask)}).logits[:, -1]
    stave.groups = None
    assert torch.allclose(forced, out.logits[1], atol=1e-5)
    # were the generated token shifted too (readout on every decoded position), the step would differ
    stave.groups = torch.cat([groups, torch.full_like(groups[:, :1], READOUT)], 1)
    other = model(**{**inputs, "input_ids": ids, "attention_mask": mask,
                     "position_ids": positions_from_mask(mask)}).logits[:, -1]
    stave.groups = None
    assert (other - out.logits[1]).abs().max() > 1e-3
    mimic.detach(model)


@torch.no_grad()
def test_zero_vectors_are_the_zero_shot_model_and_detach_restores_it():
    model = tiny_idefics2()
    inputs = batch_with_bos(model)
    gen_inputs = {k: v for k, v in inputs.items() if k != "position_ids"}
    before = model(**inputs).logits
    generated = model.generate(**gen_inputs, max_new_tokens=4, do_sample=False)
    stave = mimic.attach(model, StaveConfig(answer_cue=[5, 6]))
    assert torch.equal(stave.vectors, torch.zeros(2, 32))  # the paper's initialisation
    assert torch.equal(model(**inputs).logits, before)
    assert torch.equal(model.generate(**gen_inputs, max_new_tokens=4, do_sample=False), generated)
    stave.vectors.normal_()
    assert (model(**inputs).logits - before).abs().max() > 1e-3
    mimic.detach(model)
    assert torch.equal(model(**inputs).logits, before)
    assert torch.equal(model.generate(**gen_inputs, max_new_tokens=4, do_sample=False), generated)


def test_two_vectors_of_the_hidden_size():
    model = tiny_idefics2(hidden=48)
    stave = mimic.attach(model, StaveConfig())
    assert sum(p.numel() for p in stave.parameters() if p.requires_grad) == 2 * 48
    assert mimic.count_parameters(stave.config) == {"trainable": 96, "fitted": 0, "total": 96}
    mimic.detach(model)
    assert METHODS["stave"].counts(StaveConfig(hidden_size=4096))["trainable"] == 8192  # the paper's "0.008M"


@torch.no_grad()
def test_save_and_load_round_trip_keeps_the_vectors_and_the_cue(tmp_path):
    model = tiny_idefics2()
    inputs = batch_with_bos(model)
    cue = inputs["input_ids"][0, -2:].tolist()
    stave = mimic.attach(model, StaveConfig(answer_cue=cue))
    stave.vectors.copy_(torch.randn(2, 32))
    shifted = model(**inputs).logits
    mimic.save_pretrained(stave, tmp_path / "ckpt")
    mimic.detach(model)
    loaded = mimic.from_pretrained(model, tmp_path / "ckpt")
    assert loaded.config.answer_cue == cue and torch.equal(loaded.vectors, stave.vectors)
    assert torch.equal(model(**inputs).logits, shifted)
    mimic.detach(model)
    with pytest.raises(ValueError, match=r"StaveConfig.answer_cue=\[\] is not valid"):
        StaveConfig(answer_cue=[])


def test_training_groups_of_real_prompts_follow_the_paper(mini_vqa):
    """The mini model's real Idefics2 processor, clean format (no instruction): zero-shot rows are
    [BOS][query][answer], ICL rows [BOS][demos][query][answer]."""
    loaded, data, icd = mini_vqa
    stave = mimic.attach(loaded.model, StaveConfig())
    METHODS["stave"].prepare(loaded, data, icd, stave)
    cue = stave.config.answer_cue
    assert loaded.tokenizer.convert_ids_to_tokens(cue) == ["Short", "answer", ":"]  # the format's " Short answer:"
    qids = sorted(icd["train"])[:3]
    s_inputs, _, answers = student_batch(loaded, data, "train", qids)
    t_inputs = teacher_batch(loaded, data, "train", qids, [icd["train"][q][0] for q in qids])
    lengths = aligned_lengths(t_inputs, s_inputs, loaded.tokenizer.bos_token_id, instruction_tokens(loaded, "vqa"),
                              loaded.tokenizer)
    student = layout_groups(prompt_layout(loaded, "vqa", s_inputs, answers), s_inputs["input_ids"], cue)
    icl = layout_groups(prompt_layout(loaded, "vqa", t_inputs, answers, lengths, role="teacher"),
                        t_inputs["input_ids"], cue)
    for i in range(len(qids)):
        s_ids, s_mask, s_g = s_inputs["input_ids"][i], s_inputs["attention_mask"][i].bool(), student[i]
        real = s_mask.nonzero().flatten().tolist()
        assert s_ids[real[0]] == loaded.tokenizer.bos_token_id
        a = answers[i]
        want = [NONE] * len(s_ids)  # by hand: BOS, padding and answer nothing; the cue readout; the rest context
        for t in real[1:-a]:
            want[t] = CONTEXT
        for t in real[-a - len(cue) : -a]:
            want[t] = READOUT
        assert s_g.tolist() == want
        t_mask, t_g = t_inputs["attention_mask"][i].bool(), icl[i]
        t_real = t_mask.nonzero().flatten().tolist()
        q = lengths[i]
        assert t_g[t_real[-q:]].tolist() == s_g[real[-q:]].tolist()  # the query and answer as in the zero-shot row
        assert t_g[t_real[0]] == NONE and t_g[t_real[1]] == CONTEXT  # BOS; FIRST, the first demonstration token
        assert (t_g[t_real[2:-q]] == NONE).all() and len(t_real[2:-q]) > 10  # every other demonstration token
    mimic.detach(loaded.model)


def test_the_per_answer_mean_is_the_mean_of_each_answers_mean():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    labels = torch.tensor([[-100, -100, -100, 3, 4], [-100, 1, 2, 5, 6]])
    lp = torch.log_softmax(logits, -1)
    row0 = -(lp[0, 2, 3] + lp[0, 3, 4]) / 2
    row1 = -(lp[1, 0, 1] + lp[1, 1, 2] + lp[1, 2, 5] + lp[1, 3, 6]) / 4
    assert torch.allclose(answer_cross_entropy(logits, labels, "answers"), (row0 + row1) / 2, atol=1e-6)
    assert torch.allclose(answer_cross_entropy(logits, labels), (2 * row0 + 4 * row1) / 6, atol=1e-6)
    with pytest.raises(ValueError, match=r"ce_mean = 'rows'; valid: \['tokens', 'answers'\]"):
        answer_cross_entropy(logits, labels, "rows")


def test_paired_training_through_the_loop_lowers_both_losses(mini_vqa):
    from mimic.training.loop import log_csv

    loaded, data, icd = mini_vqa
    hp = {"epochs": 4, "lr": 5e-2, "warmup_ratio": 0.0, "weight_decay": 1e-3, "batch_size": 3, "grad_accum": 1,
          "ce_weight": 1.0, "icl_ce_weight": 1.0, "ce_mean": "answers", "max_grad_norm": None, "seed": 0}
    module, rows, summary = train(loaded, data, icd, StaveConfig(), hp, "mlp", None, shots=2)
    assert (summary["teacher_mode"], summary["trainable_params"]) == ("none", 2 * module.config.hidden_size)
    assert log_csv(rows).splitlines()[0] == "step,epoch,loss,align_loss,ce_loss,kl_loss,icl_ce_loss,lr"
    for row in rows:
        assert math.isclose(row["loss"], row["ce_loss"] + row["icl_ce_loss"], rel_tol=1e-5)
    first, last = rows[:2], rows[-2:]  # an epoch each: the same queries
    for key in ("ce_loss", "icl_ce_loss"):
        assert sum(r[key] for r in last) < sum(r[key] for r in first) - 0.5, key
    assert module.vectors.abs().sum() > 0 and module.config.answer_cue
    mimic.detach(loaded.model)


def test_half_precision_models_keep_float32_vectors_and_zero_is_still_exact():
    model = tiny_idefics2().to(torch.bfloat16)
    inputs = batch_with_bos(model)
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    with torch.no_grad():
        before = model(**inputs).logits
    stave = mimic.attach(model, StaveConfig())
    assert stave.vectors.dtype == torch.float32  # the paper: vectors in single precision, the backbone in half
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, before)
    stave.train()
    model(**inputs).logits.float().logsumexp(-1).sum().backward()
    assert stave.vectors.grad.dtype == torch.float32 and stave.vectors.grad.abs().sum() > 0
    mimic.detach(model)
