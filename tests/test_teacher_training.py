"""Teacher cache and MimIC training on the miniature architecture (random weights, tiny task)."""


import pytest
import torch

import mimic
from mimic.models.hidden_states import HiddenStateRecorder
from mimic.shift.config import MimicConfig
from mimic.training.loop import alignment_loss, train
from mimic.training.teacher import TeacherCache, extract

SETTINGS = {"dtype": "float32", "target": "mlp", "shard_size": 4, "batch_size": 3}
HP = {"epochs": 2, "lr": 5e-3, "warmup_ratio": 0.1, "weight_decay": 1e-3, "batch_size": 4, "grad_accum": 1,
      "align_weight": 1.0, "ce_weight": 0.5, "seed": 0}


def test_cache_holds_the_icl_forward_states_and_resumes(mini_vqa, tmp_path):
    loaded, data, icd = mini_vqa
    out = tmp_path / "teacher"
    manifest = extract(loaded, data, icd, out, SETTINGS, {"model": "mini", "task": "t"})
    assert manifest["n_samples"] == 12 and manifest["n_shards"] == 3 and manifest["layers"] == 4
    cache = TeacherCache(out)
    # One sample, recomputed alone (no padding): the cached states are its query-and-answer positions.
    qid = sorted(icd["train"])[1]
    from mimic.data.batches import aligned_lengths, student_batch, teacher_batch

    t_in = teacher_batch(loaded, data, "train", [qid], [icd["train"][qid][1]])
    s_in, _, answer_lengths = student_batch(loaded, data, "train", [qid])
    (n,) = aligned_lengths(t_in, s_in, loaded.tokenizer.bos_token_id)
    assert n == s_in["input_ids"].shape[1] - 1  # everything but the BOS
    with torch.no_grad(), HiddenStateRecorder(loaded.model, "mlp") as rec:
        rec.select(n)
        loaded.model(**t_in)
        direct = rec.stacked()[:, 0]
    assert torch.allclose(cache.get(qid, 1), direct, atol=1e-5)


def test_resume_computes_only_the_unfinished_samples_and_reproduces_every_byte(mini_vqa, tmp_path, monkeypatch):
    """An extraction killed after its first shard resumes: only the other shards' samples are computed,
    the finished shard is kept as it was, and every file equals an uninterrupted extraction's."""
    import mimic.training.teacher as teacher

    loaded, data, icd = mini_vqa
    out, work = tmp_path / "teacher", tmp_path / "partial"
    real = teacher.teacher_forward
    computed = []

    def spy(loaded_, data_, chunk, target, logits_topk=0, split="train"):
        if len(computed) >= 6:  # shard 0 (4 samples: batches of 3 + 1) done, then killed in shard 1
            raise KeyboardInterrupt("killed")
        computed.extend((q, d) for q, d, _ in chunk)
        return real(loaded_, data_, chunk, target, logits_topk, split)

    monkeypatch.setattr(teacher, "teacher_forward", spy)
    with pytest.raises(KeyboardInterrupt):
        extract(loaded, data, icd, out, SETTINGS, {"model": "mini", "task": "t"}, work_dir=work)
    first = work / "shard-00000.safetensors"
    kept = (first.read_bytes(), first.stat().st_ino, first.stat().st_mtime_ns)
    computed.clear()
    monkeypatch.setattr(teacher, "teacher_forward", lambda *a, **k: computed.extend((q, d) for q, d, _ in a[2])
                        or real(*a, **k))
    manifest = extract(loaded, data, icd, out, SETTINGS, {"model": "mini", "task": "t"}, work_dir=work)
    samples = [(q, d) for q in sorted(icd["train"]) for d in range(2)]
    assert computed == samples[4:]  # shards 1 and 2 only, each sample once
    assert manifest["n_samples"] == 12 and manifest["reused_shards"] == 1
    shard = out / "shard-00000.safetensors"
    assert (shard.read_bytes(), shard.stat().st_ino) == kept[:2]  # the very file, not rewritten
    monkeypatch.setattr(teacher, "teacher_forward", real)
    extract(loaded, data, icd, tmp_path / "fresh", SETTINGS, {"model": "mini", "task": "t"},
            work_dir=tmp_path / "fresh-work")
    for path in sorted(out.iterdir()):
        assert path.read_bytes() == (tmp_path / "fresh" / path.name).read_bytes(), path.name


def test_alignment_loss_by_hand():
    student = torch.zeros(2, 2, 3, 1)  # [L, b, n_max, H]
    student[:, 0, 2] = 1.0
    teachers = [torch.full((2, 1, 1), 3.0), torch.zeros(2, 3, 1)]  # rows of 1 and 3 positions
    # row 0: (1-3)^2 = 4 per layer over 1 position; row 1: 0 over 3 positions -> 4 / 4 per layer
    assert alignment_loss(student, teachers).item() == 1.0


def test_training_reduces_the_loss_and_cached_equals_online(mini_vqa, tmp_path):
    loaded, data, icd = mini_vqa
    extract(loaded, data, icd, tmp_path / "teacher", SETTINGS, {"model": "mini", "task": "t"})
    shift, rows, summary = train(loaded, data, icd, MimicConfig(), {**HP, "epochs": 6}, "mlp",
                                 TeacherCache(tmp_path / "teacher"))
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert summary["trainable_params"] == mimic.count_parameters(shift.config)["total"]
    assert all(not p.requires_grad for p in loaded.model.parameters())
    mimic.detach(loaded.model)
    _, cached_rows, _ = train(loaded, data, icd, MimicConfig(), HP, "mlp", TeacherCache(tmp_path / "teacher"))
    mimic.detach(loaded.model)
    _, online_rows, online = train(loaded, data, icd, MimicConfig(), HP, "mlp", None)
    mimic.detach(loaded.model)
    assert online["teacher_mode"] == "online"
    for a, b in zip(cached_rows, online_rows, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-4 * max(1.0, abs(a["loss"]))


def test_a_shard_holding_other_samples_is_recomputed(mini_vqa, tmp_path):
    """A cache left by an extraction over other samples (one draw instead of two) is never reused as is."""
    loaded, data, icd = mini_vqa
    out = tmp_path / "teacher"
    one_draw = {**icd, "draws": 1, "train": {q: lists[:1] for q, lists in icd["train"].items()}}
    extract(loaded, data, one_draw, out, SETTINGS, {"model": "mini", "task": "t"})
    extract(loaded, data, icd, out, SETTINGS, {"model": "mini", "task": "t"})
    cache = TeacherCache(out)
    fresh = tmp_path / "fresh"
    extract(loaded, data, icd, fresh, SETTINGS, {"model": "mini", "task": "t"})
    reference = TeacherCache(fresh)
    for q in icd["train"]:
        for d in range(2):
            assert torch.equal(cache.get(q, d), reference.get(q, d)), (q, d)
