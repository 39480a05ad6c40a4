"""Prompt presets: `clean` and the MimIC reference code's templates, to the character, through real processors."""

from dataclasses import replace

import pytest
import torch
from PIL import Image

from mimic.data.batches import aligned_lengths, instruction_tokens, student_batch, teacher_batch
from mimic.models.prompts import REFERENCE_FORMATS, PromptFormat, build_prompt, postprocess, preset_format
from mimic.tiny.families import FAMILIES, tiny_family, tiny_task

IMG = Image.new("RGB", (8, 8), "red")
DEMOS = [(IMG, "What color is it?", "red"), (IMG, "What shape?", "square")]
QUERY = (IMG, "Is it big?")
INSTRUCTION = "Provide an answer to the question. Use the image to answer."


def render(segments) -> str:
    return "".join(s if isinstance(s, str) else "<image>" for s in segments)


def test_clean_vqa_and_caption_formats():
    fmt = PromptFormat()
    assert build_prompt("vqa", DEMOS, QUERY, fmt) == [
        IMG, "Question: What color is it? Short answer: red\n", IMG, "Question: What shape? Short answer: square\n",
        IMG, "Question: Is it big? Short answer:"]
    assert render(build_prompt("caption", [(IMG, "", "a red square")], (IMG, ""), fmt, answer="a dot")) == (
        "<image>Caption: a red square\n<image>Caption: a dot\n")


def test_reference_idefics_template_to_the_character():
    fmt = REFERENCE_FORMATS["idefics"]
    assert render(build_prompt("vqa", DEMOS, QUERY, fmt, role="teacher")) == (
        f"Instruction: {INSTRUCTION}\n"
        "Image:<image> Question: What color is it? Answer: red\n"
        "Image:<image> Question: What shape? Answer: square\n"
        "Image:<image> Question: Is it big? Answer:")
    assert render(build_prompt("vqa", [], QUERY, fmt)) == (
        f"Instruction: {INSTRUCTION}\nImage:<image> Question: Is it big? Answer:")
    assert render(build_prompt("caption", [(IMG, "", "a red square")], (IMG, ""), fmt, answer="a dot")) == (
        "Instruction: provide a short caption of the input image.\n"
        "Image:<image> Caption: a red square\nImage:<image> Caption: a dot\n")


@pytest.mark.parametrize("kind, role, instructed", [
    # Kamichanw/MimIC 9eda50b: VQA's instruction is returned unconditionally (src/dataset_utils/vqa.py:89-91)
    # but the training student is the query round alone (src/dataset_utils/interface.py:221-223: the last
    # `num_role_in_round` messages, the instruction message is the first); the caption instruction only when
    # `is_icl` (src/dataset_utils/caption.py:54-58), set for evaluations without a checkpoint (src/eval.py:24)
    # and false in training (src/config/data.yaml:3).
    ("vqa", "untrained", True), ("vqa", "trained", True), ("vqa", "teacher", True), ("vqa", "student", False),
    ("caption", "untrained", True), ("caption", "trained", False), ("caption", "teacher", False),
    ("caption", "student", False),
])
def test_reference_instruction_by_role(kind, role, instructed):
    fmt = REFERENCE_FORMATS["idefics"]
    query = QUERY if kind == "vqa" else (IMG, "")
    for demos in ([], DEMOS[:1]):
        text = render(build_prompt(kind, demos, query, fmt, role=role))
        assert text.startswith("Instruction: ") == instructed, (demos, text)
        assert text.count("Instruction: ") == int(instructed)
    assert not render(build_prompt(kind, DEMOS, query, PromptFormat(), role=role)).startswith("Instruction")
    with pytest.raises(ValueError, match="prompt role 'eval' is not valid"):
        build_prompt(kind, [], query, fmt, role="eval")


def test_reference_idefics2_template_keeps_the_misspelled_tag():
    fmt = REFERENCE_FORMATS["idefics2"]
    end = "<end_of_outterance>\n"
    assert render(build_prompt("vqa", DEMOS[:1], QUERY, fmt, role="teacher")) == (
        f"Instruction: {INSTRUCTION}{end}"
        f"Image:<image>{end}Question: What color is it?{end}Answer: red{end}"
        f"Image:<image>{end}Question: Is it big?{end}Answer:")


def test_the_misspelled_tag_is_plain_text_for_the_idefics2_tokenizer():
    tok = tiny_family("idefics2").processor.tokenizer
    ids = tok("<end_of_outterance>", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1 and not set(ids) & set(tok.all_special_ids)
    assert tok("<end_of_utterance>", add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(
        "<end_of_utterance>")]  # the real tag is one special token


@pytest.mark.parametrize("name", sorted(set(FAMILIES) - {"gemma3"}))
def test_reference_prompts_through_the_real_processor_align_query_and_answer(name):
    if FAMILIES[name].missing():
        pytest.skip(f"{name}'s processor needs {', '.join(FAMILIES[name].missing())}, not installed")
    lm = tiny_family(name)
    lm = replace(lm, prompt_format=preset_format("reference", lm.adapter.name, lm.adapter.prompt_format))
    data, icd = tiny_task("vqa", n_train=3, n_support=6, seed=1)
    qids = sorted(icd["train"])
    t_in = teacher_batch(lm, data, "train", qids, [icd["train"][q][0] for q in qids])
    s_in, labels, answer_lengths = student_batch(lm, data, "train", qids)
    text = lm.processor.tokenizer.decode(t_in["input_ids"][0][t_in["attention_mask"][0].bool()])
    assert text.count("Instruction: Provide an answer") == 1 and "Answer:" in text  # the teacher's instruction
    assert instruction_tokens(lm, "vqa") == []  # the student (the query round alone) has none
    assert len(instruction_tokens(lm, "vqa", role="trained")) > 10  # a trained method's evaluation prompt has it
    lengths = aligned_lengths(t_in, s_in, lm.processor.tokenizer.bos_token_id, instruction_tokens(lm, "vqa"),
                              lm.processor.tokenizer)
    bos = lm.processor.tokenizer.bos_token_id
    for i, n in enumerate(lengths):
        student = s_in["input_ids"][i][s_in["attention_mask"][i].bool()].tolist()
        start = int(bos is not None and student[0] == bos)
        # all but the BOS: the query and answer; where the student's first word is tokenized at the start of the
        # text (a word-start marker) and the teacher's after a line break, all but that first token
        assert n in (len(student) - start, len(student) - start - 1)
        assert "Question:" in lm.processor.tokenizer.decode(student[-n:])
        assert torch.equal(t_in["input_ids"][i, -n:], s_in["input_ids"][i, -n:])
        answer = lm.processor.tokenizer(" " + data.target("train", qids[i]) + lm.prompt_format.separator,
                                        add_special_tokens=False)["input_ids"]
        assert labels[i, -answer_lengths[i]:].tolist()[-len(answer):] == answer[-answer_lengths[i]:]


def test_reference_stop_words_and_presets():
    stops = REFERENCE_FORMATS["idefics"].stops("vqa")
    assert postprocess(" yes\nImage: no", stops) == "yes"
    assert postprocess("two Short answer: 2", stops) == "two"
    assert postprocess("a dog <end", REFERENCE_FORMATS["idefics"].stops("caption")) == "a dog"
    assert postprocess("a dog <end", PromptFormat().stops("caption")) == "a dog <end"
    assert preset_format("clean", "llava", PromptFormat(separator="")).separator == ""
    assert preset_format("reference", "llava", PromptFormat()) is REFERENCE_FORMATS["idefics"]
    with pytest.raises(ValueError, match="prompt preset 'paper' is not valid"):
        preset_format("paper", "idefics2", PromptFormat())
    with pytest.raises(ValueError, match="no 'reference' prompt preset for model family 'gemma3'"):
        preset_format("reference", "gemma3", PromptFormat())


def test_load_model_applies_the_preset_and_processor_settings(tmp_path):
    from mimic.models.loading import load_model

    lm = tiny_family("idefics2")
    lm.model.save_pretrained(tmp_path)
    lm.processor.save_pretrained(tmp_path)
    loaded = load_model("m", str(tmp_path), "float32", "cpu", prompt="reference",
                        processor_kwargs={"do_image_splitting": True})
    assert loaded.prompt_format is REFERENCE_FORMATS["idefics2"]
    assert loaded.processor.image_processor.do_image_splitting is True
    assert load_model("m", str(tmp_path), "float32", "cpu").prompt_format == lm.adapter.prompt_format


def _row(ids: list[int], width: int) -> dict:
    pad = width - len(ids)
    return {"input_ids": torch.tensor([[0] * pad + ids]), "attention_mask": torch.tensor([[0] * pad + [1] * len(ids)])}


class Tokens:
    """A tokenizer's convert_ids_to_tokens for the ids below."""

    names = {1: "<s>", 7: "▁a", 8: "▁b", 9: "\n", 11: "▁Question", 12: ":", 13: "▁red", 50: "▁Image", 51: "Image",
             52: "\n\n", 53: "\n\n\n", 54: "▁"}

    def convert_ids_to_tokens(self, ids):
        return [self.names[i] for i in ids]


def test_aligned_lengths_tolerate_only_a_first_word_without_its_marker():
    bos, tok = 1, Tokens()
    student = [bos, 50, 11, 12, 13]  # the query's first word at the start of the text: "▁Image"
    teacher = [bos, 7, 8, 9, 51, 11, 12, 13]  # demonstrations, then the same word after a line break: "Image"
    assert aligned_lengths(_row(teacher, 8), _row(student, 8), bos, tokenizer=tok) == [3]
    assert aligned_lengths(_row([bos, 7, 50, 11, 12, 13], 8), _row(student, 8), bos, tokenizer=tok) == [4]
    # the marker alone ("▁" then "Image": no "▁Image" in the vocabulary); the teacher's line break in its place
    assert aligned_lengths(_row([bos, 7, 9, 51, 12, 13], 8), _row([bos, 54, 51, 12, 13], 8), bos,
                           tokenizer=tok) == [3]
    with pytest.raises(ValueError, match=r"common suffix 3 of 4 query tokens"):  # without the tokenizer: refused
        aligned_lengths(_row(teacher, 8), _row(student, 8), bos)
    merged = ([bos, 7, 53, 11, 12, 13], [bos, 52, 11, 12, 13])  # "\n" + "\n\n" merged into one token: refused
    with pytest.raises(ValueError, match=r"common suffix 3 of 4 query tokens"):
        aligned_lengths(_row(merged[0], 8), _row(merged[1], 8), bos, tokenizer=tok)
    with pytest.raises(ValueError, match=r"common suffix 2 of 4 query tokens"):  # two differ: refused
        aligned_lengths(_row([bos, 7, 8, 51, 7, 12, 13], 8), _row(student, 8), bos, tokenizer=tok)
