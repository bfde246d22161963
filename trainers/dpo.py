"""Direct preference optimisation (Rafailov et al., 2023) on preference pairs, e.g. from game trees.

Read top to bottom: the loss as a pure function of per-sequence
log-probabilities, the sequence log-probabilities of completion tokens under a
model, one optimiser step on a batch of pairs, and the :class:`DPOLearner`
that a run's round loop calls like the policy-gradient learner.

With ``pi`` the trained policy, ``ref`` a frozen reference (the starting
weights), ``y_w`` the chosen and ``y_l`` the rejected completion of prompt
``x``, the implicit reward of a completion is ``beta * log(pi(y|x) / ref(y|x))``
and the loss is ``-log sigmoid(r(y_w) - r(y_l))``, averaged over pairs. Its
gradient raises the chosen completion's log-probability relative to the
rejected one's, weighted by how wrongly the implicit rewards currently order
them; ``beta`` sets how far from the reference the policy may move.

Pairs carry token ids exactly as sampled (:class:`arena.trainers.trees.PreferencePair`):
nothing is re-tokenised.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from arena.trainers.batching import Sample, collate, forward_logprobs
from arena.trainers.losses import masked_sum


class Pair(Protocol):
    """What a preference pair needs to hold (``PreferencePair`` does)."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> tuple[Tensor, Tensor]:
    """The DPO loss and each pair's implicit reward margin.

    Args:
        policy_chosen_logps: ``[B]``, sum of the chosen completion's token
            log-probabilities under the trained policy (differentiable).
        policy_rejected_logps: ``[B]``, the same for the rejected completion.
        ref_chosen_logps: ``[B]``, the chosen completion under the frozen
            reference (detached here).
        ref_rejected_logps: ``[B]``, the rejected completion under the reference.
        beta: > 0, the inverse temperature of the implicit reward.

    Returns:
        ``(loss, margins)``: ``loss`` is the scalar
        ``mean(-log sigmoid(margins))``; ``margins`` is ``[B]``, detached,
        ``beta * ((pi_w - ref_w) - (pi_l - ref_l))``: the chosen completion's
        implicit reward minus the rejected one's (0 when the policy equals the
        reference, where the loss is ``log 2``).
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    shape = policy_chosen_logps.shape
    if len(shape) != 1:
        raise ValueError(f"log-probabilities must be [B] (one per sequence), got shape {tuple(shape)}")
    for name, t in (("policy_rejected_logps", policy_rejected_logps), ("ref_chosen_logps", ref_chosen_logps), ("ref_rejected_logps", ref_rejected_logps)):
        if t.shape != shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} must equal policy_chosen_logps shape {tuple(shape)}")
    chosen = policy_chosen_logps - ref_chosen_logps.detach()
    rejected = policy_rejected_logps - ref_rejected_logps.detach()
    margins = beta * (chosen - rejected)
    loss = -F.logsigmoid(margins).mean()
    return loss, margins.detach()


def sequence_logprobs(model: Any, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *, pad_id: int = 0, max_len: int = 2048) -> Tensor:
    """Sum of each completion's token log-probabilities after its prompt: ``[B]``.

    Only completion tokens count (the prompt is context); a prompt longer than
    the budget loses its start, as in training batches (:func:`arena.trainers.batching.collate`).
    Carries gradients unless called under ``torch.no_grad()``.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
    if any(len(c) == 0 for c in completions):
        raise ValueError("every completion needs at least one token")
    samples = [Sample(list(p), list(c), [0.0] * len(c), 0.0) for p, c in zip(prompts, completions)]
    batch = collate(samples, pad_id, max_len)
    device = next(model.parameters()).device
    batch.input_ids, batch.attention_mask, batch.targets = (x.to(device) for x in (batch.input_ids, batch.attention_mask, batch.targets))
    logp, _ = forward_logprobs(model, batch)
    return masked_sum(logp, batch.mask.to(device), dim=-1)


def pair_logprobs(model: Any, pairs: Sequence[Pair], *, pad_id: int = 0, max_len: int = 2048) -> tuple[Tensor, Tensor]:
    """``(chosen [B], rejected [B])`` sequence log-probabilities, both halves in one forward pass."""
    prompts = [p.prompt_ids for p in pairs] * 2
    completions = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    both = sequence_logprobs(model, prompts, completions, pad_id=pad_id, max_len=max_len)
    return both[: len(pairs)], both[len(pairs) :]


def dpo_step(
    model: Any,
    ref_model: Any,
    pairs: Sequence[Pair],
    optimizer: torch.optim.Optimizer,
    beta: float,
    *,
    pad_id: int = 0,
    max_len: int = 2048,
    max_grad_norm: float = 1.0,
) -> dict[str, float]:
    """One optimiser step of DPO on ``pairs``; returns the step's statistics.

    Stats: ``dpo_loss``, ``reward_margin`` (mean implicit reward margin before
    the step), ``reward_accuracy`` (fraction of pairs with a positive margin),
    ``chosen_reward`` and ``rejected_reward`` (mean implicit rewards),
    ``grad_norm`` (before clipping) and ``pairs``.
    """
    if not pairs:
        raise ValueError("dpo_step needs at least one pair")
    with torch.no_grad():
        ref_chosen, ref_rejected = pair_logprobs(ref_model, pairs, pad_id=pad_id, max_len=max_len)
    model.train()
    chosen, rejected = pair_logprobs(model, pairs, pad_id=pad_id, max_len=max_len)
    loss, margins = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    model.eval()
    return {
        "dpo_loss": float(loss.detach()),
        "reward_margin": float(margins.mean()),
        "reward_accuracy": float((margins > 0).float().mean()),
        "chosen_reward": float(beta * (chosen.detach() - ref_chosen).mean()),
        "rejected_reward": float(beta * (rejected.detach() - ref_rejected).mean()),
        "grad_norm": float(grad_norm),
        "pairs": float(len(pairs)),
    }


class DPOLearner:
    """One trainable policy learning from preference pairs: its model, optimizer and a frozen
    reference copy of its starting weights. Same surface as the policy-gradient ``Learner``
    (``model``, ``optimizer``, ``version``, ``learn``), so runs sync, checkpoint and resume it alike."""

    def __init__(self, model: Any, cfg: Any, pad_id: int, max_len: int = 2048):
        self.model = model
        self.cfg = cfg
        self.pad_id = pad_id
        self.max_len = max_len
        self.version = 0
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.reference = copy.deepcopy(model).eval()
        for p in self.reference.parameters():
            p.requires_grad_(False)

    def learn(self, pairs: Sequence[Pair], generator: torch.Generator) -> dict[str, float]:
        """``cfg.epochs`` passes over the pairs in shuffled batches of ``cfg.batch_size``; bumps ``version``
        when the weights changed. Pairs without tokens (a policy that is not a model) are skipped."""
        usable = [p for p in pairs if p.prompt_ids and p.chosen_ids and p.rejected_ids]
        if not usable:
            return {"pairs": 0.0}
        cfg = self.cfg
        started, values = time.perf_counter(), []
        for _ in range(cfg.epochs):
            order = torch.randperm(len(usable), generator=generator).tolist()
            for i in range(0, len(order), cfg.batch_size):
                batch = [usable[j] for j in order[i : i + cfg.batch_size]]
                values.append(
                    dpo_step(
                        self.model,
                        self.reference,
                        batch,
                        self.optimizer,
                        cfg.dpo_beta,
                        pad_id=self.pad_id,
                        max_len=self.max_len,
                        max_grad_norm=cfg.max_grad_norm,
                    )
                )
        self.version += 1
        out = {k: float(np.mean([v[k] for v in values])) for k in values[0] if k != "pairs"}
        labels = Counter(getattr(p, "label", "other") for p in usable)
        out.update(pairs=float(len(usable)), steps=float(len(values)), learn_s=time.perf_counter() - started)
        out.update({f"pairs_{k}": float(v) for k, v in labels.items()})
        return out
