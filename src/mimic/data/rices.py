"""RICES: retrieve in-context demonstrations by image similarity (Yang et al., 2022; Alayrac et al., 2022).

A query's demonstrations are the support records whose images are nearest to the query's
by cosine similarity of a pooled image embedding (``icd.embedding`` in params.yaml):

- a key of ``models``: that model's own vision tower followed by its connector (Idefics2's
  perceiver), mean-pooled over the visual tokens (offline, e.g. the miniature model);
- otherwise a transformers CLIP checkpoint (hub id or directory), ``get_image_features``:
  the paper's RICES (CLIP image features).

    support = embed_images(loaded, support_images)
    queries = embed_images(loaded, query_images)
    ids = nearest(queries, support, k=4)                   # [n_queries, 4] support indices
    precision_at_k(ids, query_labels, support_labels)      # share of neighbours with the query's label
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def embed_images(loaded, images: Sequence, batch_size: int = 64) -> torch.Tensor:
    """``[n, d]`` float32 embeddings of PIL ``images``: vision tower + connector, mean over visual tokens."""
    model = loaded.model
    if not hasattr(model, "get_image_features"):
        raise ValueError(f"model {loaded.name!r} ({type(model).__name__}) has no get_image_features(); "
                         "RICES needs a vision tower")
    image_processor = getattr(loaded.processor, "image_processor", None)
    if image_processor is None:
        raise ValueError(f"model {loaded.name!r}: its processor has no image_processor")
    out = []
    for start in range(0, len(images), batch_size):
        chunk = [[image] for image in images[start : start + batch_size]]  # one image per row
        pixels = image_processor(chunk, return_tensors="pt")
        inputs = {k: v.to(loaded.device) for k, v in pixels.items() if k in ("pixel_values", "pixel_attention_mask")}
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        features = model.get_image_features(**inputs)
        pooled = getattr(features, "pooler_output", features)
        if isinstance(pooled, list | tuple):  # one [tokens, d] tensor per row
            pooled = torch.stack([p.float().mean(0) for p in pooled])
        else:  # [rows, tokens, d]
            pooled = pooled.float().reshape(len(chunk), -1, pooled.shape[-1]).mean(1)
        out.append(pooled.cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


@torch.no_grad()
def embed_images_clip(source: str, images: Sequence, batch_size: int = 64, device: str | None = None) -> torch.Tensor:
    """``[n, d]`` CLIP image features (``CLIPModel.get_image_features``) of PIL ``images``."""
    from transformers import AutoProcessor, CLIPModel

    model = CLIPModel.from_pretrained(source).eval()
    if device:
        model.to(device)
    processor = AutoProcessor.from_pretrained(source)
    out = []
    for start in range(0, len(images), batch_size):
        pixels = processor(images=list(images[start : start + batch_size]), return_tensors="pt")["pixel_values"]
        features = model.get_image_features(pixel_values=pixels.to(model.device))
        out.append(getattr(features, "pooler_output", features).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


def nearest(query_emb: torch.Tensor, support_emb: torch.Tensor, k: int,
            exclude: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
    """``[n_queries, k]`` indices of the ``k`` support rows most cosine-similar to each query, nearest first.

    ``exclude[i]`` lists support indices query ``i`` must not get (itself, a record with the same
    image). Ties go to the lower index, so the result is deterministic.
    """
    if query_emb.ndim != 2 or support_emb.ndim != 2 or query_emb.shape[1] != support_emb.shape[1]:
        raise ValueError(f"embeddings must be [n, d] with the same d; got {tuple(query_emb.shape)} and "
                         f"{tuple(support_emb.shape)}")
    usable = support_emb.shape[0] - max((len(set(e)) for e in exclude), default=0) if exclude else support_emb.shape[0]
    if not 1 <= k <= usable:
        raise ValueError(f"k = {k}; the support has {usable} usable rows per query")
    q = torch.nn.functional.normalize(query_emb.double(), dim=1)
    s = torch.nn.functional.normalize(support_emb.double(), dim=1)
    sims = q @ s.T
    if exclude:
        for i, banned in enumerate(exclude):
            sims[i, list(banned)] = float("-inf")
    # stable sort on -similarity: equal similarities keep index order
    return torch.sort(-sims, dim=1, stable=True).indices[:, :k]


def precision_at_k(neighbours: torch.Tensor, query_labels: Sequence, support_labels: Sequence) -> float:
    """% of all retrieved neighbours whose label equals their query's (e.g. the same colour)."""
    hits = total = 0
    for i, row in enumerate(neighbours.tolist()):
        hits += sum(support_labels[j] == query_labels[i] for j in row)
        total += len(row)
    return 100.0 * hits / max(1, total)
