"""Every supported family through its real processor (mimic.tiny.families).

Prompts are built with the project's own functions and encoded by the family's real
processor class; a tiny random-weight model of the family then runs generation with
MimIC attached, teacher extraction, training steps and the exactness oracle.
"""

import dataclasses
import functools

import pytest
import torch

import mimic
from mimic.data.batches import aligned_lengths, student_batch, teacher_batch
from mimic.models.adapters import positions_from_mask
from mimic.models.generation import encode_prompts, generate
from mimic.models.prompts import PromptFormat
from mimic.shift.config import MimicConfig
from mimic.tiny.families import FAMILIES, IMAGE_SIZES, tiny_family, tiny_task
from mimic.tiny.oracle import exactness_errors, oracle_inputs
from mimic.training.loop import train
from mimic.training.teacher import teacher_states

# Image tokens per image, worked out by hand from each tiny config (image sizes are (width, height)).
# LLaVA-NeXT / -OneVision tile an image at the best of the pinpoints [[16,16]], [16,32], [32,16], [32,32]
# (16 x 16 tiles of 2 x 2 patches): 20x20 and 32x24 -> 2 x 2 tiles, 4 x 4 patches, 16 + 4 newlines;
# 24x16 -> 1 x 2 tiles, 2 x 4 patches + 2 newlines; 16x28 -> 2 x 1 tiles, 4 x 2 patches + 4 newlines;
# plus the 2 x 2 base image (NeXT: CLIP's CLS token added, then dropped by the "default" strategy).
ANYRES = {(20, 20): 24, (24, 16): 14, (16, 28): 16, (32, 24): 24}
# Qwen-VL: resized to multiples of 8 px (patch 4, merge 2) with 256..512 pixels, one token per 8 x 8 px:
# 20x20 -> 16x16; 24x16 -> 24x16; 16x28 -> 16x32; 32x24 (768 px, too many) -> 24x16.
QWEN = {(20, 20): 4, (24, 16): 6, (16, 28): 8, (32, 24): 6}
# InternVL: 16 x 16 tiles, the grid (at most 4 tiles) closest to the aspect ratio, plus a thumbnail when
# there is more than one tile; 4 tokens a tile: 20x20 -> 1 tile; 24x16 -> 2 x 1 + 1; 16x28 -> 1 x 2 + 1;
# 32x24 (ratio 1.33: 1 x 1 and 2 x 2 tie, the larger grid wins as the image covers it) -> 4 + 1.
INTERNVL = {(20, 20): 4, (24, 16): 12, (16, 28): 12, (32, 24): 20}
# Pixtral: never enlarged (longest edge <= 32), each side rounded up to a multiple of 8 px (patch 4 x merge 2,
# or patch 8), one [IMG] per 8 x 8 px: 20x20 -> 24x24, 3 x 3; 24x16 -> 3 x 2; 16x28 -> 16x32, 2 x 4; 32x24 -> 4 x 3.
PIXTRAL = {(20, 20): 9, (24, 16): 6, (16, 28): 8, (32, 24): 12}
# Llama 4: 16 x 16 tiles on the smallest canvas of at most 4 tiles that holds the image without shrinking
# it, plus the global image when tiled; 4 <|patch|> a tile: 20x20 and 32x24 -> 2 x 2 + 1; 24x16 -> 2 x 1 + 1;
# 16x28 -> 1 x 2 + 1.
LLAMA4 = {(20, 20): 20, (24, 16): 12, (16, 28): 12, (32, 24): 20}
# Phi-4-multimodal: small images take one 448 px crop; tokens = 256 global + 16 row ends + 1 separator, then the
# crop's valid 28 px cells (14 px patches, every other one) + one row end per valid row. The image is resized to
# 448 px on its long side and padded; whole padded patches are masked: 20x20 -> 16 x 16; 24x16 -> 448x299, 22 of
# 32 patch rows -> 11 x 16; 16x28 -> 256x448, 19 of 32 patch columns -> 16 x 10; 32x24 -> 448x336 -> 12 x 16.
PHI4 = {(20, 20): 273 + 16 * 17, (24, 16): 273 + 11 * 17, (16, 28): 273 + 16 * 11, (32, 24): 273 + 12 * 17}
IMAGE_TOKENS = {  # family: (the image token in input_ids, tokens per image)
    "idefics": ("<image>", 1),  # one token; the perceiver's latents enter by cross-attention
    "idefics2": ("<image>", 3),  # perceiver latents (image_seq_len)
    "idefics3": ("<image>", 4),  # (32 / 8)^2 patches / 2^2 (pixel shuffle)
    "llava": ("<image>", 4),  # (16 / 8)^2 patches (+ CLS, dropped)
    "llava-interleave": ("<image>", 4),  # (16 / 8)^2 SigLIP patches, all kept
    "llava-next": ("<image>", ANYRES),
    "llava-onevision": ("<image>", ANYRES),
    "qwen2-vl": ("<|image_pad|>", QWEN),
    "qwen2.5-vl": ("<|image_pad|>", QWEN),
    "qwen3-vl": ("<|image_pad|>", QWEN),
    "gemma3": ("<image_soft_token>", 4),  # (16 / 4)^2 patches average-pooled to mm_tokens_per_image
    # every size is resized to longest edge 64, then up to multiples of 32: 64 x 64, 2 x 2 tiles + the global
    # image, each (32 / 8)^2 patches / 2^2
    "smolvlm": ("<image>", 5 * 4),
    "internvl": ("<IMG_CONTEXT>", INTERNVL),
    "mistral3": ("[IMG]", PIXTRAL),
    "pixtral-llava": ("[IMG]", PIXTRAL),
    "llama4": ("<|patch|>", LLAMA4),
    "phi4-multimodal": ("<|endoftext10|>", PHI4),
}
NAMES = sorted(FAMILIES)
HP = {"epochs": 4, "lr": 5e-2, "warmup_ratio": 0.0, "weight_decay": 0.0, "batch_size": 4, "grad_accum": 1,
      "align_weight": 1.0, "ce_weight": 0.5, "seed": 0}


def family(name: str):
    missing = FAMILIES[name].missing()
    if missing:
        pytest.skip(f"{name}'s processor needs {', '.join(missing)}, not installed")
    return _family(name)


@functools.cache
def _family(name: str):
    return tiny_family(name)


@functools.cache
def task():
    return tiny_task("vqa", n_train=4, n_support=8, seed=0)


def batch():
    """Four training queries, each with its first draw of two demonstrations."""
    data, icd = task()
    qids = sorted(icd["train"])
    return qids, [icd["train"][q][0] for q in qids]


def tokens(inputs: dict, i: int) -> list[int]:
    return inputs["input_ids"][i][inputs["attention_mask"][i].bool()].tolist()


def test_every_family_has_a_hand_computed_image_token_count():
    assert set(IMAGE_TOKENS) == set(FAMILIES)
    assert all(set(t) == set(IMAGE_SIZES) for _, t in IMAGE_TOKENS.values() if isinstance(t, dict))


@pytest.mark.parametrize("name", NAMES)
def test_image_tokens_and_left_padding(name):
    lm = family(name)
    data, _ = task()
    qids, demo_ids = batch()
    queries = [data.query("train", q) for q in qids]
    demos = [[data.demo(s) for s in ids] for ids in demo_ids]
    icl = encode_prompts(lm, "vqa", queries, demos=demos)
    zero_shot = encode_prompts(lm, "vqa", queries)
    token, per_image = IMAGE_TOKENS[name]
    image_id = lm.tokenizer.convert_tokens_to_ids(token)
    rows = {"icl": [[d[0] for d in ds] + [q[0]] for q, ds in zip(queries, demos, strict=True)],
            "zero-shot": [[q[0]] for q in queries]}
    for key, inputs in (("icl", icl), ("zero-shot", zero_shot)):
        count = [(per_image[img.size] if isinstance(per_image, dict) else per_image) for row in rows[key]
                 for img in row]
        expected, k = [], 0
        for row in rows[key]:
            expected.append(sum(count[k : k + len(row)]))
            k += len(row)
        assert (inputs["input_ids"] == image_id).sum(1).tolist() == expected, key
        mask, ids = inputs["attention_mask"], inputs["input_ids"]
        lengths = mask.sum(1).tolist()
        assert len(set(lengths)) > 1, f"{key}: the batch should need padding"
        width = ids.shape[1]
        for i, n in enumerate(lengths):  # left padding: pads first, then the whole prompt
            assert not mask[i, : width - n].any() and mask[i, width - n :].all()
            assert (ids[i, : width - n] == lm.pad_token_id).all()
    with torch.no_grad():  # the model accepts exactly these image tokens (it checks them against its features)
        lm.model(**icl)


@pytest.mark.parametrize("name", NAMES)
def test_aligned_positions_are_the_query_and_its_answer(name):
    lm = family(name)
    data, _ = task()
    qids, demo_ids = batch()
    teacher = teacher_batch(lm, data, "train", qids, demo_ids)
    student, labels, answer_lengths = student_batch(lm, data, "train", qids)
    bos = lm.tokenizer.bos_token_id
    lengths = aligned_lengths(teacher, student, bos)
    for i, n in enumerate(lengths):
        s, t = tokens(student, i), tokens(teacher, i)
        assert n == len(s) - (bos is not None)  # the whole zero-shot prompt but its BOS
        assert t[-n:] == s[-n:] and len(t) > len(s) + 10
        if bos is not None:
            assert s[0] == bos and t[0] == bos
        answer = lm.tokenizer.decode(s[-answer_lengths[i] :])
        assert answer.strip() == data.target("train", qids[i])
        assert (labels[i] != -100).sum() == answer_lengths[i]


def test_a_merge_across_the_demonstration_boundary_raises():
    """Gemma 3's processor writes "\\n\\n" before each image: a "\\n" after a demonstration merges with it."""
    lm = family("gemma3")
    data, _ = task()
    qids, demo_ids = batch()
    newline = dataclasses.replace(lm, prompt_format=PromptFormat(separator="\n"))
    teacher = teacher_batch(newline, data, "train", qids, demo_ids)
    student, _, _ = student_batch(newline, data, "train", qids)
    with pytest.raises(ValueError, match="tokenizes the query differently"):
        aligned_lengths(teacher, student, lm.tokenizer.bos_token_id)
    assert lm.prompt_format.separator == ""  # the family's own format avoids it (previous test)


@pytest.mark.parametrize("name", NAMES)
def test_teacher_states_do_not_depend_on_the_batch(name):
    """Left-padded batched extraction equals extraction one query at a time (positions, masks, m-RoPE)."""
    lm = family(name)
    data, icd = task()
    chunk = [(q, 1, icd["train"][q][1]) for q in sorted(icd["train"])]
    states, lengths = teacher_states(lm, data, chunk, "mlp")
    shapes = adapter_shapes(lm)
    for sample, st, n in zip(chunk, states, lengths, strict=True):
        assert st.shape == (shapes["num_layers"], n, shapes["hidden_size"])
        (alone,), (n_alone,) = teacher_states(lm, data, [sample], "mlp")
        assert n_alone == n
        assert torch.allclose(st, alone, atol=1e-5), (alone - st).abs().max()


def adapter_shapes(lm):
    return lm.adapter.shapes(lm.model)


@pytest.mark.parametrize("name", NAMES)
def test_training_steps_reduce_the_loss(name):
    lm = family(name)
    data, icd = task()
    try:
        shift, rows, _ = train(lm, data, icd, MimicConfig(), HP, "mlp", None)
        assert len(rows) == HP["epochs"]
        assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
        assert rows[-1]["loss"] < rows[0]["loss"]
        assert all(not p.requires_grad for p in lm.model.parameters())
    finally:
        mimic.detach(lm.model)


@pytest.mark.parametrize("name", NAMES)
def test_oracle_reproduces_icl_through_the_processor(name):
    lm = family(name)
    data, _ = task()
    qids, demo_ids = batch()
    queries = [data.query("train", q) for q in qids]
    demos = [[data.demo(s) for s in ids] for ids in demo_ids]
    icl, zero_shot, lengths = oracle_inputs(lm, "vqa", queries, demos)
    assert (icl["attention_mask"] == 0).any() and (zero_shot["attention_mask"] == 0).any()
    oracle_err, zero_shot_err = exactness_errors(lm.model, icl, zero_shot, lengths)
    assert oracle_err <= 1e-4
    assert zero_shot_err > 100 * max(oracle_err, 1e-6)


def _continued(inputs: dict, sequences: torch.Tensor) -> dict:
    """``inputs`` for the prompt followed by its generated tokens (text tokens: no new image)."""
    new = sequences.shape[1] - inputs["input_ids"].shape[1]
    out = dict(inputs, input_ids=sequences)
    out["attention_mask"] = torch.nn.functional.pad(inputs["attention_mask"], (0, new), value=1)
    if "position_ids" in out:
        out["position_ids"] = positions_from_mask(out["attention_mask"])
    for key in ("token_type_ids", "mm_token_type_ids"):
        if key in out:
            out[key] = torch.nn.functional.pad(inputs[key], (0, new), value=0)
    if "image_attention_mask" in out and out["image_attention_mask"].dim() == 3:
        # Idefics v1 (token x image; Phi-4's is per crop): generated tokens see the last image, as in generate()
        last = inputs["image_attention_mask"][:, -1:]
        out["image_attention_mask"] = torch.cat([inputs["image_attention_mask"], last.expand(-1, new, -1)], 1)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_generation_with_mimic_matches_the_teacher_forced_forward(name):
    """Cached decoding (rope deltas, log Z2 over cached keys) gives the logits of one forward on the result."""
    lm = family(name)
    data, _ = task()
    qids, _ = batch()
    inputs = encode_prompts(lm, "vqa", [data.query("train", q) for q in qids])
    shift = mimic.attach(lm.model)
    try:
        with torch.no_grad():
            shift.v.normal_(0, 1.0)
            shift.w.normal_(0, 0.5)
        texts = generate(lm, inputs, max_new_tokens=3)
        assert len(texts) == len(qids) and all(isinstance(t, str) for t in texts)
        steps = 3
        prompt = {k: v for k, v in inputs.items() if k != "position_ids"}  # generate() counts them itself
        with torch.no_grad():
            out = lm.model.generate(
                **prompt, max_new_tokens=steps, do_sample=False, output_scores=True, return_dict_in_generate=True,
                pad_token_id=lm.pad_token_id, eos_token_id=None, suppress_tokens=lm.tokenizer.all_special_ids)
            logits = lm.model(**_continued(inputs, out.sequences)).logits[:, -steps - 1 : -1]
        for step, score in enumerate(out.scores):
            allowed = torch.isfinite(score)
            assert torch.allclose(score[allowed], logits[:, step][allowed], atol=1e-4)
    finally:
        mimic.detach(lm.model)


def test_the_text_only_adapter_refuses_an_image_in_one_line():
    from transformers import LlamaConfig, LlamaForCausalLM

    from mimic.models.loading import LoadedModel
    from mimic.tiny.families import sentencepiece_tokenizer

    tok = sentencepiece_tokenizer(())
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    adapter = mimic.adapter_for(model)
    lm = LoadedModel("llama", model, tok, adapter, adapter.prompt_format, torch.device("cpu"), [], tok.pad_token_id)
    data, _ = task()
    with pytest.raises(ValueError, match=r"^model family 'causal-lm' takes no images, but a prompt holds one") as err:
        encode_prompts(lm, "vqa", [data.query("train", "train-0")])
    assert "\n" not in str(err.value)
    text = adapter.encode(tok, [["Question: What color is the square? Short answer:"], ["Caption:"]])
    assert text["input_ids"].shape[0] == 2 and (text["attention_mask"][1] == 0).any()


@pytest.mark.parametrize("name", ["idefics2", "qwen2-vl", "gemma3"])
def test_answer_loss_is_the_models_own_loss(name):
    """training.answer_cross_entropy equals transformers' loss where that works (Idefics v1's crashes)."""
    from mimic.training.loop import answer_cross_entropy

    lm = family(name)
    data, _ = task()
    qids, _ = batch()
    inputs, labels, _ = student_batch(lm, data, "train", qids)
    with torch.no_grad():
        out = lm.model(**inputs, labels=labels)
    assert torch.allclose(answer_cross_entropy(out.logits, labels), out.loss, atol=1e-6)


# AutoProcessor builds these families' video processors, which need torchvision
VIDEO_FAMILIES = {"llava-onevision", "qwen2-vl", "qwen2.5-vl", "qwen3-vl", "internvl", "smolvlm"}


@pytest.mark.parametrize("name", NAMES)
def test_a_saved_family_loads_as_a_user_loads_it(name, tmp_path):
    """save_pretrained, then mimic.models.loading.load_model (AutoConfig, the architecture class, AutoProcessor)."""
    from transformers import AutoImageProcessor
    from transformers.utils import is_torchvision_available

    from mimic.models.loading import load_model

    if name in VIDEO_FAMILIES and not is_torchvision_available():
        pytest.skip(f"AutoProcessor builds {name}'s video processor, which needs torchvision")
    lm = family(name)
    lm.model.save_pretrained(tmp_path)
    lm.processor.save_pretrained(tmp_path)
    # the PIL image processors the tiny families are built with (with torchvision, AutoProcessor would
    # pick the torchvision ones, whose resizing rounds differently)
    image_processor = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    loaded = load_model(name, str(tmp_path), "float32", "cpu", processor_kwargs={"image_processor": image_processor})
    assert type(loaded.processor.image_processor) is type(lm.processor.image_processor)
    assert type(loaded.processor) is type(lm.processor) and loaded.adapter is lm.adapter
    assert loaded.prompt_format == lm.prompt_format and loaded.stop_token_ids == lm.stop_token_ids
    data, _ = task()
    qids, demo_ids = batch()
    queries = [data.query("train", q) for q in qids]
    demos = [[data.demo(s) for s in ids] for ids in demo_ids]
    ours, theirs = encode_prompts(lm, "vqa", queries, demos), encode_prompts(loaded, "vqa", queries, demos)
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    with torch.no_grad():
        assert torch.equal(lm.model(**ours).logits, loaded.model(**theirs).logits)


def test_a_pixtral_checkpoint_saved_as_llava_takes_the_pixtral_adapter():
    """The processor decides how an image is written: [IMG] rows for a PixtralProcessor, whatever the model type."""
    lm = family("pixtral-llava")
    assert lm.model.config.model_type == "llava" and type(lm.processor).__name__ == "PixtralProcessor"
    assert mimic.adapter_for(lm.model).name == "llava"  # the model alone: where the layers are
    assert lm.adapter.name == "pixtral" and lm.adapter.image_placeholder == "[IMG]"
    assert lm.adapter is family("mistral3").adapter


def test_a_processor_that_chooses_an_adapter_with_other_layers_is_refused():
    from mimic.models.adapters import adapter_for

    lm = family("pixtral-llava")
    idefics3 = family("idefics3").model  # its decoder layers are model.text_model.layers
    with pytest.raises(ValueError, match=r"^PixtralProcessor chooses the 'pixtral' adapter, whose decoder layers "
                                         r"\(model\.language_model\.layers\) are not where 'idefics3'") as err:
        adapter_for(idefics3, lm.processor)
    assert "\n" not in str(err.value)


def test_an_unknown_model_type_fails_in_one_line_before_loading_weights(tmp_path):
    """Through the real entry point: load_model reads the config and stops, naming every supported type."""
    from transformers import GPT2Config

    from mimic.models.adapters import ADAPTERS
    from mimic.models.loading import load_model

    GPT2Config(n_layer=1, n_head=2, n_embd=8).save_pretrained(tmp_path)  # a config only: no weights to load
    with pytest.raises(ValueError, match=r"^no MimIC adapter for model_type 'gpt2'; supported: ") as err:
        load_model("mine", str(tmp_path), "float32", "cpu")
    message = str(err.value)
    assert "\n" not in message
    assert all(model_type in message for model_type in ADAPTERS)
    assert {"internvl", "mistral3", "smolvlm", "idefics2", "llava"} <= set(ADAPTERS)


def test_llama4_split_is_exact_only_within_one_attention_chunk():
    """Llama 4's RoPE layers attend within fixed chunks of absolute positions: with demonstrations in front the
    query's chunk boundaries move, so the oracle is exact only while the ICL prompt fits in one chunk (8192)."""
    lm = family("llama4")
    data, _ = task()
    qids, demo_ids = batch()
    queries = [data.query("train", q) for q in qids]
    demos = [[data.demo(s) for s in ids] for ids in demo_ids]
    icl, zero_shot, lengths = oracle_inputs(lm, "vqa", queries, demos)
    text = lm.model.config.text_config
    assert "chunked_attention" in text.layer_types and icl["input_ids"].shape[1] <= text.attention_chunk_size
    assert exactness_errors(lm.model, icl, zero_shot, lengths)[0] <= 1e-4
    previous, text.attention_chunk_size = text.attention_chunk_size, 32  # the ICL prompts span 4 chunks
    try:
        assert exactness_errors(lm.model, icl, zero_shot, lengths)[0] > 1e-3
    finally:
        text.attention_chunk_size = previous


def test_a_shift_after_llama4s_mixture_of_experts_mlp():
    """insert='mlp' on Llama 4, whose MoE layers return (flat output, router logits): the shift lands on the last
    layer's MLP output exactly (one layer shifted, so nothing before it moves), in every position's row."""
    from mimic.models.hidden_states import HiddenStateRecorder

    lm = family("llama4")
    last = len(lm.adapter.decoder_layers(lm.model)) - 1
    assert last in lm.model.config.text_config.moe_layers
    data, _ = task()
    qids, _ = batch()
    inputs = encode_prompts(lm, "vqa", [data.query("train", q) for q in qids])
    n = inputs["input_ids"].shape[1]

    def mlp_and_layer():
        with HiddenStateRecorder(lm.model, "mlp", [last]) as mlp, HiddenStateRecorder(lm.model, "layer", [last]) as out:
            mlp.select(n), out.select(n)
            lm.model(**inputs)
        return mlp.stacked()[0], out.stacked()[0]

    with torch.no_grad():
        base_mlp, base_out = mlp_and_layer()
        shift = mimic.attach(lm.model, MimicConfig(insert="mlp", layers=[last]))
        try:
            shift.v.normal_(0, 1.0)
            shifted_mlp, shifted_out = mlp_and_layer()
        finally:
            mimic.detach(lm.model)
    delta = shifted_mlp - base_mlp
    assert delta[inputs["attention_mask"].bool()].abs().min() > 0  # every real position is shifted
    assert torch.allclose(shifted_out - base_out, delta, atol=1e-5)  # added to the residual stream as it is


def test_phi4_vision_tower_runs_eager_because_sdpa_makes_it_depend_on_the_batch():
    """Phi-4's vision attention is marked causal: under SDPA an image's features change with the other crops in
    the batch (causal without a padded crop, bidirectional with one); the adapter loads the tower eager."""
    lm = family("phi4-multimodal")
    data, _ = task()
    qids, _ = batch()
    inputs = encode_prompts(lm, "vqa", [data.query("train", q) for q in qids])
    pixels, mask = inputs["image_pixel_values"].flatten(0, 1), inputs["image_attention_mask"].flatten(0, 1).bool()
    full = mask.flatten(1).all(1)
    padded = int((~full).nonzero()[0])
    tower = lm.model.model.embed_tokens_extend.image_embed
    config = tower.img_processor.config
    assert config._attn_implementation == "eager" and lm.adapter.attn_implementation["vision_config"] == "eager"

    def first_crop(rows):
        with torch.no_grad():
            return tower.get_img_features(pixels[rows], attention_mask=mask[rows])[0]

    assert full[0] and torch.allclose(first_crop([0]), first_crop([0, padded]), atol=1e-5)
    config._attn_implementation_internal = "sdpa"
    try:
        assert (first_crop([0]) - first_crop([0, padded])).abs().max() > 1e-2
    finally:
        config._attn_implementation_internal = "eager"
