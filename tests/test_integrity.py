"""Finite or nothing, verified files, safe resume: the teacher cache, checkpoints and training.

On the miniature architecture with random weights and a tiny synthetic task (as
tests/test_teacher_training.py), through the library's real entry points.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import mimic
import mimic.training.teacher as teacher_module
from mimic.errors import IntegrityError, TrainingDiverged
from mimic.shift.config import MimicConfig
from mimic.training.loop import train
from mimic.training.teacher import TeacherCache, cache_settings, extract, fingerprint

SETTINGS = {"dtype": "float32", "target": "mlp", "shard_size": 4, "batch_size": 3}
META = {"model": "mini", "task": "t"}
HP = {"epochs": 1, "lr": 5e-3, "warmup_ratio": 0.1, "weight_decay": 1e-3, "batch_size": 4, "grad_accum": 1,
      "align_weight": 1.0, "ce_weight": 0.5, "seed": 0}


@pytest.fixture(scope="module")
def setup(mini_vqa_module):
    return mini_vqa_module


def interrupted_extract(monkeypatch, setup, out, work, settings, after_batches: int):
    """Run extract until ``after_batches`` teacher batches are done, then fail as a kill would."""
    calls = {"n": 0}
    real = teacher_module.teacher_forward

    def dying(*args, **kwargs):
        if calls["n"] == after_batches:
            raise KeyboardInterrupt("killed")
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(teacher_module, "teacher_forward", dying)
    loaded, data, icd = setup
    with pytest.raises(KeyboardInterrupt):
        extract(loaded, data, icd, out, settings, META, work_dir=work)
    monkeypatch.setattr(teacher_module, "teacher_forward", real)


def test_an_interrupted_extraction_resumes_from_its_finished_shards(setup, tmp_path, monkeypatch, caplog):
    loaded, data, icd = setup
    out, work = tmp_path / "teacher", tmp_path / "partial"
    interrupted_extract(monkeypatch, setup, out, work, SETTINGS, after_batches=3)  # shard 0 (4 = 3 + 1) done
    assert not out.exists()  # nothing is published before the cache is complete
    finished = {p.name: p.read_bytes() for p in work.glob("shard-*.safetensors")}
    assert sorted(finished) == ["shard-00000.safetensors"]
    progress = json.loads((work / "progress.json").read_text())
    assert list(progress["shards"]) == ["shard-00000.safetensors"]

    with caplog.at_level("INFO", logger="mimic.training.teacher"):
        manifest = extract(loaded, data, icd, out, SETTINGS, META, work_dir=work)
    assert manifest["reused_shards"] == 1 and manifest["n_shards"] == 3
    assert f"resumed: 1 of 3 shard(s) reused from {work} (same settings, checksums verified)" in caplog.messages
    assert (out / "shard-00000.safetensors").read_bytes() == finished["shard-00000.safetensors"]
    assert not work.exists()  # swapped into place
    # the cache equals one extracted without interruption
    fresh = extract(loaded, data, icd, tmp_path / "fresh", SETTINGS, META, work_dir=tmp_path / "fresh-work")
    assert fresh["fingerprint"] == manifest["fingerprint"] and fresh["reused_shards"] == 0
    for name in ["manifest.json", "index.json", *manifest["sha256"]]:  # byte for byte, manifest included
        assert (out / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name


def test_a_shard_made_under_other_settings_is_recomputed_never_reused(setup, tmp_path, monkeypatch, caplog):
    loaded, data, icd = setup
    out, work = tmp_path / "teacher", tmp_path / "partial"
    interrupted_extract(monkeypatch, setup, out, work, {**SETTINGS, "target": "layer"}, after_batches=3)
    layer_shard = load_file(work / "shard-00000.safetensors")
    with caplog.at_level("INFO", logger="mimic.training.teacher"):
        manifest = extract(loaded, data, icd, out, SETTINGS, META, work_dir=work)  # target mlp now
    assert manifest["reused_shards"] == 0 and manifest["target"] == "mlp"
    assert "made under other settings (target: layer -> mlp)" in caplog.text
    mlp_shard = load_file(out / "shard-00000.safetensors")
    assert not any(torch.equal(layer_shard[k], mlp_shard[k]) for k in mlp_shard)


def test_a_damaged_partial_shard_is_recomputed(setup, tmp_path, monkeypatch):
    loaded, data, icd = setup
    out, work = tmp_path / "teacher", tmp_path / "partial"
    interrupted_extract(monkeypatch, setup, out, work, SETTINGS, after_batches=3)
    good = (work / "shard-00000.safetensors").read_bytes()
    # other values, same size, header intact: readable, right keys and fingerprint; only the sha256 tells
    (work / "shard-00000.safetensors").write_bytes(good[:-64] + bytes(64))
    assert set(load_file(work / "shard-00000.safetensors")) == set(load_file_bytes(good))
    manifest = extract(loaded, data, icd, out, SETTINGS, META, work_dir=work)
    assert manifest["reused_shards"] == 0
    assert (out / "shard-00000.safetensors").read_bytes() == good  # recomputed, bit for bit


def load_file_bytes(data: bytes):
    from safetensors.torch import load

    return load(data)


@pytest.fixture(scope="module")
def cache_dir(setup, tmp_path_factory):
    loaded, data, icd = setup
    out = tmp_path_factory.mktemp("cache") / "teacher"
    extract(loaded, data, icd, out, SETTINGS, META)
    return out


def copy_of(directory, tmp_path):
    import shutil

    return shutil.copytree(directory, tmp_path / directory.name)


def test_a_damaged_or_truncated_shard_fails_naming_it(setup, cache_dir, tmp_path):
    _, _, icd = setup
    qid = sorted(icd["train"])[0]
    assert TeacherCache(cache_dir).get(qid, 0).shape[0] == 4  # the intact cache reads
    for damage in ("garbage", "truncated"):
        cache = copy_of(cache_dir, tmp_path / damage)
        shard = cache / "shard-00000.safetensors"
        data = shard.read_bytes()
        shard.write_bytes(bytes(len(data)) if damage == "garbage" else data[: len(data) // 2])
        with pytest.raises(IntegrityError) as info:
            TeacherCache(cache).get(qid, 0)
        message = str(info.value)
        assert message.startswith(f"{shard}: sha256 ") and "the file was changed or damaged" in message
        assert "mimic extract-teacher --model mini --task t" in message and "\n" not in message


def test_a_cache_of_other_settings_is_refused(setup, cache_dir):
    _, _, icd = setup
    cache = TeacherCache(cache_dir)
    cache.check(cache_settings(icd, SETTINGS, META))  # the same settings pass
    with pytest.raises(IntegrityError, match=r"extracted under other settings \(target: mlp -> layer\)"):
        cache.check(cache_settings(icd, {**SETTINGS, "target": "layer"}, META))
    other_demos = {**icd, "train": {q: lists[::-1] for q, lists in icd["train"].items()}}
    with pytest.raises(IntegrityError, match=r"demonstrations_sha256"):
        cache.check(cache_settings(other_demos, SETTINGS, META))


def test_the_manifest_records_the_settings_provenance_and_shots_it_was_made_under(setup, tmp_path, caplog):
    """What ``check`` compares: the settings of this extraction, the caller's provenance and the shots taken."""
    loaded, data, icd = setup
    provenance = {"model_sha256": "ab12", "icd_sha256": "cd34"}
    settings = {**SETTINGS, "shard_size": 6, "batch_size": 6}
    with caplog.at_level("INFO", logger="mimic.training.teacher"):
        manifest = extract(loaded, data, icd, tmp_path / "teacher", settings, META, provenance=provenance, shots=1)
    assert [m for m in caplog.messages if m.startswith("wrote ")] == [
        "wrote shard-00000.safetensors (6 samples)", "wrote shard-00001.safetensors (6 samples)"]
    written = json.loads((tmp_path / "teacher" / "manifest.json").read_text())
    sizes = [(tmp_path / "teacher" / f"shard-0000{s}.safetensors").stat().st_size for s in range(2)]
    assert written == {k: v for k, v in manifest.items() if k not in ("seconds", "reused_shards")}
    assert written["dtype"] == "float32"
    assert written["shape"] == "[layers, query-and-answer positions, hidden] per sample"
    assert written["total_bytes"] == sum(sizes) and written["bytes_per_sample"] == round(sum(sizes) / 12, 1)
    expected = cache_settings(icd, settings, META, provenance, shots=1)
    assert expected["inputs"] == provenance and manifest["settings"] == expected
    assert manifest["fingerprint"] == fingerprint(expected) and manifest["n_shards"] == 2
    TeacherCache(tmp_path / "teacher").check(expected)
    with pytest.raises(IntegrityError, match=r"\(inputs: \{'icd_sha256': 'cd34', 'model_sha256': 'ab12'\} -> None\)"):
        TeacherCache(tmp_path / "teacher").check(cache_settings(icd, settings, META, None, shots=1))


def test_checkpoints_carry_a_checksum_and_refuse_damage(setup, tmp_path):
    loaded, _, _ = setup
    shift = mimic.attach(loaded.model, MimicConfig())
    mimic.save_pretrained(shift, tmp_path / "ckpt", metadata={"settings": {"lr": 1}})
    mimic.detach(loaded.model)
    config = json.loads((tmp_path / "ckpt" / "mimic_config.json").read_text())
    assert len(config["extra"]["weights_sha256"]) == 64 and config["extra"]["settings"] == {"lr": 1}
    mimic.from_pretrained(loaded.model, tmp_path / "ckpt")
    mimic.detach(loaded.model)
    weights = tmp_path / "ckpt" / "mimic.safetensors"
    good = weights.read_bytes()
    for damaged in (bytes(len(good)), good[: len(good) // 2]):
        weights.write_bytes(damaged)
        with pytest.raises(IntegrityError, match=rf"^{weights}: sha256 differs from the one mimic_config.json"):
            mimic.from_pretrained(loaded.model, tmp_path / "ckpt")
        assert mimic.methods.attached(loaded.model) is None  # nothing attached
    weights.write_bytes(good[: len(good) // 2])
    del config["extra"]["weights_sha256"]  # a checkpoint without a checksum is still checked for its format
    (tmp_path / "ckpt" / "mimic_config.json").write_text(json.dumps(config))
    with pytest.raises(IntegrityError, match=rf"^{weights}: not a readable safetensors file"):
        mimic.from_pretrained(loaded.model, tmp_path / "ckpt")


def test_non_finite_weights_are_never_saved(setup, tmp_path):
    loaded, _, _ = setup
    shift = mimic.attach(loaded.model, MimicConfig())
    with torch.no_grad():
        next(shift.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(IntegrityError, match="not written"):
        mimic.save_pretrained(shift, tmp_path / "ckpt")
    mimic.detach(loaded.model)
    assert not (tmp_path / "ckpt").exists()


def test_training_stops_at_the_first_non_finite_loss_naming_the_step(setup, cache_dir):
    loaded, data, icd = setup
    # a teacher state that is inf makes the alignment loss inf at the batch that reads it
    cache = TeacherCache(cache_dir)
    order = sorted(icd["train"])
    real_get = cache.get
    poisoned = order[-1]

    def get(qid, draw):
        states = real_get(qid, draw)
        return torch.full_like(states, float("inf")) if qid == poisoned else states

    cache.get = get
    import random

    epoch0 = random.Random(HP["seed"] * 1000).sample(order, len(order))
    step = epoch0.index(poisoned) // HP["batch_size"]  # the batch holding the poisoned query
    with pytest.raises(TrainingDiverged) as info:
        train(loaded, data, icd, MimicConfig(), HP, "mlp", cache)
    mimic.detach(loaded.model)
    message = str(info.value)
    assert message.startswith(f"training diverged at step {step} (epoch 0): the loss is ")
    assert "nothing was saved" in message and "\n" not in message
