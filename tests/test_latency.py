"""Side-by-side latency (mimic.evaluation.latency, `mimic latency`): the figures by hand, the protocol, the CLI."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from mimic.cli import main
from mimic.evaluation.latency import Variant, rotation, side_by_side, summarize

REPO = Path(__file__).resolve().parents[1]
TASK, MODEL = "shapes-vqa", "mini-idefics2"


def test_summary_by_hand():
    # 3 rounds, a batch of 2 queries; per-round ratios of m to zero: 1.5, 1.0, 0.5
    times = {"zero": [1.0, 2.0, 4.0], "m": [1.5, 2.0, 2.0]}
    out = summarize(times, batch_size=2, baseline="zero")
    assert out["zero"] == {"ms_per_query": 1000.0, "ms_per_query_min": 500.0, "ms_per_query_max": 2000.0,
                           "ratio_to_zero": 1.0, "ratio_min": 1.0, "ratio_max": 1.0}
    assert out["m"] == {"ms_per_query": 1000.0, "ms_per_query_min": 750.0, "ms_per_query_max": 1000.0,
                        "ratio_to_zero": 1.0, "ratio_min": 0.5, "ratio_max": 1.5}
    # the median of the per-round ratios, not the ratio of the medians
    # (per-round ratios 3, 1, 0.5 -> 1.0; medians 3 s / 2 s -> 1.5)
    out = summarize({"zero": [1.0, 2.0, 10.0], "m": [3.0, 2.0, 5.0]}, batch_size=1, baseline="zero")
    assert out["m"]["ratio_to_zero"] == 1.0 and out["m"]["ms_per_query"] / out["zero"]["ms_per_query"] == 1.5


def test_every_method_leads_a_round_in_turn():
    names = ["a", "b", "c"]
    assert [rotation(names, r) for r in range(4)] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"],
                                                      ["a", "b", "c"]]


class FakeModel:
    """generate() that appends exactly max_new_tokens tokens and notes which method is installed."""

    def __init__(self):
        self.installed, self.calls = None, []

    def generate(self, input_ids, max_new_tokens, min_new_tokens, **kwargs):
        import torch

        assert max_new_tokens == min_new_tokens == 3 and kwargs["num_beams"] == 2
        self.calls.append(self.installed or "zero")
        return torch.cat([input_ids, torch.zeros(input_ids.shape[0], max_new_tokens, dtype=input_ids.dtype)], 1)


def test_one_warm_up_each_then_rotated_rounds_with_the_method_installed_only_while_it_runs():
    from types import SimpleNamespace

    import torch

    model = FakeModel()
    loaded = SimpleNamespace(model=model, device=torch.device("cpu"), pad_token_id=0)

    def installing(name):
        @contextmanager
        def context():
            model.installed = name
            yield
            model.installed = None
        return context

    inputs = {"input_ids": torch.ones(2, 5, dtype=torch.long)}
    variants = [Variant("zero", inputs), Variant("m1", inputs, installing("m1")),
                Variant("m2", inputs, installing("m2"))]
    times = side_by_side(loaded, variants, new_tokens=3, num_beams=2, rounds=2)
    assert model.calls == ["zero", "m1", "m2"] + ["zero", "m1", "m2"] + ["m1", "m2", "zero"]
    assert model.installed is None
    assert {k: len(v) for k, v in times.items()} == {"zero": 2, "m1": 2, "m2": 2}


def test_a_generation_of_another_length_is_refused():
    from types import SimpleNamespace

    import torch

    class Short(FakeModel):
        def generate(self, input_ids, max_new_tokens, min_new_tokens, **kwargs):
            return input_ids  # stopped at once: not the length every method must generate

    loaded = SimpleNamespace(model=Short(), device=torch.device("cpu"), pad_token_id=0)
    with pytest.raises(RuntimeError, match="generated 0 tokens, not 3"):
        side_by_side(loaded, [Variant("zero", {"input_ids": torch.ones(1, 4, dtype=torch.long)})], 3, 2, 1)


def test_the_cli_times_every_method_of_the_run_on_the_miniature_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"][MODEL]["path"] = str(REPO / "models" / MODEL)
    params["run"].update(models=[MODEL], tasks=[TASK], untrained=["zero-shot", "icl-1", "icl-rices-1"],
                         trained=["mimic"])
    params["tasks"][TASK].update(n_train=8, n_support=16, n_eval=4)
    params["icd"].update(shots=4, draws=1)
    params["methods"]["mimic"]["train"].update(epochs=1, batch_size=8)
    params["teacher"].update(shard_size=8, batch_size=8)
    params["latency"].update(queries=3, new_tokens=4, rounds=2)
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for argv in (["prepare", "--task", TASK], ["embed", "--task", TASK], ["sample-icd", "--task", TASK],
                 ["extract-teacher", "--model", MODEL, "--task", TASK],
                 ["train", "--model", MODEL, "--task", TASK, "--method", "mimic"]):
        assert main([*argv, "--params", "params.yaml"]) == 0, argv
    assert main(["latency", "--params", "params.yaml", "--model", MODEL, "--task", TASK]) == 0
    doc = json.loads((tmp_path / "results" / "latency" / MODEL / f"{TASK}.json").read_text())
    assert doc["baseline"] == "zero-shot" and (doc["queries"], doc["new_tokens"], doc["rounds"]) == (3, 4, 2)
    assert sorted(doc["methods"]) == ["icl", "icl-1", "icl-rices-1", "mimic", "zero-shot"]
    assert all(len(doc["seconds"][m]) == 2 for m in doc["methods"])
    assert doc["methods"]["zero-shot"]["ratio_to_zero-shot"] == 1.0
    for name, row in doc["methods"].items():  # the figures are the summary of the recorded seconds
        assert row == summarize(doc["seconds"], 3, "zero-shot")[name]
    # the efficiency table: every method of the run, on one query, 3 beams, exactly 20 new tokens
    from mimic.evaluation.efficiency import COLUMNS, tensor_bytes

    table = doc["efficiency"]
    assert list(table) == list(doc["methods"])
    assert doc["efficiency_settings"] == {"queries": 1, "new_tokens": 20, "num_beams": 3, "rounds": 2,
                                          "peak": "CPU live tensors"}
    assert all({"method", *row} == set(COLUMNS) for row in table.values())
    assert {m: row["type"] for m, row in table.items()} == {"zero-shot": "zero-shot", "icl-1": "icl",
                                                           "icl-rices-1": "icl", "icl": "icl", "mimic": "mimic"}
    assert table["zero-shot"]["forced_ratio"] == 1.0 and table["zero-shot"]["stored_kib"] == 0.0
    assert all(row["ttft_ms"] > 0 and row["forced_ms"] > 0 and row["peak_mib"] > 0 for row in table.values())
    checkpoint = tmp_path / "results" / "checkpoints" / MODEL / TASK / "seed-0" / "mimic" / "mimic.safetensors"
    assert table["mimic"]["stored_kib"] == round(tensor_bytes(checkpoint) / 1024, 3) > 0
    # one demonstration's KV cache is smaller than the teacher's 4 (icd.shots here)
    assert 0 < table["icl-1"]["stored_kib"] < table["icl"]["stored_kib"]


def test_the_cli_names_a_missing_checkpoint_before_loading_the_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"][MODEL]["path"] = str(REPO / "models" / MODEL)
    params["run"].update(models=[MODEL], tasks=[TASK], untrained=["zero-shot"], trained=["mimic"])
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert main(["latency", "--params", "params.yaml", "--model", MODEL, "--task", TASK]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mimic latency: error: results/checkpoints/{MODEL}/{TASK}/seed-0/mimic holds no checkpoint: "
                   "train it first (`snakemake all` or `mimic train`)"]
