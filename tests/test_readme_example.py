"""The README's "Train on your own data" example, run as written (the Hub is a local folder, see conftest)."""

import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
import transformers

import mimic

ROOT = Path(__file__).resolve().parents[1]


def example_code() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- example: train-and-share -->\n```python\n(.*?)\n```", text, re.S)
    assert match, "README.md lost its train-and-share example"
    return match.group(1)


def test_the_readme_example_trains_shares_and_reloads_and_the_base_check_refuses_another_model(
        tmp_path, monkeypatch, local_hub, caplog):
    hub, _ = local_hub
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").symlink_to(ROOT / "models")
    code = example_code()
    assert len(code.splitlines()) <= 20
    namespace = {}
    with caplog.at_level(logging.INFO, logger="mimic.training.learn"):
        exec(compile(code, "README.md example", "exec"), namespace)  # noqa: S102 - the documented example itself
    (line,) = [r.getMessage() for r in caplog.records if r.name == "mimic.training.learn"]
    first, last = map(float, re.match(r"loss ([\d.]+) -> ([\d.]+) over 16 steps$", line).groups())
    assert last < first  # 16 examples, batch 2, 2 epochs: 16 steps, and the loss went down

    model = namespace["model"]
    local = (tmp_path / "my-shift").iterdir()
    assert sorted(p.name for p in local) == ["README.md", "mimic.safetensors", "mimic_config.json"]
    assert "| training data | 16 drawn squares |" in (tmp_path / "my-shift" / "README.md").read_text()
    assert (hub / "me" / "mini-mimic" / "mimic.safetensors").read_bytes() == \
        (tmp_path / "my-shift" / "mimic.safetensors").read_bytes()
    from_hub = mimic.methods.attached(model).module.state_dict()
    mimic.detach(model)
    from_dir = mimic.from_pretrained(model, "my-shift").state_dict()
    assert from_hub.keys() == from_dir.keys() and all(torch.equal(from_hub[k], from_dir[k]) for k in from_dir)
    assert not torch.equal(from_dir["v"], torch.zeros_like(from_dir["v"]))

    # The same weights under another name: another base model for the check, refused in one line.
    shutil.copytree(ROOT / "models" / "mini-idefics2", tmp_path / "other-mini")
    other = transformers.AutoModelForImageTextToText.from_pretrained("other-mini", attn_implementation="sdpa")
    refused = (r"^my-shift was trained on 'models/mini-idefics2' \(idefics2\), not on 'other-mini'; "
               r"from_pretrained\(\.\.\., strict=False\) loads it anyway$")
    with pytest.raises(ValueError, match=refused):
        mimic.from_pretrained(other, "my-shift")
    assert mimic.from_pretrained(other, "my-shift", strict=False) is not None
