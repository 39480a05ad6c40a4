"""MTV (Huang et al., NeurIPS 2024, "Multimodal Task Vectors Enable Many-Shot Multimodal In-Context
Learning", arXiv 2406.15334; reference code Brandon3964/MultiModal-Task-Vector, ``MTV/mtv_utils.py``).

Mean head activations over many shots, written into the heads that an optimisation chose, at the
last position. Fit (no gradient into the model), through the attention interface:

1. Mean activations (paper, Step 1): ``T`` ICL prompts of ``N`` shots each run through the frozen
   model; every head's output (before ``o_proj``) at the last token is averaged over them::

       mu[l, j] = 1/T  sum_t  E[z[l, j] | I_t]   (z at the last token)              (Step 1)

   (:func:`mimic.methods.function_vector.mean_head_outputs`, shared with Function Vector).
2. Head locations (Step 2, the paper's adapted REINFORCE): a Bernoulli variable per
   candidate head, ``p = sigmoid(theta).clamp(eps, 1 - eps)``, ``theta = -1`` at the start. Each
   step draws one zero-shot training query and ``S`` masks ``x_s ~ Bernoulli(p)``; ``loss_s`` is
   the cross-entropy of the query's first answer token when the heads of ``x_s`` are set to ``mu``
   at the last position; with the rewards normalised, ``R_s = (loss_s - mean) / (std + eps)``,
   Adam (lr 0.1) takes a step down::

       J(theta) = sum_s R_s * log P(x_s | theta),   dJ/dtheta = sum_s R_s (x_s - p)   (Step 2)

   so the masks that lowered the loss become likelier. After ``steps`` steps, ``best_of`` masks
   are drawn from ``sigmoid(theta)`` and the one with the lowest mean first-token loss on the
   held-out training queries is kept: ``lambda``, the MTV's head locations.
3. Inference (Step 3): at the last position of every forward pass, the heads of ``lambda`` output
   ``mu[l, j]`` instead of their own activation (the other heads and positions are untouched).
   As the reference's generation hook does, this holds for the prompt's last token and for each
   generated token (each decoding step's only position).

The stored copy of the paper held its abstract and introduction only: the formulas above are its
three steps as the reference code computes them (equation numbers not checked against the paper).
Defaults are the reference code's (``mtv_eval.py``, ``reinforce``, the eval scripts): ``T = 100``
iterations, 600 REINFORCE steps, Adam lr 0.1, 32 masks a step, ``eps = 1e-3``, best of 10 draws.

Fitted numbers: ``selected heads x head_dim`` (the means of the chosen heads; the heads are in the
config); trained: 0.

Deviations (also in docs/deviations.md):
- the prompts: ``N`` = the task's sampled demonstrations (``icd.shots``, or the first ``shots`` of
  them), the query of each prompt a fit query; ``T`` walks the fit queries, then their further
  draws (the reference samples ``N + 1`` random training examples per iteration, 4 or 16 shots);
- REINFORCE queries: every fit query (the reference: 100 random training examples); the final
  best-of draw is scored on the held-out queries (``fit.dev_fraction``; the reference: the first 50
  training examples, which overlap those it fitted on);
- the ``S`` masks of a step run as one batch (the reference: one forward each); the draws come from
  a generator seeded by ``fit.seed``;
- the reference's Idefics2-only cut of probabilities under 0.8 before the final draw is left out;
- heads that no draw selects: if the best draw is empty, nothing is written (the model is zero-shot).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from mimic.methods.base import Installed, Method, register
from mimic.methods.vectors import split_dev
from mimic.models.adapters import ModelShapes, complete_for

FIT_DEFAULTS = {"batch_size": 16, "dev_fraction": 0.25, "seed": 0}
EPS = 1e-3  # the reference's clamp of the Bernoulli probabilities and of the reward's std
THETA_INIT = -1.0  # the reference's initial logits: p = sigmoid(-1) = 0.27


@dataclass
class MtvConfig(ModelShapes):
    """iterations: ``T`` ICL prompts averaged (None: every fit query's every draw); shots: ``N``
    demonstrations per prompt (None: all the sampled ones); steps / lr / samples: REINFORCE's steps,
    Adam lr and masks a step; best_of: final draws compared on the held-out queries; layers: the
    candidate layers (None: all); heads: the chosen (layer, head) pairs, set by the fit."""

    iterations: int | None = 100
    shots: int | None = None
    steps: int = 600
    lr: float = 0.1
    samples: int = 32
    best_of: int = 10
    layers: list[int] | None = None
    heads: list[list[int]] | None = None

    def __post_init__(self) -> None:
        for key, low in (("iterations", 1), ("shots", 1), ("steps", 0), ("samples", 2), ("best_of", 1)):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < low):
                raise ValueError(f"MtvConfig.{key} = {value!r}: must be an integer >= {low}")
        if not self.lr > 0:
            raise ValueError(f"MtvConfig.lr = {self.lr!r}: must be > 0")


class MtvShift(nn.Module):
    """``means`` [K, d] (a fitted buffer): the mean output of each head of ``config.heads``, written
    into that head at the last position of every forward pass (the attention hook's ``edit``).

    ``select`` [b, K] (None: all): which rows of the batch get which heads (REINFORCE's masks).
    """

    def __init__(self, config: MtvConfig):
        super().__init__()
        self.config = config
        heads = [tuple(map(int, h)) for h in config.heads or []]
        self.layers = sorted({layer for layer, _ in heads})
        self.by_row = [[(k, h) for k, (layer, h) in enumerate(heads) if layer == row_layer]
                       for row_layer in self.layers]
        self.register_buffer("means", torch.zeros(len(heads), config.head_dim))
        self.select: torch.Tensor | None = None

    def edit(self, row: int, out: torch.Tensor) -> torch.Tensor:
        """``out`` [b, q, H, d] of layer ``self.layers[row]`` with its heads set at the last position."""
        out = out.clone()
        for k, head in self.by_row[row]:
            value = self.means[k].to(out.device, out.dtype)
            if self.select is None:
                out[:, -1, head] = value
            else:
                rows = self.select[:, k].to(out.device)
                out[rows, -1, head] = value
        return out


class Mtv(Method):
    type = "mtv"
    config_class = MtvConfig

    def complete(self, config: MtvConfig, model) -> MtvConfig:
        config = complete_for(config, model)
        bad = [h for h in config.heads or [] if not (0 <= h[0] < config.num_layers and 0 <= h[1] < config.num_heads)]
        if bad:
            raise ValueError(f"MtvConfig.heads {bad} out of range: the model has {config.num_layers} layers x "
                             f"{config.num_heads} heads")
        return config

    def install(self, model, config: MtvConfig, module, verify: bool):
        from mimic.shift import install as shift_install

        if config.heads is None:
            raise ValueError("MtvConfig.heads is not set: fit MTV first (mimic train)")
        shift = module if module is not None else MtvShift(config)
        shift.config = config
        shift.to(next(model.parameters()).device)
        if not shift.layers:  # the fit chose no head: nothing to write
            return shift, Installed()
        shift_install.install(model, shift, shift.layers, "attn", verify)
        return shift, Installed(undo=[lambda: shift_install.uninstall(model)],
                                switches=[lambda: shift_install.switched_off(model)])

    def counts(self, config: MtvConfig) -> dict[str, int]:
        return {"trainable": 0, "fitted": len(config.heads or []) * config.head_dim}

    def fit(self, loaded, data, icd: dict, config: MtvConfig, hp: dict):
        from mimic.methods.function_vector import mean_head_outputs
        from mimic.shift.install import installed

        hp = {**FIT_DEFAULTS, **hp}
        config = self.complete(config, loaded.model)
        fit_ids, dev_ids = split_dev(sorted(icd["train"]), hp["dev_fraction"], hp["seed"])
        qids, draws = iteration_prompts(fit_ids, icd["draws"], config.iterations)
        means = mean_head_outputs(loaded, data, icd, qids, config, hp["batch_size"], draws, config.shots)
        candidates = [[layer, head] for layer in config.layers for head in range(config.num_heads)]
        probe = MtvShift(replace(config, heads=candidates))
        probe.means.copy_(torch.stack([means[layer, head] for layer, head in candidates]))
        generator = torch.Generator().manual_seed(hp["seed"])
        with installed(loaded.model, probe, probe.layers, verify=False):
            queries, targets = random.Random(hp["seed"]), {}
            theta, trace = reinforce(
                lambda masks: _first_token_losses(loaded, data, [queries.choice(fit_ids)] * len(masks), masks, probe,
                                                  hp["batch_size"], targets),
                len(candidates), config.steps, config.lr, config.samples, generator)
            def dev_loss(mask: torch.Tensor) -> float:
                return _first_token_losses(loaded, data, dev_ids, mask.expand(len(dev_ids), -1), probe,
                                           hp["batch_size"], targets).mean().item()

            best, draws_losses = best_draw(theta, dev_loss, config.best_of, generator)
            zero_shot = dev_loss(torch.zeros(1, len(candidates), dtype=torch.bool))
        heads = [candidates[i] for i in torch.nonzero(best).flatten().tolist()]
        config = replace(config, heads=heads, extra={**config.extra, "dev_loss_by_draw": draws_losses})
        module = MtvShift(config)
        if heads:
            module.means.copy_(torch.stack([means[layer, head] for layer, head in heads]))
        summary = {"fit_queries": len(fit_ids), "dev_queries": len(dev_ids), "iterations": len(qids),
                   "heads": heads, "candidate_heads": len(candidates),
                   "reinforce_loss_first_last_10": [round(sum(t) / len(t), 6) for t in (trace[:10], trace[-10:]) if t],
                   "dev_loss_by_draw": [round(v, 6) for v in draws_losses], "dev_loss_zero_shot": round(zero_shot, 6)}
        return module, summary


def iteration_prompts(fit_ids: list[str], n_draws: int, iterations: int | None) -> tuple[list[str], list[int]]:
    """The ``T`` ICL prompts of Eq. 1 as (query, draw) pairs: every fit query with draw 0, then with draw 1, ..."""
    available = len(fit_ids) * n_draws
    if iterations is None:
        iterations = available
    if iterations > available:
        raise ValueError(f"MtvConfig.iterations = {iterations}: only {available} ICL prompts exist ({len(fit_ids)} fit "
                         f"queries x {n_draws} draws of icd); lower it or raise the task's n_train / icd.draws")
    pairs = [(q, d) for d in range(n_draws) for q in fit_ids][:iterations]
    return [q for q, _ in pairs], [d for _, d in pairs]


def reinforce(losses: Callable[[torch.Tensor], torch.Tensor], n: int, steps: int, lr: float, samples: int,
              generator: torch.Generator) -> tuple[torch.Tensor, list[float]]:
    """The logits ``theta`` [n] of the heads' Bernoulli variables after ``steps`` REINFORCE steps (Adam,
    ``lr``), and each step's mean loss. ``losses(masks)`` [samples] scores masks [samples, n] (bool)."""
    theta = torch.full((n,), THETA_INIT, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=lr)
    trace = []
    for _ in range(steps):
        with torch.enable_grad():
            p = torch.sigmoid(theta).clamp(EPS, 1 - EPS)
            masks = torch.bernoulli(p.detach().expand(samples, n), generator=generator)
            with torch.no_grad():
                loss = losses(masks.bool()).double().cpu()
            objective = policy_objective(p, masks, loss)
            optimizer.zero_grad()
            objective.backward()
            optimizer.step()
        trace.append(loss.mean().item())
    return theta.detach(), trace


def policy_objective(p: torch.Tensor, masks: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    """``sum_s R_s log P(x_s)`` with ``R_s`` the losses normalised over the samples (the reference's rewards)."""
    reward = (loss - loss.mean()) / (loss.std() + EPS)
    log_prob = torch.distributions.Bernoulli(probs=p).log_prob(masks).sum(dim=-1)  # [samples]
    return (log_prob * reward.to(log_prob.dtype)).sum()


def best_draw(theta: torch.Tensor, loss: Callable[[torch.Tensor], float], best_of: int,
              generator: torch.Generator) -> tuple[torch.Tensor, list[float]]:
    """Of ``best_of`` masks drawn from ``sigmoid(theta)``, the one with the lowest ``loss(mask)`` (the first of
    equals), and every draw's loss."""
    p = torch.sigmoid(theta)
    draws = [torch.bernoulli(p, generator=generator).bool() for _ in range(best_of)]
    scores = [loss(mask[None]) for mask in draws]
    return draws[min(range(best_of), key=lambda i: scores[i])], scores


@torch.no_grad()
def _first_token_losses(loaded, data, qids: list[str], masks: torch.Tensor, probe: MtvShift,
                        batch_size: int, targets: dict[str, int]) -> torch.Tensor:
    """Per row, the cross-entropy of ``qids[i]``'s first answer token after its zero-shot prompt, with the
    heads of ``masks[i]`` set to their means at the last position. ``targets``: the first answer tokens
    met so far, by query (filled in here)."""
    from mimic.methods.function_vector import first_answer_tokens
    from mimic.models.generation import encode_prompts

    out = []
    try:
        for start in range(0, len(qids), batch_size):
            chunk = qids[start : start + batch_size]
            probe.select = masks[start : start + batch_size]
            inputs = encode_prompts(loaded, data.kind, [data.query("train", q) for q in chunk], role="student")
            missing = [q for q in dict.fromkeys(chunk) if q not in targets]
            if missing:
                targets.update(zip(missing, first_answer_tokens(loaded, data, missing).tolist(), strict=True))
            target = torch.tensor([targets[q] for q in chunk], device=loaded.device)
            logits = loaded.model(**inputs, logits_to_keep=1).logits[:, -1].float()
            out.append(torch.nn.functional.cross_entropy(logits, target, reduction="none").cpu())
    finally:
        probe.select = None
    return torch.cat(out)


register(Mtv())
