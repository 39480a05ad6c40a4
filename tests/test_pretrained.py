"""Checkpoints the peft way: save_pretrained / from_pretrained (a directory or a Hub id) / push_to_hub.

Models are saved and loaded back with transformers' own ``from_pretrained``, so ``config._name_or_path``
is what a user's model carries. The Hub is a local folder: ``HfApi``'s upload and ``snapshot_download``
are replaced by copies into and out of it (no network here).
"""

import json
from pathlib import Path

import pytest
import torch
import transformers as tf
import yaml

import mimic
from mimic import MimicConfig
from mimic.methods.live import LiveConfig
from mimic.tiny.models import random_icl_batch, tiny_idefics2


def saved_model(root: Path, name: str, seed: int) -> torch.nn.Module:
    """A tiny Idefics2 written to ``root/name`` and loaded back as a user loads a model."""
    tiny_idefics2(seed=seed).save_pretrained(root / name)
    return tf.Idefics2ForConditionalGeneration.from_pretrained(root / name, attn_implementation="sdpa").eval()


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def trained(model, config=None):
    module = mimic.attach(model, config or MimicConfig())
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)
    return module


def test_a_checkpoint_for_another_base_model_is_refused_in_one_line_unless_not_strict(tmp_path):
    model_a, model_b = saved_model(tmp_path, "tiny-a", 0), saved_model(tmp_path, "tiny-b", 1)
    trained(model_a)
    mimic.save_pretrained(model_a, tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "mimic_config.json").read_text())["base_model"] == str(tmp_path / "tiny-a")
    message = (rf"^{tmp_path}/ckpt was trained on '{tmp_path}/tiny-a' \(idefics2\), not on '{tmp_path}/tiny-b'; "
               r"from_pretrained\(\.\.\., strict=False\) loads it anyway$")
    with pytest.raises(ValueError, match=message):
        mimic.from_pretrained(model_b, tmp_path / "ckpt")
    assert mimic.methods.attached(model_b) is None
    module = mimic.from_pretrained(model_b, tmp_path / "ckpt", strict=False)
    assert all(torch.equal(v, mimic.methods.attached(model_a).module.state_dict()[k])
               for k, v in module.state_dict().items())


def test_the_same_base_model_matches_as_a_hub_id_or_a_local_copy(tmp_path):
    model = saved_model(tmp_path, "idefics2-8b-base", 0)
    trained(model)
    _, inputs, _ = random_icl_batch(model, pad=True, seed=3)
    expected = logits(model, inputs)
    mimic.save_pretrained(model, tmp_path / "ckpt")
    mimic.detach(model)
    doc = json.loads((tmp_path / "ckpt" / "mimic_config.json").read_text())
    doc["base_model"] = "HuggingFaceM4/idefics2-8b-base"  # as trained on the hub's copy
    (tmp_path / "ckpt" / "mimic_config.json").write_text(json.dumps(doc))
    mimic.from_pretrained(model, tmp_path / "ckpt")
    assert torch.equal(logits(model, inputs), expected)


def test_another_model_type_of_the_same_shapes_is_refused(tmp_path):
    model = saved_model(tmp_path, "tiny", 0)
    trained(model)
    mimic.save_pretrained(model, tmp_path / "ckpt")
    mistral = tf.MistralForCausalLM(tf.MistralConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                                                     num_hidden_layers=2, num_attention_heads=4,
                                                     num_key_value_heads=2)).eval()
    with pytest.raises(ValueError, match=r"trained on '.*/tiny' \(idefics2\), not on a 'mistral' model; "):
        mimic.from_pretrained(mistral, tmp_path / "ckpt")
    assert mimic.from_pretrained(mistral, tmp_path / "ckpt", strict=False) is not None  # the shapes fit


def test_the_model_card_names_base_model_method_task_data_and_scores(tmp_path):
    model = saved_model(tmp_path, "tiny", 0)
    module = trained(model, LiveConfig())
    card = {"task": "VQAv2 (10,000 val questions)", "training_data": "1,000 VQAv2 train questions, 8 shots",
            "scores": {"accuracy": 69.291, "latency_ms": 12}}
    mimic.save_pretrained(model, tmp_path / "ckpt", card=card)
    text = (tmp_path / "ckpt" / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front == {"library_name": "mimic-icl", "base_model": str(tmp_path / "tiny"),
                     "tags": ["mimic-icl", "in-context-learning", "live"]}
    rows = dict(line.strip("| ").split(" | ") for line in text.splitlines()
                if line.startswith("| ") and line != "| | |")
    trainable = mimic.count_parameters(module.config)["trainable"]
    assert rows == {"method": "`live`", "base model": f"`{tmp_path / 'tiny'}`", "model type": "`idefics2`",
                    "trained parameters": f"{trainable:,}", "fitted values": "0", "task": card["task"],
                    "training data": card["training_data"], "score: accuracy": "69.29", "score: latency_ms": "12"}
    mimic.save_pretrained(model, tmp_path / "bare", card=False)
    assert sorted(p.name for p in (tmp_path / "bare").iterdir()) == ["mimic.safetensors", "mimic_config.json"]
    with pytest.raises(TypeError, match="take a model with a method attached"):
        mimic.save_pretrained(tiny_idefics2(), tmp_path / "none")


def test_push_to_hub_then_from_pretrained_by_hub_id_is_bit_identical(tmp_path, local_hub):
    hub, calls = local_hub
    model = saved_model(tmp_path, "tiny", 0)
    trained(model)
    _, inputs, _ = random_icl_batch(model, pad=True, seed=5)
    expected = logits(model, inputs)
    url = mimic.push_to_hub(model, "someone/tiny-mimic", card={"task": "shapes-vqa"}, private=True)
    assert url == "https://huggingface.co/someone/tiny-mimic"
    assert sorted(p.name for p in (hub / "someone/tiny-mimic").iterdir()) == [
        "README.md", "mimic.safetensors", "mimic_config.json"]
    assert calls[:2] == [("create_repo", "someone/tiny-mimic", True, True),
                         ("upload_folder", "someone/tiny-mimic", "Upload mimic checkpoint")]
    mimic.detach(model)
    mimic.from_pretrained(model, "someone/tiny-mimic", revision="main")
    assert calls[2] == ("snapshot_download", "someone/tiny-mimic", "main",
                        ("mimic.safetensors", "mimic_config.json", "README.md"))
    assert torch.equal(logits(model, inputs), expected)
    mimic.detach(model)
    with pytest.raises(OSError, match=r"^someone/missing: no such local directory, and the Hub repository could "
                                      r"not be downloaded \(RepositoryNotFoundError: 404 Client Error\.\)$"):
        mimic.from_pretrained(model, "someone/missing")
    with pytest.raises(FileNotFoundError, match=r"nowhere/ckpt/mimic_config.json is missing"):
        mimic.from_pretrained(model, tmp_path / "nowhere" / "ckpt")  # a path is never sent to the Hub
    assert len(calls) == 4
