"""Token ids and pixels of interleaved episodes, with a mask over the supervised answers.

Produces exactly what ``Idefics2Processor`` produces for the same prompt (checked in the
tests), but tokenizes piece by piece so the answer tokens can be marked for the loss.
"""

from __future__ import annotations

import numpy as np
import torch

from mimic.data import synthetic as syn
from mimic.models.prompts import PromptFormat, query_text
from mimic.tiny.mini.episodes import Episode

FAKE, IMAGE = "<fake_token_around_image>", "<image>"


class EpisodeCollator:
    def __init__(self, tokenizer, image_seq_len: int, fmt: PromptFormat | None = None):
        self.tok = tokenizer
        self.fmt = fmt or PromptFormat()
        self.image_block = [tokenizer.convert_tokens_to_ids(FAKE)] + [
            tokenizer.convert_tokens_to_ids(IMAGE)
        ] * image_seq_len + [tokenizer.convert_tokens_to_ids(FAKE)]
        self._cache: dict[str, list[int]] = {}

    def _ids(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = self.tok(text, add_special_tokens=False)["input_ids"]
        return self._cache[text]

    def encode(self, episode: Episode) -> tuple[list[int], list[int], list[syn.Scene]]:
        """Token ids, the loss mask and the scenes (in order) of one episode.

        The answer is tokenized word by word so that each word's tokens can be masked: a word in
        ``turn.unknown`` (a made-up name nothing in the context determines) is never supervised.
        """
        ids, labels_mask = [self.tok.bos_token_id], [0]
        text = episode.kind == "text"
        for turn in episode.turns:
            image = self.image_block if turn.scene is not None else []
            prompt = image + ([] if text else self._ids(query_text(episode.kind, turn.question, self.fmt)))
            ids += prompt
            labels_mask += [0] * len(prompt)
            for i, w in enumerate(turn.answer.split(" ")):
                piece = self._ids((self.fmt.answer_prefix if i == 0 else " ") + w)
                ids += piece
                labels_mask += [int(turn.supervised and w not in turn.unknown)] * len(piece)
            end = [] if text else self._ids(self.fmt.separator)
            ids += end
            labels_mask += [int(turn.supervised)] * len(end)
        return ids, labels_mask, [t.scene for t in episode.turns if t.scene is not None]

    def __call__(self, episodes: list[Episode]) -> dict[str, torch.Tensor]:
        encoded = [self.encode(e) for e in episodes]
        length = max(len(ids) for ids, _, _ in encoded)
        n_img = max(len(scenes) for _, _, scenes in encoded)
        b, side = len(episodes), syn.IMAGE_SIZE
        input_ids = torch.full((b, length), self.tok.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros(b, length, dtype=torch.long)
        labels = torch.full((b, length), -100, dtype=torch.long)
        pixel_values = torch.zeros(b, n_img, 3, side, side)
        pixel_attention_mask = torch.zeros(b, n_img, side, side, dtype=torch.long)
        for i, (ids, mask, scenes) in enumerate(encoded):
            pad = length - len(ids)
            t = torch.tensor(ids)
            input_ids[i, pad:] = t
            attention_mask[i, pad:] = 1
            m = torch.tensor(mask, dtype=torch.bool)
            labels[i, pad:][m] = t[m]
            for j, scene in enumerate(scenes):
                pixel_values[i, j] = pixels(syn.render(scene))
                pixel_attention_mask[i, j] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if n_img:  # a batch of text-only episodes has no images at all
            batch.update(pixel_values=pixel_values, pixel_attention_mask=pixel_attention_mask)
        return batch


def pixels(image) -> torch.Tensor:
    """The Idefics2 image processor's normalisation for an image already at the model's size."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy((array - 0.5) / 0.5).permute(2, 0, 1)
