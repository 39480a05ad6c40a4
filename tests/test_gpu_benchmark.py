"""benchmarks/gpu.py: the full-size shapes are the checkpoints' shapes, and the whole script runs (--tiny, CPU).

The full-size models are instantiated on the ``meta`` device (shapes only, no memory) to check
their parameter counts against the published ones, and one prompt of each goes through the
family's real processor with the full-size image settings. ``--tiny`` then runs every section
of the benchmark on tiny configs, as on the GPU, and the table must hold every figure.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

from mimic.models.generation import encode_prompts

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def _module():
    if "gpu_benchmark" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_benchmark"] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules["gpu_benchmark"]


# name: (parameters as published, pixel_values size, image tokens per image in the text or None)
FULL = {
    "idefics2-8b-base": (8.40e9, 980, 64),  # model card: 8.4B
    "idefics-9b": (8.93e9, 224, None),  # model card: 8.93B; one <image> token, the 64 latents enter by cross-attention
    # Qwen1.5-7B (7.72B with its 152,000-entry vocabulary) + SigLIP-so400m's 26 layers (0.40B) + projector (0.02B)
    "llava-interleave-qwen-7b": (8.14e9, 384, 729),  # 27 x 27 SigLIP patches at 384 px
}


@pytest.mark.parametrize("name", sorted(FULL))
def test_full_size_shapes_match_the_checkpoints(name):
    gpu = _module()
    shape = gpu.SHAPES_BY_NAME[name]
    loaded, px = gpu.loaded_model(shape, True, "meta", torch.bfloat16)
    billions, pixels, per_image = FULL[name]
    params = sum(p.numel() for p in loaded.model.parameters())
    assert params == pytest.approx(billions, rel=1e-3), params
    assert px == pixels
    loaded = dataclasses.replace(loaded, device=torch.device("cpu"))  # encode on the CPU, the model stays on meta
    data, icd = gpu.task(2, shape.shots, px)
    qids = sorted(icd["train"])
    queries = [data.query("train", q) for q in qids]
    demos = [[data.demo(s) for s in icd["train"][q][0]] for q in qids]
    zero = encode_prompts(loaded, "vqa", queries)
    icl = encode_prompts(loaded, "vqa", queries, demos=demos)
    assert zero["pixel_values"].shape[-1] == pixels
    if per_image is not None:
        image = loaded.model.config.image_token_id if hasattr(loaded.model.config, "image_token_id") else \
            loaded.model.config.image_token_index
        assert (zero["input_ids"][0] == image).sum() == per_image
        assert (icl["input_ids"][0] == image).sum() == per_image * (shape.shots + 1)
    else:  # Idefics v1: its two image tokens are the additional ids 32000 and 32001
        assert (icl["input_ids"][0] == 32001).sum() == shape.shots + 1
    assert icl["input_ids"].shape[1] > zero["input_ids"].shape[1] * shape.shots / 2


def test_the_benchmark_runs_every_section_on_tiny_configs(capsys, tmp_path):
    figures, table = tmp_path / "gpu.json", tmp_path / "efficiency.csv"
    _module().main(["--tiny", "--strict", "--static-cache", "--batch", "2", "--batches", "1", "2", "--repeats", "1",
                    "--new-tokens", "3", "--json", str(figures), "--csv", str(table)])
    out = capsys.readouterr().out
    check_figures_and_the_gpu_doc(out, figures, tmp_path)
    check_the_efficiency_table(out, table, figures)
    blocks = out.split("\n== ")[1:]
    assert [b.split(" ", 1)[0] for b in blocks] == ["idefics2-8b-base", "idefics-9b", "llava-interleave-qwen-7b"]
    number = r"\s+([\d.]+)"
    for block in blocks:
        assert re.search(r"prompt tokens \(batch 2\)\s+zero-shot \d+, \d+-shot \d+", block)
        assert re.search(r"prefill \(batch 2\) ms" + number * 3 + r"\s+[\d.]+x\s+[\d.]+x", block)
        for b in (1, 2):
            for mode in ("greedy", "3 beams"):
                line = re.search(rf"generate {mode} \(batch {b}\) ms" + number * 2, block)
                assert line and all(float(x) > 0 for x in line.groups()), (mode, b)
        assert re.search(r"generate 3 beams \(batch 2\) ms" + number * 3 + r"\s+[\d.]+x\s+[\d.]+x", block)
        assert re.search(r"generate greedy, static cache \(batch 2\) ms" + number * 2 + r"\s+-\s+[\d.]+x", block)
        assert re.search(r"teacher extraction, batch 2, \d+-shot\s+[\d.]+ s; cache [\d.]+ KiB per query", block)
        assert re.search(r"training step, batch 2\s+cached teacher [\d.]+ s, online teacher [\d.]+ s", block)
        assert "MimIC + 3 beams via inference.generate" in block
        # on the CPU sdpa picks flash attention, and log Z2 is that kernel's log-sum-exp in prefill and decoding
        assert re.search(r"prefill: FLASH_ATTENTION \(log Z2 from the kernel\); decoding: FLASH_ATTENTION "
                         r"\(log Z2 from the kernel\)", block)
        assert "failed" not in block and "out of GPU memory" not in block


def check_the_efficiency_table(out: str, table: Path, figures: Path) -> None:
    """One row per method type of the catalog (zero-shot and ICL included) for every shape, printed, in the CSV
    and in the JSON, with the table's columns; the figures' properties by hand."""
    import json

    import pandas as pd

    from mimic.evaluation import efficiency
    from mimic.methods.catalog import CATALOG

    gpu = _module()
    kinds = list(CATALOG)  # every method type there is: a method missing from the table fails here
    rows = pd.read_csv(table)
    assert tuple(rows.columns) == ("shape", *efficiency.COLUMNS, *gpu.TRAIN_COLUMNS)
    doc = json.loads(figures.read_text())
    for shape in ("idefics2-8b-base", "idefics-9b", "llava-interleave-qwen-7b"):
        block = out.split(f"\n== {shape}")[1].split("\n== ")[0].split("efficiency table: batch 1, 3 beams, "
                                                                        "exactly 20 new tokens")[1]
        lines = block.strip().splitlines()  # the rest of that line, the header, one line per method
        assert lines[1].split()[:2] == ["method", "type"]
        assert [line.split()[0] for line in lines[2:] if line.strip()][: len(kinds)] == kinds, shape
        part = rows[rows["shape"] == shape].set_index("method")
        assert list(part.index) == kinds and list(part["type"]) == kinds
        fig = doc["shapes"][shape]
        assert [r["method"] for r in fig["efficiency"]] == kinds
        assert fig["efficiency_settings"]["new_tokens"] == 20 and fig["efficiency_settings"]["num_beams"] == 3
        assert part.loc["zero-shot", "forced_ratio"] == 1.0 and part.loc["zero-shot", "stored_kib"] == 0.0
        assert (part[["ttft_ms", "forced_ms", "peak_mib"]] > 0).all().all()
        assert part.loc["icl", "stored_kib"] > part.loc["mimic", "stored_kib"] > 0
        trained = [k for k in kinds if CATALOG[k].trained]
        assert part.loc[trained, list(gpu.TRAIN_COLUMNS)].notna().all().all()
        assert part.loc[[k for k in kinds if k not in trained], gpu.TRAIN_COLUMNS[1:]].isna().all().all()
        for kind in ("mimic", "hificl", "lora"):  # float32 tensors: 4 bytes per counted parameter
            assert part.loc[kind, "stored_kib"] * 1024 == pytest.approx(4 * part.loc[kind, "params"], abs=1)
        # the online teacher adds the same teacher pass per query to every method that reads the teacher
        extra = part["train_gflop_per_query_online"] - part["train_gflop_per_query_cached"]
        assert extra["mimic"] > 0 and extra["hificl"] == 0 and extra["lora"] == 0
        assert extra["live"] == pytest.approx(extra["mimic"], abs=2e-6)


def check_figures_and_the_gpu_doc(out: str, figures: Path, tmp_path: Path) -> None:
    """--json holds the figures the table printed, and tools/gpu_doc.py turns them into docs/gpu.md's resource
    section by its formulas (checked here by hand for one cell)."""
    import json

    doc = json.loads(figures.read_text())
    assert list(doc["shapes"]) == ["idefics2-8b-base", "idefics-9b", "llava-interleave-qwen-7b"]
    fig = doc["shapes"]["idefics2-8b-base"]
    block = out.split("\n== idefics2-8b-base")[1].split("\n== ")[0]
    printed = re.search(r"generate 3 beams \(batch 2\) ms\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", block).groups()
    assert [round(1000 * fig["generate_s"]["3"]["2"][m], 1) for m in ("zero", "mimic", "icl")] == \
        [float(x) for x in printed]
    assert fig["batch"] == 2 and fig["new_tokens"] == 3 and fig["tiny"] is True
    assert re.search(rf"cache {fig['teacher_bytes_per_query'] / 1024:.1f} KiB per query", block)

    spec = importlib.util.spec_from_file_location("gpu_doc", SCRIPT.parents[1] / "tools" / "gpu_doc.py")
    gpu_doc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_doc)
    template = tmp_path / "template.md"
    template.write_text("# head\n\n<!-- resources -->\n\n## tail\n")
    assert gpu_doc.main([str(figures), "--template", str(template), "--out", str(tmp_path / "gpu.md")]) == 0
    page = (tmp_path / "gpu.md").read_text()
    assert page.startswith("# head") and page.rstrip().endswith("## tail") and "<!-- resources -->" not in page
    # the paper's Idefics2 run on OK-VQA: 1,000 queries x 2 draws through the teacher, 5 epochs, 5,046 queries
    # generated 10 tokens each (the benchmark: 3), by hand from the constants
    params = gpu_doc.paper_params()
    sizes = gpu_doc.run_sizes(params, "idefics2-8b-base", "okvqa")
    assert (sizes["n_train"], sizes["draws"], sizes["epochs"], sizes["n_eval"], sizes["new_tokens"]) == \
        (1000, 2, 5, 5046, 10)
    teacher_s = 1000 * 2 * fig["teacher_batch_s"] / 2
    train_s = 5 * 1000 * fig["train_step_s"]["cached"] / 2
    mimic_s = 5046 * fig["generate_s"]["3"]["2"]["mimic"] / 2 * 10 / 3
    cache = 1000 * 2 * fig["teacher_bytes_per_query"]
    idefics2 = page.split("### idefics2-8b-base")[1].split("### ")[0]
    row = next(line for line in idefics2.splitlines() if line.startswith("| okvqa |"))
    assert row == "| okvqa | {} | {} | {} | {} | {} | {} |".format(
        gpu_doc._hours(teacher_s), gpu_doc._gib(cache), gpu_doc._hours(train_s),
        gpu_doc._hours(5046 * fig["generate_s"]["3"]["2"]["zero"] / 2 * 10 / 3), gpu_doc._hours(mimic_s),
        gpu_doc._hours(5046 * fig["generate_s"]["3"]["2"]["icl"] / 2 * 10 / 3))


def test_docs_gpu_md_is_the_template_with_a_computed_resource_section():
    """docs/gpu.md is written by tools/gpu_doc.py (edit docs/gpu.template.md, then rerun the tool): the template
    around the marker, and between them either the computed section or the statement that none was measured."""
    docs = SCRIPT.parents[1] / "docs"
    before, after = (docs / "gpu.template.md").read_text().split("<!-- resources -->")
    page = (docs / "gpu.md").read_text()
    assert page.startswith(before) and page.endswith(after)
    middle = page[len(before) : len(page) - len(after)]
    spec = importlib.util.spec_from_file_location("gpu_doc", SCRIPT.parents[1] / "tools" / "gpu_doc.py")
    gpu_doc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_doc)
    assert middle == gpu_doc.NOT_MEASURED or (middle.startswith("## 4. Resources") and "Measured by" in middle)
