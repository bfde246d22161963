"""From episodes to token batches: what the learner trains on.

A :class:`Sample` is one turn of a trained policy: the prompt ids and the
completion ids exactly as sampled, the sampler's logprobs, and the advantage
its seat earned. Prompts, other players' text and padding never enter the
loss: the mask is 1 only on the completion tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from arena.trainers.losses import entropy_from_logits, token_logprobs


@dataclass
class Sample:
    prompt_ids: list[int]
    completion_ids: list[int]
    old_logprobs: list[float]
    advantage: float
    episode_id: str = ""
    player: str = ""
    #: per completion token, an importance weight (off-policy samples); None = 1
    weights: list[float] | None = None


@dataclass
class TokenBatch:
    """Right-padded sequences. ``input_ids``/``attention_mask``: [B, L]; ``targets``,
    ``mask``, ``old_logprobs``: [B, L-1], aligned so that position t holds the
    token at t+1 and the logits that predicted it; ``advantages``: [B]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    old_logprobs: torch.Tensor
    advantages: torch.Tensor
    #: [B, L-1] per-token importance weights where the samples carry them, else None
    weights: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum())


def collate(samples: list[Sample], pad_id: int, max_len: int = 2048) -> TokenBatch:
    """Pack samples into one batch; prompts longer than the budget lose their start."""
    seqs, starts = [], []
    for s in samples:
        completion = list(s.completion_ids)[:max_len]
        prompt = list(s.prompt_ids)[-(max_len - len(completion)) :] if max_len > len(completion) else []
        if not prompt:  # a completion needs at least one token before it to be predicted from
            prompt, completion = completion[:1], completion[1:]
        seqs.append(prompt + completion)
        starts.append(len(prompt))
    B, L = len(seqs), max(map(len, seqs))
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    attention = torch.zeros((B, L), dtype=torch.long)
    mask = torch.zeros((B, L - 1), dtype=torch.float32)
    old = torch.zeros((B, L - 1), dtype=torch.float32)
    weighted = any(s.weights is not None for s in samples)
    weights = torch.zeros((B, L - 1), dtype=torch.float32) if weighted else None
    for i, (seq, start, s) in enumerate(zip(seqs, starts, samples)):
        n = len(seq)
        input_ids[i, :n] = torch.tensor(seq, dtype=torch.long)
        attention[i, :n] = 1
        k = n - start  # completion tokens kept
        mask[i, start - 1 : n - 1] = 1.0
        old[i, start - 1 : n - 1] = torch.tensor(list(s.old_logprobs)[-k:] if k else [], dtype=torch.float32)
        if weights is not None:
            w = list(s.weights)[-k:] if s.weights is not None else [1.0] * len(s.completion_ids)
            weights[i, start - 1 : n - 1] = torch.tensor(w[-k:] if k else [], dtype=torch.float32)
    return TokenBatch(
        input_ids=input_ids,
        attention_mask=attention,
        targets=input_ids[:, 1:].clone(),
        mask=mask,
        old_logprobs=old,
        advantages=torch.tensor([s.advantage for s in samples], dtype=torch.float32),
        weights=weights,
    )


def forward_logprobs(model, batch: TokenBatch, *, with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities of the batch's targets under ``model`` ([B, L-1]) and, if asked, the entropy per position."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits[:, :-1]
    logp = token_logprobs(logits, batch.targets)
    ent = entropy_from_logits(logits.detach()) if with_entropy else None
    return logp, ent
