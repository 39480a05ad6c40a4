"""docs/gpu.md's resource section, computed from the figures of ``benchmarks/gpu.py --json``.

    .venv/bin/python benchmarks/gpu.py --json results/benchmarks/gpu.json      # on the GPU (about 4 min)
    .venv/bin/python tools/gpu_doc.py results/benchmarks/gpu.json              # rewrites docs/gpu.md

Every number of the section is a formula of the paper's run sizes (params.yaml with presets/paper.yaml:
training queries, stored draws, epochs, evaluation batch and new tokens; the evaluation sets' sizes below)
and the constants the benchmark measured at full size with random weights: seconds of a teacher-extraction
batch, bytes of teacher cache per query, seconds of a training step with the cached teacher, seconds of
3-beam generation of a batch per method, peak GPU memory per method. The section names the constants and
the formula beside each result, and the GPU and versions they were measured with. docs/gpu.template.md
holds the rest of the page; the section replaces its ``<!-- resources -->`` line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mimic.pipeline.presets import overlay  # noqa: E402

MARKER = "<!-- resources -->"
# Evaluation set sizes of the paper's runs (n_eval: null): the 10,000 listed VQAv2 questions, the whole OK-VQA
# validation split, the 5,000 images of the Karpathy test split.
EVAL_SIZES = {"vqav2": 10_000, "okvqa": 5_046, "coco-karpathy": 5_000}
# params.yaml's model name -> benchmarks/gpu.py's shape name
SHAPES = {"idefics-9b": "idefics-9b", "idefics2-8b-base": "idefics2-8b-base"}


def paper_params(repo: Path = REPO) -> dict:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    return overlay(params, yaml.safe_load((repo / "presets" / "paper.yaml").read_text()))


def run_sizes(params: dict, model: str, task: str) -> dict:
    """What the paper's run of ``model`` on ``task`` processes: training queries, draws, epochs, evaluation
    queries, the evaluation batch and new tokens."""
    entry = params["models"][model]
    kind = params["tasks"][task]["kind"]
    train = {**params["methods"]["mimic"]["train"], **(entry.get("train") or {})}
    ev = {**params["eval"], **(entry.get("eval") or {})}
    return {"n_train": params["tasks"][task]["n_train"], "draws": params["icd"]["draws"], "epochs": train["epochs"],
            "n_eval": params["tasks"][task].get("n_eval") or EVAL_SIZES[task], "eval_batch": ev["batch_size"],
            "new_tokens": ev["max_new_tokens"][kind], "kind": kind}


def estimates(figures: dict, sizes: dict) -> dict:
    """The resources of one (model, task) run from one shape's benchmark figures (see the module docstring)."""
    batch, measured_tokens = figures["batch"], figures["new_tokens"]
    beams = figures["generate_s"]["3"]
    b = str(batch) if str(batch) in beams else max(beams, key=int)
    per_query = {m: s / int(b) for m, s in beams[b].items()}
    tokens = sizes["new_tokens"] / measured_tokens
    queries = sizes["n_train"] * sizes["draws"]
    return {
        "teacher_s": queries * figures["teacher_batch_s"] / batch,
        "cache_bytes": queries * figures["teacher_bytes_per_query"],
        "train_s": sizes["epochs"] * sizes["n_train"] * figures["train_step_s"]["cached"] / batch,
        "eval_s": {m: sizes["n_eval"] * s * tokens for m, s in per_query.items()},
        "peak_gib": figures.get("peak_gib_3_beams", {}),
        "eval_batch_measured": int(b),
    }


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _gib(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def section(doc: dict, params: dict) -> str:
    lines = ["## 4. Resources per model and task", ""]
    any_shape = next(iter(doc["shapes"].values()))
    size = ("TINY configs on the CPU: a check of the script, not figures to plan with" if any_shape.get("tiny")
            else "random weights at full size")
    lines += [f"Measured by `benchmarks/gpu.py` on {any_shape['device']} (torch {doc['torch']}, transformers "
              f"{doc['transformers']}; {size}, {any_shape['dtype']}; medians of {doc['repeats']} rounds), computed "
              "by `tools/gpu_doc.py`: rerun both on your GPU to get yours. Caption rows use the VQA prompts' timings "
              "scaled to the caption's new tokens.", ""]
    for model, shape in SHAPES.items():
        figures = doc["shapes"].get(shape)
        if not figures or "generate_s" not in figures:
            lines += [f"### {model}", "", f"No figures for the `{shape}` shape in this benchmark run.", ""]
            continue
        peak = figures.get("peak_gib_3_beams", {})
        lines += [f"### {model}", "",
                  f"Constants: teacher extraction {figures['teacher_batch_s']:.3f} s per batch of {figures['batch']} "
                  f"({figures['shots']}-shot), {_gib(figures['teacher_bytes_per_query'])} of cache per query; training "
                  f"step (cached teacher) {figures['train_step_s']['cached']:.3f} s per batch of {figures['batch']}; "
                  f"3-beam generation of {figures['new_tokens']} tokens per query: "
                  + ", ".join(f"{m} {1000 * s / figures['batch']:.0f} ms" for m, s in
                              figures["generate_s"]["3"].get(str(figures["batch"]), {}).items())
                  + (f"; peak GPU memory (3 beams, batch {figures['batch']}): "
                     + ", ".join(f"{m} {g:.1f} GiB" for m, g in peak.items()) if peak else "")
                  + f"; weights {figures['weights_gib']:.1f} GiB.", "",
                  "| task | teacher extraction | teacher cache (disk) | MimIC training | evaluation: zero-shot | "
                  "MimIC | ICL |", "|---|---|---|---|---|---|---|"]
        for task in EVAL_SIZES:
            sizes = run_sizes(params, model, task)
            est = estimates(figures, sizes)
            ev = est["eval_s"]
            cells = [_hours(est["teacher_s"]), _gib(est["cache_bytes"]), _hours(est["train_s"]),
                     *(_hours(ev.get(m, 0)) for m in ("zero", "mimic", "icl"))]
            lines.append(f"| {task} | {' | '.join(cells)} |")
        sizes = run_sizes(params, model, "vqav2")
        lines += ["", f"Formulas (VQAv2 sizes): extraction = n_train {sizes['n_train']} x draws {sizes['draws']} x "
                  f"{figures['teacher_batch_s']:.3f} s / {figures['batch']}; cache = n_train x draws x "
                  f"{_gib(figures['teacher_bytes_per_query'])}; training = epochs {sizes['epochs']} x n_train x "
                  f"{figures['train_step_s']['cached']:.3f} s / {figures['batch']}; evaluation = n_eval "
                  f"{sizes['n_eval']} x (seconds per query of 3-beam generation) x new tokens {sizes['new_tokens']} / "
                  f"{figures['new_tokens']}.", ""]
    return "\n".join(lines)


NOT_MEASURED = """## 4. Resources per model and task

Not measured yet: no GPU run of the benchmark is recorded in this repository (the machines it was built on
have no GPU). On the first GPU, run

    .venv/bin/python benchmarks/gpu.py --json results/benchmarks/gpu.json
    .venv/bin/python tools/gpu_doc.py results/benchmarks/gpu.json

and this section holds, per model and task, the GPU memory per method, the teacher cache on disk and the
time of teacher extraction, training and evaluation, each as its formula with the measured constants.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figures", nargs="?", default=None,
                        help="benchmarks/gpu.py --json output (none: the section says no GPU figures are recorded)")
    parser.add_argument("--template", default=str(REPO / "docs" / "gpu.template.md"))
    parser.add_argument("--out", default=str(REPO / "docs" / "gpu.md"))
    args = parser.parse_args(argv)
    template = Path(args.template).read_text()
    if MARKER not in template:
        raise SystemExit(f"{args.template}: no {MARKER} line to replace")
    from mimic.io.atomic import atomic_write_text

    text = section(json.loads(Path(args.figures).read_text()), paper_params()) if args.figures else NOT_MEASURED
    atomic_write_text(args.out, template.replace(MARKER, text))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
