"""Token-level policy-gradient losses, KL estimators and logit helpers.

Pure tensor maths in the style of verl's ``trainer/ppo/core_algos.py``.

Shapes (all over completion tokens, already aligned so position ``t`` of
``logprobs`` is the log-probability of token ``t``):

* ``logprobs [B, T]``: log pi_theta(token) under the policy being trained (carries grad).
* ``old_logprobs [B, T]``: log-probabilities recorded by the sampler (vLLM/HF engine).
* ``ref_logprobs [B, T]``: a frozen reference policy's log-probabilities.
* ``advantages [B]``: one advantage per sequence, broadcast over its tokens.
* ``mask [B, T]``: 1 on tokens the trained policy generated, 0 on prompt,
  padding, and environment or opponent text. Treated as binary (nonzero = 1).
  Masked-out positions never reach the loss, even if they hold inf or NaN.

The policy losses share one signature and are collected in :data:`LOSSES`;
KL estimators are in :data:`KL_ESTIMATORS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "KL_ESTIMATORS",
    "LOSSES",
    "Normalize",
    "entropy_from_logits",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "kl_penalty",
    "masked_mean",
    "masked_sum",
    "ppo_clip_loss",
    "reinforce_loss",
    "token_logprobs",
    "truncated_importance_weights",
]

Normalize = Literal["tokens", "sequences"]


# --------------------------------------------------------------------------- #
# Masked reductions
# --------------------------------------------------------------------------- #


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``x`` where ``mask`` is nonzero.

    Args:
        x: ``[B, T]`` (any shape equal to ``mask``'s).
        mask: same shape, 1 = counted.
        dim: reduce over this dim, or everything when None.

    Returns:
        Scalar, or ``x`` reduced over ``dim``. Positions outside the mask are
        replaced by 0 (not multiplied by 0), so an inf there cannot become NaN.
    """
    kept = torch.where(mask.bool(), x, torch.zeros_like(x))
    return kept.sum() if dim is None else kept.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over positions where ``mask`` is nonzero.

    Args:
        x: ``[B, T]`` (any shape equal to ``mask``'s).
        mask: same shape, 1 = counted.
        dim: reduce over this dim, or everything when None.

    Returns:
        Scalar, or ``x`` reduced over ``dim``. Where nothing is masked in, the
        mean is 0 (not NaN): an all-padding micro-batch then contributes no
        gradient instead of poisoning the step.
    """
    count = mask.bool().sum() if dim is None else mask.bool().sum(dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1).to(x.dtype)


def _aggregate(per_token: Tensor, mask: Tensor, normalize: Normalize) -> Tensor:
    """Reduce a ``[B, T]`` per-token loss to a scalar.

    ``"tokens"``: mean over all masked tokens of the batch (every generated
    token weighs the same, so long answers are not down-weighted; Dr. GRPO /
    DAPO's choice). ``"sequences"``: mean over each sequence's tokens, then
    over sequences that have at least one token (original GRPO; each episode
    weighs the same whatever its length).
    """
    if normalize == "tokens":
        return masked_mean(per_token, mask)
    if normalize == "sequences":
        per_seq = masked_mean(per_token, mask, dim=-1)
        has_tokens = mask.bool().any(dim=-1)
        return masked_mean(per_seq, has_tokens)
    raise ValueError(f"normalize must be 'tokens' or 'sequences', got {normalize!r}")


def _check_policy_inputs(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor) -> None:
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be [B, T], got shape {tuple(logprobs.shape)}")
    for name, t in (("old_logprobs", old_logprobs), ("mask", mask)):
        if t.shape != logprobs.shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} must equal logprobs shape {tuple(logprobs.shape)}")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must be [B] = [{logprobs.shape[0]}], got shape {tuple(advantages.shape)}")


def _weighted(per_token: Tensor, token_weights: Tensor | None) -> Tensor:
    if token_weights is None:
        return per_token
    if token_weights.shape != per_token.shape:
        raise ValueError(f"token_weights shape {tuple(token_weights.shape)} must equal logprobs shape {tuple(per_token.shape)}")
    return token_weights.detach() * per_token


@torch.no_grad()
def _sampler_stats(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> dict[str, float]:
    """Drift between the trained policy and the sampler that produced the tokens.

    ``approx_kl_to_sampler`` is the k3 estimator of KL(sampler || policy) with
    ``r = pi/pi_old``: ``(r - 1) - log r``, non-negative and unbiased under the
    sampler's tokens (CleanRL's ``approx_kl``).
    """
    log_ratio = logprobs.detach() - old_logprobs
    ratio = log_ratio.exp()
    return {
        "ratio_mean": float(masked_mean(ratio, mask)),
        "approx_kl_to_sampler": float(masked_mean((ratio - 1) - log_ratio, mask)),
        "num_tokens": float(mask.bool().sum()),
    }


# --------------------------------------------------------------------------- #
# Policy losses: (logprobs, old_logprobs, advantages, mask, *, clip_eps, normalize)
#                -> (loss scalar, stats)
# --------------------------------------------------------------------------- #


def reinforce_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps: float = 0.2,
    normalize: Normalize = "tokens",
    token_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """REINFORCE: ``-mean(w * A * log pi(token))`` over masked tokens (``w = 1`` on-policy).

    The gradient w.r.t. ``logprobs[b, t]`` is ``-A[b] * mask[b, t] / num_tokens``
    (``normalize="tokens"``). ``old_logprobs`` only feeds the stats (how far the
    policy has drifted from the sampler) and ``clip_eps`` is unused; both exist
    so every entry of :data:`LOSSES` has one signature.

    Args:
        logprobs: ``[B, T]``, differentiable.
        old_logprobs: ``[B, T]``, sampler log-probabilities (no grad needed).
        advantages: ``[B]``, detached here: they are constants of the update.
        mask: ``[B, T]``.
        clip_eps: unused.
        normalize: ``"tokens"`` (mean over all masked tokens of the batch) or
            ``"sequences"`` (per-sequence token mean, then mean over sequences).
        token_weights: ``[B, T]`` per-token importance weights, constants of the
            update (detached here): off-policy samples use
            :func:`truncated_importance_weights`. None = all 1.

    Returns:
        ``(loss, stats)``: scalar loss and floats ``loss``, ``ratio_mean``,
        ``approx_kl_to_sampler``, ``num_tokens``.
    """
    _check_policy_inputs(logprobs, old_logprobs, advantages, mask)
    per_token = _weighted(-advantages.detach().unsqueeze(-1) * logprobs, token_weights)
    loss = _aggregate(per_token, mask, normalize)
    stats = {"loss": float(loss.detach()), **_sampler_stats(logprobs, old_logprobs, mask)}
    return loss, stats


def ppo_clip_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps: float = 0.2,
    normalize: Normalize = "tokens",
    token_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped surrogate: ``-mean(min(r*A, clip(r, 1-eps, 1+eps)*A))``, ``r = exp(logprobs - old_logprobs)``.

    The ratio is against the sampler's log-probabilities, so this also
    corrects (within the clip range) for off-policy drift between the sampler
    and the trained weights, and for several optimiser steps per batch.

    Args:
        logprobs: ``[B, T]``, differentiable.
        old_logprobs: ``[B, T]``, sampler log-probabilities (detached here).
        advantages: ``[B]``, detached here.
        mask: ``[B, T]``.
        clip_eps: half-width of the trust region around ratio 1; must be > 0.
        normalize: as in :func:`reinforce_loss`.
        token_weights: ``[B, T]`` per-token weights on the surrogate (detached); None = all 1.
            Off-policy samples need none: the ratio is against the sampler already.

    Returns:
        ``(loss, stats)``: stats hold ``loss``, ``clip_fraction`` (fraction of
        masked tokens where the clipped term is the one in effect, i.e. whose
        gradient is zeroed; verl's ``pg_clipfrac``), ``ratio_mean``,
        ``approx_kl_to_sampler``, ``num_tokens``.
    """
    _check_policy_inputs(logprobs, old_logprobs, advantages, mask)
    if not clip_eps > 0:
        raise ValueError(f"clip_eps must be > 0, got {clip_eps}")
    adv = advantages.detach().unsqueeze(-1)
    ratio = (logprobs - old_logprobs.detach()).exp()
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv
    per_token = -torch.minimum(unclipped, clipped)
    per_token = _weighted(per_token, token_weights)
    loss = _aggregate(per_token, mask, normalize)
    clip_active = (clipped < unclipped).to(logprobs.dtype)
    stats = {
        "loss": float(loss.detach()),
        "clip_fraction": float(masked_mean(clip_active.detach(), mask)),
        **_sampler_stats(logprobs, old_logprobs, mask),
    }
    return loss, stats


@torch.no_grad()
def truncated_importance_weights(learner_logprobs: Tensor, behaviour_logprobs: Tensor, mask: Tensor, cap: float = 2.0) -> Tensor:
    """Truncated importance sampling (TIS) weights for tokens sampled by an older policy.

    ``w = min(pi_learner(token) / pi_behaviour(token), cap)``, computed as
    ``exp(min(learner - behaviour, log cap))`` so a huge ratio cannot overflow; 0 outside the mask.
    ``learner_logprobs`` are the learner's at the weights about to be stepped, ``behaviour_logprobs``
    the sampler's (recorded on every turn): the policy gradient at those weights, from tokens an
    older policy ``mu`` sampled, is ``E_mu[(pi/mu) A grad log pi]``. The cap bounds the variance an
    old sample can add; the bias it leaves is what Yao et al. (2025, "Your efficient RL framework
    secretly brings you off-policy RL training") accept for asynchronous and mismatched samplers.

    Args:
        learner_logprobs: ``[B, T]``.
        behaviour_logprobs: ``[B, T]``.
        mask: ``[B, T]``.
        cap: the largest weight; must be > 0.

    Returns:
        ``[B, T]`` float32 weights, detached.
    """
    if not cap > 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    if behaviour_logprobs.shape != learner_logprobs.shape or mask.shape != learner_logprobs.shape:
        raise ValueError(f"shapes must match: learner {tuple(learner_logprobs.shape)}, behaviour {tuple(behaviour_logprobs.shape)}, mask {tuple(mask.shape)}")
    log_ratio = (learner_logprobs.float() - behaviour_logprobs.float()).clamp(max=math.log(cap))
    return torch.where(mask.bool(), log_ratio.exp(), torch.zeros_like(log_ratio))


LOSSES: dict[str, Callable[..., tuple[Tensor, dict[str, float]]]] = {
    "reinforce": reinforce_loss,
    "ppo_clip": ppo_clip_loss,
}
"""Policy losses by config name; all share ``reinforce_loss``'s signature."""


# --------------------------------------------------------------------------- #
# KL to a frozen reference: per-token estimators of KL(pi || ref) under tokens from pi
# --------------------------------------------------------------------------- #


def kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """``log pi - log ref``: unbiased, but negative on some tokens and high-variance. ``[B, T] -> [B, T]``."""
    return logprobs - ref_logprobs


def kl_k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """``0.5 * (log pi - log ref)^2``: non-negative, low-variance, biased. ``[B, T] -> [B, T]``."""
    return 0.5 * (logprobs - ref_logprobs).square()


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Schulman's ``exp(ref - pi) - (ref - pi) - 1``: unbiased and non-negative. ``[B, T] -> [B, T]``.

    With ``r = ref/pi``, ``E_pi[r] = 1`` so ``E[r - 1 - log r] = E[-log r] = KL(pi || ref)``,
    and ``r - 1 >= log r`` makes every term ``>= 0``.
    """
    log_r = ref_logprobs - logprobs
    return log_r.exp() - log_r - 1.0


KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "k1": kl_k1,
    "k2": kl_k2,
    "k3": kl_k3,
}
"""Per-token KL estimators by name; each is ``(logprobs [B, T], ref_logprobs [B, T]) -> [B, T]``."""


def kl_penalty(
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    kind: Literal["k1", "k2", "k3"] = "k3",
) -> Tensor:
    """Per-token KL penalty to a frozen reference, zero outside the mask.

    Args:
        logprobs: ``[B, T]``, differentiable.
        ref_logprobs: ``[B, T]``, detached here (the reference is frozen).
        mask: ``[B, T]``.
        kind: a key of :data:`KL_ESTIMATORS`.

    Returns:
        ``[B, T]``; reduce with :func:`masked_mean` to add to the loss.
    """
    if kind not in KL_ESTIMATORS:
        raise ValueError(f"kind must be one of {sorted(KL_ESTIMATORS)}, got {kind!r}")
    if ref_logprobs.shape != logprobs.shape or mask.shape != logprobs.shape:
        raise ValueError(f"shapes must match: logprobs {tuple(logprobs.shape)}, ref_logprobs {tuple(ref_logprobs.shape)}, mask {tuple(mask.shape)}")
    kl = KL_ESTIMATORS[kind](logprobs, ref_logprobs.detach())
    return torch.where(mask.bool(), kl, torch.zeros_like(kl))


# --------------------------------------------------------------------------- #
# From logits
# --------------------------------------------------------------------------- #


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the next-token distribution at each position.

    Args:
        logits: ``[B, T, V]``, any float dtype; computed in float32 via
            ``log_softmax`` (no overflow for large logits). ``-inf`` logits
            (banned tokens) contribute 0, not NaN.

    Returns:
        ``[B, T]`` float32, in nats (``log V`` for a uniform distribution).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    # 0 * -inf is NaN; clamping -inf to the most negative float makes it 0 * finite = 0.
    return -(logp.exp() * logp.clamp(min=torch.finfo(logp.dtype).min)).sum(dim=-1)


def token_logprobs(logits: Tensor, targets: Tensor) -> Tensor:
    """Log-probability of each target token.

    Args:
        logits: ``[B, T, V]``, already aligned with ``targets`` (the caller
            shifts: logits at position t-1 of the full sequence predict token t).
            Upcast to float32 first: bf16 log-probabilities are too coarse for
            ratios like ``exp(logp - old_logp)``.
        targets: ``[B, T]`` integer token ids.

    Returns:
        ``[B, T]`` float32, ``log_softmax(logits)[b, t, targets[b, t]]``.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"logits must be [B, T, V] and targets [B, T]; got {tuple(logits.shape)} and {tuple(targets.shape)}")
    logits = logits.float()
    # gather - logsumexp: the same value as gathering from log_softmax without a second [B, T, V] tensor.
    picked = logits.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)
