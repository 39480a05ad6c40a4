"""The efficiency table's figures (mimic.evaluation.efficiency) against hand computations."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch

from mimic.evaluation import efficiency
from mimic.evaluation.efficiency import LiveTensorBytes, Variant, demonstration_kv_bytes, measure, tensor_bytes


def test_live_tensor_bytes_follow_allocations_and_frees_by_hand():
    weight = torch.ones(1000)  # allocated before: not counted, nor are its views and in-place results
    with LiveTensorBytes() as counter:
        a = torch.zeros(1024)  # 4 KiB
        b = torch.zeros(512, dtype=torch.float64)  # 4 KiB -> 8 KiB live
        weight[:10].mul_(2)  # a view and an in-place product of an old storage: nothing new
        del a  # 4 KiB live
        c = torch.zeros(256, dtype=torch.float16)  # 0.5 KiB -> 4.5 KiB live
        live = counter.live
    assert counter.peak == 8192
    assert live == 4096 + 512
    del b, c


def test_tensor_bytes_are_the_tensors_of_the_file_without_its_header(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "mimic.safetensors"
    tensors = {"v": torch.zeros(4, 8), "w": torch.zeros(3, dtype=torch.bfloat16), "i": torch.zeros(5).long()}
    save_file(tensors, str(path))
    assert tensor_bytes(path) == 4 * 8 * 4 + 3 * 2 + 5 * 8  # 174 bytes
    assert path.stat().st_size > 174  # the file also holds its JSON header


def test_the_demonstrations_kv_cache_by_hand():
    from mimic.tiny.models import tiny_idefics2

    model = tiny_idefics2(layers=2, heads=4, kv_heads=2, hidden=32)  # head_dim 8
    loaded = SimpleNamespace(model=model)
    zero = {"input_ids": torch.randint(3, 50, (1, 5))}
    icl = {"input_ids": torch.randint(3, 50, (1, 12))}
    # 7 more tokens x 2 layers x (key + value) x 2 key/value heads x 8 dims x 4 bytes (float32)
    assert demonstration_kv_bytes(loaded, icl, zero) == 7 * 2 * 2 * 2 * 8 * 4
    with pytest.raises(ValueError, match="batch 1"):
        demonstration_kv_bytes(loaded, {"input_ids": torch.ones(2, 12, dtype=torch.long)}, zero)


class Fake:
    """generate() appending exactly max_new_tokens tokens; allocates 1 KiB per token per beam (the peak)."""

    def generate(self, input_ids, max_new_tokens, min_new_tokens, num_beams, **kwargs):
        assert max_new_tokens == min_new_tokens
        scratch = torch.zeros(max_new_tokens * num_beams * 256)  # float32: 1 KiB each
        del scratch
        return torch.cat([input_ids, torch.zeros(input_ids.shape[0], max_new_tokens, dtype=input_ids.dtype)], 1)


def test_the_table_from_fixture_timings(monkeypatch):
    """Rows from the seconds side_by_side measured (a fixture): ms at batch 1, the median per-round ratio."""
    seconds = {1: {"zero-shot": [0.010, 0.020, 0.030], "icl": [0.050, 0.050, 0.050], "m": [0.011, 0.021, 0.036]},
               20: {"zero-shot": [0.100, 0.200, 0.400], "icl": [0.400, 0.500, 0.600], "m": [0.105, 0.200, 0.480]}}
    calls = []

    def fixture(loaded, variants, new_tokens, num_beams, rounds, extra=None):
        calls.append((new_tokens, num_beams, rounds, [v.name for v in variants]))
        return seconds[new_tokens]

    monkeypatch.setattr(efficiency, "side_by_side", fixture)
    installed = []

    @contextmanager
    def m_installed():
        installed.append("m")
        yield

    loaded = SimpleNamespace(model=Fake(), device=torch.device("cpu"), pad_token_id=0)
    one = {"input_ids": torch.ones(1, 4, dtype=torch.long)}
    variants = [Variant("zero-shot", one), Variant("icl", one), Variant("m", one, m_installed)]
    rows = measure(loaded, variants, {"zero-shot": "zero-shot", "icl": "icl", "m": "mimic"},
                   {"zero-shot": 0, "icl": 3072, "m": 1056}, rounds=3, baseline="zero-shot")
    assert calls == [(1, 3, 3, ["zero-shot", "icl", "m"]), (20, 3, 3, ["zero-shot", "icl", "m"])]
    assert [r["method"] for r in rows] == ["zero-shot", "icl", "m"] and tuple(rows[0]) == efficiency.COLUMNS
    by = {r["method"]: r for r in rows}
    # forced ratio of m: per-round 1.05, 1.0, 1.2 -> median 1.05; icl: 4, 2.5, 1.5 -> 2.5
    assert by["m"]["forced_ratio"] == 1.05 and by["icl"]["forced_ratio"] == 2.5 and by["zero-shot"]["forced_ratio"] == 1
    assert (by["m"]["forced_ms"], by["m"]["ttft_ms"]) == (200.0, 21.0)  # medians, ms
    assert (by["icl"]["stored_kib"], by["m"]["stored_kib"], by["zero-shot"]["stored_kib"]) == (3.0, 1.031, 0.0)
    assert by["m"]["type"] == "mimic" and installed == ["m"]  # installed for its peak-memory run
    assert all(r["peak_mib"] == round(20 * 3 / 1024, 3) for r in rows)  # 60 KiB allocated at the peak
