"""The teacher cache's settings, fingerprint, resume bookkeeping and verified reading, without a model.

The settings record and its fingerprint are checked against canonical JSON written out by hand; the
reader against a cache built here in the real on-disk format (safetensors shards, index.json and a
manifest with every shard's sha256), and every failure against its whole one-line message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import pytest
import torch
from safetensors.torch import save_file

from mimic.errors import IntegrityError, MimicError
from mimic.training.teacher import (
    PROGRESS_FILE,
    TeacherCache,
    _replace_dir,
    _start_work_dir,
    cache_settings,
    fingerprint,
)

# insertion order is not the sorted order anywhere: only sort_keys makes the JSON canonical
ICD = {"shots": 2, "draws": 2, "train": {"q1": [["c", "a"], ["d", "b"]], "q0": [["e", "f"], ["g", "h"]]}}
SETTINGS = {"target": "mlp", "dtype": "float32", "shard_size": 4, "batch_size": 3, "logits_topk": 5}
META = {"task": "t", "model": "mini", "source": "synthetic", "other": "not a setting"}
PROVENANCE = {"model_sha256": "ab12", "tables": {"train": "cd34"}}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_cache_settings_hold_every_setting_that_decides_the_states_by_name():
    demos = ('{"draws": 2, "shots": 2, "train": {"q0": [["e", "f"], ["g", "h"]], '
             '"q1": [["c", "a"], ["d", "b"]]}}')
    assert cache_settings(ICD, SETTINGS, META, PROVENANCE) == {
        "format": 2, "model": "mini", "task": "t", "source": "synthetic", "target": "mlp", "dtype": "float32",
        "shard_size": 4, "logits_topk": 5, "demonstrations_sha256": sha(demos), "inputs": PROVENANCE,
    }
    one_shot = '{"draws": 2, "shots": 1, "train": {"q0": [["e"], ["g"]], "q1": [["c"], ["d"]]}}'
    assert cache_settings(ICD, SETTINGS, META, shots=1)["demonstrations_sha256"] == sha(one_shot)
    assert "inputs" not in cache_settings(ICD, SETTINGS, META)  # no provenance: no key at all
    for topk in ({}, {"logits_topk": None}, {"logits_topk": 0}):  # no answer logits
        plain = {k: v for k, v in SETTINGS.items() if k != "logits_topk"}
        assert cache_settings(ICD, {**plain, **topk}, META)["logits_topk"] == 0


def test_the_fingerprint_is_the_sha256_of_the_canonical_json_and_follows_every_setting():
    made_by = cache_settings(ICD, SETTINGS, META)
    canonical = json.dumps(dict(sorted(made_by.items())))
    assert fingerprint(made_by) == sha(canonical)
    assert fingerprint(dict(reversed(list(made_by.items())))) == fingerprint(made_by)  # order does not count
    changed = [cache_settings(ICD, {**SETTINGS, key: value}, META)
               for key, value in (("target", "layer"), ("dtype", "float16"), ("shard_size", 8), ("logits_topk", 4))]
    changed += [cache_settings(ICD, SETTINGS, {**META, "model": "other"}), cache_settings(ICD, SETTINGS, META, shots=1),
                cache_settings(ICD, SETTINGS, META, PROVENANCE)]
    assert len({fingerprint(made_by), *map(fingerprint, changed)}) == 1 + len(changed)
    assert fingerprint(cache_settings(ICD, {**SETTINGS, "batch_size": 1}, META)) == fingerprint(made_by)


# ---- reading a cache -------------------------------------------------------------------------------------------

MADE_BY = cache_settings(ICD, SETTINGS, META)


def tensors_of(qid: str, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for d in range(2):
        out[f"{qid}/{d}"] = torch.randn(2, 3, 4, generator=g)
        out[f"{qid}/{d}/logprobs"] = torch.randn(2, 5, generator=g)
        out[f"{qid}/{d}/indices"] = torch.randint(0, 50, (2, 5), generator=g)
    return out


def build_cache(directory, topk: int = 5, fmt=2) -> dict[str, torch.Tensor]:
    """A two-shard cache in the on-disk format (q0 in shard 0, q1 in shard 1); returns every tensor."""
    directory.mkdir(parents=True)
    everything, index, sums = {}, {}, {}
    for s, qid in enumerate(["q0", "q1"]):
        name = f"shard-{s:05d}.safetensors"
        tensors = {k: v for k, v in tensors_of(qid, s).items() if topk or k.count("/") == 1}
        save_file(tensors, str(directory / name))
        sums[name] = hashlib.sha256((directory / name).read_bytes()).hexdigest()
        index.update({k: name for k in tensors})
        everything.update(tensors)
    manifest = {"model": "mini", "task": "t", "draws": 2, "logits_topk": topk, "settings": MADE_BY,
                "fingerprint": fingerprint(MADE_BY), "sha256": sums}
    if fmt is not None:
        manifest["format"] = fmt
    (directory / "manifest.json").write_text(json.dumps(manifest))
    (directory / "index.json").write_text(json.dumps(index))
    return everything


def fix(directory) -> str:
    return (f"restore it (`dvc checkout --force {directory}`) or re-extract it "
            "(`mimic extract-teacher --model mini --task t`)")


def message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_states_and_answer_logits_read_back_exactly_with_draws_wrapping(tmp_path):
    cache_dir = tmp_path / "teacher"
    tensors = build_cache(cache_dir)
    cache = TeacherCache(cache_dir)
    for qid in ("q0", "q1"):
        for draw in range(5):  # draw 2 is draw 0 again, 3 is 1, ...
            assert torch.equal(cache.get(qid, draw), tensors[f"{qid}/{draw % 2}"])
            logprobs, indices = cache.get_answer_logits(qid, draw)
            assert torch.equal(logprobs, tensors[f"{qid}/{draw % 2}/logprobs"])
            assert torch.equal(indices, tensors[f"{qid}/{draw % 2}/indices"])
    with pytest.raises(IntegrityError) as info:
        cache.get("q9", 1)
    assert message(info) == f"{cache_dir}: no cached teacher states for q9/1; {fix(cache_dir)}"
    with pytest.raises(IntegrityError) as info:
        cache.get_answer_logits("q9", 3)
    assert message(info) == f"{cache_dir}: no cached teacher logits for q9/1/logprobs; {fix(cache_dir)}"


def test_a_cache_without_answer_logits_says_how_to_get_them(tmp_path):
    build_cache(tmp_path / "teacher", topk=0)
    cache = TeacherCache(tmp_path / "teacher")
    assert cache.get("q1", 0).shape == (2, 3, 4)
    with pytest.raises(KeyError) as info:
        cache.get_answer_logits("q1", 0)
    assert info.value.args[0] == (f"{tmp_path / 'teacher'} holds no teacher answer logits (extracted with "
                                  "teacher.logits_topk = 0); set teacher.logits_topk > 0 and re-extract the teacher")


def test_check_passes_the_same_settings_and_names_what_changed_otherwise(tmp_path):
    cache_dir = tmp_path / "teacher"
    build_cache(cache_dir)
    cache = TeacherCache(cache_dir)
    cache.check(dict(reversed(list(MADE_BY.items()))))  # the same settings, in another order
    other = {**MADE_BY, "dtype": "float16", "format": 3, "logits_topk": 4, "model": "big", "shard_size": 8,
             "target": "layer"}
    with pytest.raises(IntegrityError) as info:
        cache.check(other)
    assert message(info) == (f"{cache_dir} was extracted under other settings (dtype: float32 -> float16; "
                             f"format: 2 -> 3; logits_topk: 5 -> 4; model: mini -> big); {fix(cache_dir)}")
    # a manifest without recorded settings (hand-edited) still fails in one line, naming what is expected
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    del manifest["settings"]
    (cache_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError) as info:
        TeacherCache(cache_dir).check(other)
    assert message(info) == (f"{cache_dir} was extracted under other settings (demonstrations_sha256: None -> "
                             f"{MADE_BY['demonstrations_sha256']}; dtype: None -> float16; format: None -> 3; "
                             f"logits_topk: None -> 4); {fix(cache_dir)}")


def test_a_missing_manifest_or_an_old_format_fails_in_one_line(tmp_path):
    with pytest.raises(MimicError) as info:
        TeacherCache(tmp_path / "nowhere")
    assert message(info) == (f"{tmp_path / 'nowhere' / 'manifest.json'} is missing: run `mimic extract-teacher` "
                             "for this model and task")
    for fmt, shown in ((None, 1), (1, 1), (3, 3)):  # no format recorded: the first format
        cache_dir = tmp_path / f"format-{fmt}"
        build_cache(cache_dir, fmt=fmt)
        with pytest.raises(IntegrityError) as info:
            TeacherCache(cache_dir)
        assert message(info) == (f"{cache_dir / 'manifest.json'}: a cache of format {shown}, not 2 (no checksums "
                                 f"and settings); {fix(cache_dir)}")


def test_a_missing_changed_or_unreadable_shard_fails_naming_it(tmp_path):
    cache_dir = tmp_path / "teacher"
    build_cache(cache_dir)
    shard = cache_dir / "shard-00001.safetensors"
    recorded = json.loads((cache_dir / "manifest.json").read_text())["sha256"][shard.name]
    good = shard.read_bytes()
    shard.unlink()
    with pytest.raises(IntegrityError) as info:
        TeacherCache(cache_dir).get("q1", 0)
    assert message(info) == f"{shard} is missing; {fix(cache_dir)}"
    shard.write_bytes(good[:-8] + bytes(8))
    actual = hashlib.sha256(shard.read_bytes()).hexdigest()
    with pytest.raises(IntegrityError) as info:
        TeacherCache(cache_dir).get("q1", 0)
    assert message(info) == (f"{shard}: sha256 {actual[:12]}... differs from the manifest's {recorded[:12]}... "
                             f"(the file was changed or damaged); {fix(cache_dir)}")
    assert torch.equal(TeacherCache(cache_dir).get("q0", 1), tensors_of("q0", 0)["q0/1"])  # shard 0 still reads
    # checksum right (the manifest updated with it) but not a safetensors file
    shard.write_bytes(b"not safetensors")
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    manifest["sha256"][shard.name] = hashlib.sha256(b"not safetensors").hexdigest()
    (cache_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError) as info:
        TeacherCache(cache_dir).get("q1", 0)
    text = message(info)
    assert text.startswith(f"{shard}: not a readable safetensors file (") and text.endswith(f"); {fix(cache_dir)}")


# ---- resume bookkeeping ----------------------------------------------------------------------------------------

FP = fingerprint(MADE_BY)


def work_dir_with(tmp_path, progress: dict | str | None):
    work = tmp_path / "partial"
    work.mkdir()
    (work / "shard-00000.safetensors").write_bytes(b"finished shard")
    if progress is not None:
        (work / PROGRESS_FILE).write_text(progress if isinstance(progress, str) else json.dumps(progress))
    return work


def test_a_work_dir_of_the_same_settings_is_resumed_as_it_is(tmp_path):
    finished = {"shard-00000.safetensors": "ab"}
    work = work_dir_with(tmp_path, {"fingerprint": FP, "settings": MADE_BY, "shards": finished})
    assert _start_work_dir(work, MADE_BY, FP) == finished
    assert (work / "shard-00000.safetensors").read_bytes() == b"finished shard"
    (work / PROGRESS_FILE).write_text(json.dumps({"fingerprint": FP}))  # nothing finished yet
    assert _start_work_dir(work, MADE_BY, FP) == {}


OTHER = {**MADE_BY, "target": "layer", "dtype": "float16", "shard_size": 2, "logits_topk": 0}
CASES = {
    "other-settings": ({"fingerprint": fingerprint(OTHER), "settings": OTHER, "shards": {"a": "1", "b": "2"}}, 2,
                       "dtype: float16 -> float32; logits_topk: 0 -> 5; shard_size: 2 -> 4"),
    "no-settings-recorded": ({"fingerprint": "old", "shards": {"a": "1"}}, 1,
                             f"demonstrations_sha256: None -> {MADE_BY['demonstrations_sha256']}; "
                             "dtype: None -> float32; format: None -> 2"),
    "same-settings-other-fingerprint": ({"fingerprint": "old", "settings": MADE_BY}, 0, "unreadable progress file"),
    "unreadable": ("{not json", 0, f"demonstrations_sha256: None -> {MADE_BY['demonstrations_sha256']}; "
                   "dtype: None -> float32; format: None -> 2"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_work_dir_of_other_settings_is_cleared_saying_what_changed(tmp_path, caplog, case):
    progress, shards, changed = case
    work = work_dir_with(tmp_path, progress)
    with caplog.at_level(logging.INFO, logger="mimic.training.teacher"):
        assert _start_work_dir(work, MADE_BY, FP) == {}
    assert work.is_dir() and list(work.iterdir()) == []
    assert caplog.messages == [f"discarding {shards} shard(s) in {work} made under other settings ({changed})"]


def test_a_fresh_work_dir_is_made_with_its_parents_and_stray_files_cleared(tmp_path, caplog):
    work = tmp_path / "results" / "partial" / "teacher"
    with caplog.at_level(logging.INFO, logger="mimic.training.teacher"):
        assert _start_work_dir(work, MADE_BY, FP) == {}
    assert work.is_dir() and caplog.messages == []
    (tmp_path / "x").mkdir()
    stray = work_dir_with(tmp_path / "x", None)  # files, no progress file
    assert _start_work_dir(stray, MADE_BY, FP) == {} and list(stray.iterdir()) == []


def test_the_finished_work_dir_replaces_the_cache_with_fresh_times(tmp_path):
    work = tmp_path / "partial"
    work.mkdir()
    (work / "manifest.json").write_text("new")
    os.utime(work / "manifest.json", (1000, 1000))
    out = tmp_path / "results" / "teacher" / "mini" / "t"  # its parents do not exist yet
    _replace_dir(work, out)
    assert not work.exists() and (out / "manifest.json").read_text() == "new"
    assert (out / "manifest.json").stat().st_mtime > 1000
    work.mkdir()
    (work / "index.json").write_text("newer")
    _replace_dir(work, out)  # the old cache goes, nothing of it is left behind
    assert [p.name for p in out.iterdir()] == ["index.json"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["t"]
