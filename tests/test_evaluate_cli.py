"""`mimic evaluate` through the CLI on the shipped miniature model: eval.limit and 3-beam MimIC.

The stages run in-process (``mimic.cli.main``) in a scratch directory with a params.yaml shrunk
to a few queries; the predictions are then checked against generation done directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import mimic
from mimic.cli import main
from mimic.commands.stage_inputs import load_task
from mimic.metrics import score
from mimic.models.generation import encode_prompts, generate
from mimic.models.loading import load_model

REPO = Path(__file__).resolve().parents[1]
TASK, MODEL = "shapes-vqa", "mini-idefics2"


def _params(**eval_settings) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"][MODEL]["path"] = str(REPO / "models" / MODEL)
    params["run"].update(models=[MODEL], tasks=[TASK], untrained=["zero-shot"], trained=["mimic"])
    params["tasks"][TASK].update(n_train=16, n_support=16, n_eval=7)
    params["icd"].update(shots=4, draws=1, embedding=None)
    params["methods"]["mimic"]["train"].update(epochs=4, batch_size=8, lr=5.0e-2)
    params["teacher"].update(shard_size=8, batch_size=8)
    params["eval"].update(batch_size=3, **eval_settings)
    return params


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(params: dict, *argv: str) -> None:
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert main([*argv, "--params", "params.yaml"]) == 0, argv


def _rows(method: str) -> list[dict]:
    path = Path("results/eval") / MODEL / TASK / "seed-0" / method / "predictions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _assert_two_shot_predictions(loaded, data, demo_lists: dict, method: str) -> None:
    """The method's predictions are greedy generation from prompts with the first 2 of each query's
    ``demo_lists``, and its metrics.json says 2 shots."""
    rows = _rows(method)
    qids = [r["id"] for r in rows]
    demos = [[data.demo(s) for s in demo_lists[q][:2]] for q in qids]
    inputs = encode_prompts(loaded, "vqa", [data.query("eval", q) for q in qids], demos=demos)
    assert [r["prediction"] for r in rows] == generate(loaded, inputs, 10)
    metrics = json.loads((Path("results/eval") / MODEL / TASK / "seed-0" / method / "metrics.json").read_text())
    assert metrics["shots"] == 2


def test_eval_limit_keeps_the_first_n_queries(workdir):
    params = _params(limit=3)
    _run(params, "prepare", "--task", TASK)
    _run(params, "sample-icd", "--task", TASK)
    for method in ("icl", "zero-shot"):
        _run(params, "evaluate", "--model", MODEL, "--task", TASK, "--method", method)
    data, _ = load_task(TASK, params, 0)
    first = list(data.tables["eval"]["id"])[:3]
    for method in ("icl", "zero-shot"):
        rows = _rows(method)
        assert [r["id"] for r in rows] == first
        metrics = json.loads((Path("results/eval") / MODEL / TASK / "seed-0" / method / "metrics.json").read_text())
        assert metrics["n_eval"] == 3
        assert metrics["score"] == pytest.approx(
            score("vqa", [r["prediction"] for r in rows], [r["answers"] for r in rows])["vqa_accuracy"])


def test_mimic_with_three_beams_equals_direct_beam_search(workdir, monkeypatch):
    from transformers import Idefics2ForConditionalGeneration

    params = _params(num_beams=3, length_penalty=-3.0)
    seen = []
    real = Idefics2ForConditionalGeneration.generate

    def spy(self, *args, **kwargs):
        seen.append((kwargs["num_beams"], kwargs["length_penalty"]))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Idefics2ForConditionalGeneration, "generate", spy)
    for argv in (("prepare", "--task", TASK), ("sample-icd", "--task", TASK),
                 ("extract-teacher", "--model", MODEL, "--task", TASK),
                 ("train", "--model", MODEL, "--task", TASK, "--method", "mimic"),
                 ("evaluate", "--model", MODEL, "--task", TASK, "--method", "icl"),
                 ("evaluate", "--model", MODEL, "--task", TASK, "--method", "mimic")):
        _run(params, *argv)
    rows = _rows("mimic")
    data, _ = load_task(TASK, params, 0)
    loaded = load_model(MODEL, params["models"][MODEL]["path"])
    shift = mimic.from_pretrained(loaded.model, Path("results/checkpoints") / MODEL / TASK / "seed-0" / "mimic")
    assert shift.v.abs().max() > 1e-2  # trained: the shift is not negligible
    qids = [r["id"] for r in rows]
    inputs = encode_prompts(loaded, "vqa", [data.query("eval", q) for q in qids])
    beams = generate(loaded, inputs, 10, num_beams=3, length_penalty=-3.0)
    assert [r["prediction"] for r in rows] == beams
    assert set(seen) == {(3, -3.0)}  # every evaluation batch decoded with the eval settings
    with mimic.disabled(loaded.model), torch.no_grad():
        plain = generate(loaded, inputs, 10, num_beams=3, length_penalty=-3.0)
    assert plain != beams  # the shift changes the beams: the comparison above is not vacuous


def test_a_models_own_teacher_shots_reach_extraction_and_the_icl_reference(workdir):
    """models.<m>.shots = 2 of icd.shots = 4: the teacher and `icl` take the first 2 sampled demonstrations."""
    from mimic.training.teacher import TeacherCache, teacher_states

    params = _params(limit=2)
    params["models"][MODEL]["shots"] = 2
    for argv in (("prepare", "--task", TASK), ("sample-icd", "--task", TASK),
                 ("extract-teacher", "--model", MODEL, "--task", TASK),
                 ("evaluate", "--model", MODEL, "--task", TASK, "--method", "icl")):
        _run(params, *argv)
    data, icd = load_task(TASK, params, 0)
    assert all(len(d) == 4 for lists in icd["train"].values() for d in lists)
    cache = TeacherCache(Path("results/teacher") / MODEL / TASK / "seed-0")
    assert cache.manifest["shots"] == 2
    loaded = load_model(MODEL, params["models"][MODEL]["path"])
    q = sorted(icd["train"])[0]
    direct, _ = teacher_states(loaded, data, [(q, 0, icd["train"][q][0][:2])], "mlp")
    assert torch.allclose(cache.get(q, 0).float(), direct[0].float(), atol=2e-3)  # float16 storage
    four, _ = teacher_states(loaded, data, [(q, 0, icd["train"][q][0])], "mlp")
    assert not torch.allclose(cache.get(q, 0).float(), four[0].float(), atol=2e-3)
    _assert_two_shot_predictions(loaded, data, icd["eval"], "icl")


def test_rices_embeddings_reach_the_demonstrations_of_an_icl_rices_method(workdir):
    """mimic embed -> sample-icd -> evaluate icl-rices-2: the embeddings are the model's pooled vision
    features, the stored lists are their nearest support images, and evaluation prompts with them."""
    from safetensors.torch import load_file

    from mimic.data import rices
    from mimic.data.schema import open_image

    params = _params(limit=3)
    params["icd"]["embedding"] = MODEL
    params["run"]["untrained"] = ["icl-rices-2"]
    for argv in (("prepare", "--task", TASK), ("embed", "--task", TASK), ("sample-icd", "--task", TASK),
                 ("evaluate", "--model", MODEL, "--task", TASK, "--method", "icl"),
                 ("evaluate", "--model", MODEL, "--task", TASK, "--method", "icl-rices-2")):
        _run(params, *argv)
    data, icd = load_task(TASK, params, 0)
    loaded = load_model(MODEL, params["models"][MODEL]["path"])
    stored = load_file("data/" + TASK + "/seed-0/embeddings.safetensors")
    support = rices.embed_images(loaded, [open_image(r) for r in data.tables["support"]["image"]])
    assert stored["support"].shape == (16, support.shape[1]) and torch.allclose(stored["support"], support)
    nearest = rices.nearest(stored["eval"], stored["support"], 4).tolist()
    ids = list(data.tables["support"]["id"])
    eval_ids = data.tables["eval"]["id"]
    assert icd["eval_rices"] == {q: [ids[j] for j in row] for q, row in zip(eval_ids, nearest, strict=True)}
    assert icd["eval_rices"] != icd["eval"]  # the random lists stay for the other methods
    _assert_two_shot_predictions(loaded, data, icd["eval_rices"], "icl-rices-2")


def test_a_clip_checkpoint_embeds_for_rices_through_the_cli(workdir):
    """icd.embedding that is not a key of `models`: a transformers CLIP checkpoint (here a tiny one built
    from a config and saved locally, as a hub download would be); `mimic embed` stores its projected image
    features (the paper's RICES), and `mimic sample-icd` retrieves by them."""
    from safetensors.torch import load_file
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from mimic.data import rices
    from mimic.data.schema import open_image

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 64, "max_position_embeddings": 16},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )
    clip = CLIPModel(config).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    clip.save_pretrained(workdir / "clip")
    processor.save_pretrained(workdir / "clip")

    params = _params()
    params["icd"]["embedding"] = str(workdir / "clip")
    for argv in (("prepare", "--task", TASK), ("embed", "--task", TASK), ("sample-icd", "--task", TASK)):
        _run(params, *argv)
    data, icd = load_task(TASK, params, 0)
    stored = load_file(f"data/{TASK}/seed-0/embeddings.safetensors")
    assert {k: tuple(v.shape) for k, v in stored.items()} == {"train": (16, 8), "support": (16, 8), "eval": (7, 8)}
    images = [open_image(r) for r in data.tables["eval"]["image"]]
    with torch.no_grad():  # CLIP's image features by hand: the vision tower's pooled output, projected
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        expected = clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output)
    assert torch.allclose(stored["eval"], expected, atol=1e-5)
    nearest = rices.nearest(stored["eval"], stored["support"], 4).tolist()
    ids = list(data.tables["support"]["id"])
    assert icd["eval_rices"] == {q: [ids[j] for j in row] for q, row in zip(data.tables["eval"]["id"], nearest,
                                                                             strict=True)}
