"""Credit assignment: turn episode returns into per-episode advantages.

Pure tensor maths in the style of verl's ``trainer/ppo/core_algos.py``: tensors
in, tensors out, shapes in the docstrings, no trainer state (the one exception,
:class:`RoleBaseline`, is a small explicit object with a JSON-able state).

Shapes: ``N`` is the number of episodes (one return per trained seat) in a
batch. ``group_ids[i]`` names the group of episode ``i``: episodes that share
a matchup and a seed, so their returns differ only through the policy's own
sampling and are fair comparisons for one another. Group ids are arbitrary
integers; they need not be contiguous or sorted.

Variants are named functions collected in :data:`ADVANTAGES`; every one has the
signature ``(returns [N], group_ids [N]) -> advantages [N]`` so a trainer picks
one by name from its config.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "ADVANTAGES",
    "RoleBaseline",
    "group_advantages_grpo",
    "group_advantages_mean",
    "group_advantages_rloo",
    "no_baseline",
    "seat_returns",
    "whiten",
]


# --------------------------------------------------------------------------- #
# Group statistics (vectorised; no Python loop over episodes)
# --------------------------------------------------------------------------- #


def _check(returns: Tensor, group_ids: Tensor) -> None:
    if returns.dim() != 1:
        raise ValueError(f"returns must be 1-D [N], got shape {tuple(returns.shape)}")
    if group_ids.shape != returns.shape:
        raise ValueError(f"group_ids shape {tuple(group_ids.shape)} must equal returns shape {tuple(returns.shape)}")
    if not returns.is_floating_point():
        raise ValueError(f"returns must be a float tensor, got {returns.dtype}")
    if group_ids.is_floating_point() or group_ids.is_complex():
        raise ValueError(f"group_ids must be an integer tensor, got {group_ids.dtype}")


def _group_stats(returns: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-episode view of its group's statistics.

    Args:
        returns: ``[N]`` float.
        group_ids: ``[N]`` integer.

    Returns:
        ``(index [N] long, count [N], sum [N], constant [N] bool)``: ``index``
        maps each episode to a dense group number ``0..G-1``; ``count`` and
        ``sum`` are its group's size and return total (in ``returns.dtype``);
        ``constant`` is True where every return in the group is identical
        (size-1 groups included), decided exactly with min == max rather than
        from a float std that rounding can leave at 1e-8.
    """
    _check(returns, group_ids)
    _, index = torch.unique(group_ids, return_inverse=True)
    num_groups = int(index.max()) + 1 if index.numel() else 0
    count = torch.zeros(num_groups, dtype=returns.dtype, device=returns.device)
    count.index_add_(0, index, torch.ones_like(returns))
    total = torch.zeros(num_groups, dtype=returns.dtype, device=returns.device)
    total.index_add_(0, index, returns)
    lo = torch.full((num_groups,), math.inf, dtype=returns.dtype, device=returns.device)
    hi = torch.full((num_groups,), -math.inf, dtype=returns.dtype, device=returns.device)
    lo = lo.scatter_reduce(0, index, returns, reduce="amin")
    hi = hi.scatter_reduce(0, index, returns, reduce="amax")
    return index, count[index], total[index], (lo == hi)[index]


# --------------------------------------------------------------------------- #
# Advantage variants: (returns [N], group_ids [N]) -> advantages [N]
# --------------------------------------------------------------------------- #


def group_advantages_mean(returns: Tensor, group_ids: Tensor) -> Tensor:
    """Return minus the mean return of its group (Dr. GRPO: no std scaling).

    Args:
        returns: ``[N]`` float, one return per episode.
        group_ids: ``[N]`` integer, episodes with equal ids form a group.

    Returns:
        ``[N]`` advantages. A group of size 1 gets 0 (it is its own mean).
        The episode's own return is inside its baseline, which biases the
        gradient by a factor ``(n-1)/n``; :func:`group_advantages_rloo` removes that.
    """
    _, count, total, _ = _group_stats(returns, group_ids)
    return returns - total / count


def group_advantages_grpo(returns: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """GRPO: ``(return - group mean) / (group std + eps)``.

    The std is the population std (``unbiased=False``, divide by ``n``): it is
    defined for every group size, and for the two-episode groups common in
    self-play it gives advantages of exactly ±1 rather than ±0.71.

    A group whose returns are all identical (including a group of size 1)
    carries no signal about which sample was better, so its advantages are
    exactly 0. This is decided exactly (min == max), not by dividing a rounding
    residue of ~1e-8 by a tiny std, which would turn noise into ±1.

    Args:
        returns: ``[N]`` float.
        group_ids: ``[N]`` integer.
        eps: added to the std so near-constant groups do not explode.

    Returns:
        ``[N]`` advantages.
    """
    index, count, total, constant = _group_stats(returns, group_ids)
    centred = returns - total / count
    # Dense group numbers are < N, so an [N] buffer holds the per-group sums of squares.
    sq = torch.zeros_like(returns).index_add_(0, index, centred * centred)[index]
    std = (sq / count).sqrt()
    # where() keeps the 0/0 of constant groups from leaking a NaN into the output.
    return torch.where(constant, torch.zeros_like(returns), centred / (std + eps))


def group_advantages_rloo(returns: Tensor, group_ids: Tensor) -> Tensor:
    """REINFORCE leave-one-out: return minus the mean of the OTHER members of its group.

    The baseline excludes the episode itself, so it is independent of that
    episode's sample and the gradient estimate stays unbiased. Algebraically
    ``A_i = n/(n-1) * (R_i - mean)``.

    Args:
        returns: ``[N]`` float.
        group_ids: ``[N]`` integer.

    Returns:
        ``[N]`` advantages; a group of size 1 has no other members and gets 0.
    """
    _, count, total, _ = _group_stats(returns, group_ids)
    others = count - 1
    loo_mean = (total - returns) / others.clamp(min=1)
    return torch.where(others > 0, returns - loo_mean, torch.zeros_like(returns))


def no_baseline(returns: Tensor, group_ids: Tensor) -> Tensor:
    """Plain REINFORCE: the advantage is the return itself (``group_ids`` is only validated).

    Args:
        returns: ``[N]`` float.
        group_ids: ``[N]`` integer, unused; kept so every variant has one signature.

    Returns:
        ``[N]``, a copy of ``returns``.
    """
    _check(returns, group_ids)
    return returns.clone()


ADVANTAGES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "group_mean": group_advantages_mean,
    "grpo": group_advantages_grpo,
    "rloo": group_advantages_rloo,
    "none": no_baseline,
}
"""Advantage variants by config name; each is ``(returns [N], group_ids [N]) -> [N]``."""


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def whiten(x: Tensor, eps: float = 1e-8, shift_mean: bool = True) -> Tensor:
    """Batch-normalise ``x`` to unit std (and zero mean unless ``shift_mean=False``).

    Args:
        x: any shape, float. Statistics are over all elements.
        eps: added to the std.
        shift_mean: False keeps the mean (rescales only), for when the sign of
            the advantages must survive.

    Returns:
        Same shape as ``x``. Population std (``unbiased=False``), so a single
        element whitens to 0 instead of NaN.
    """
    mean = x.mean()
    std = x.std(unbiased=False)
    out = (x - mean) / (std + eps)
    return out if shift_mean else out + mean


def seat_returns(own: Tensor, group: Tensor, mix: float) -> Tensor:
    """Blend a seat's own return with its group's (team) return.

    ``(1 - mix) * own + mix * group``: ``mix = 0`` trains each seat on its own
    return (competitive games), ``mix = 1`` on the shared group return
    (cooperative games), values between shape partly prosocial agents.

    Args:
        own: ``[N]`` float, each seat's own return.
        group: ``[N]`` float, the return of the group the seat belongs to.
        mix: weight of the group return, in ``[0, 1]``.

    Returns:
        ``[N]`` blended returns.
    """
    if not (0.0 <= mix <= 1.0):  # also rejects NaN
        raise ValueError(f"mix must be in [0, 1], got {mix}")
    if own.shape != group.shape:
        raise ValueError(f"own shape {tuple(own.shape)} must equal group shape {tuple(group.shape)}")
    return (1.0 - mix) * own + mix * group


# --------------------------------------------------------------------------- #
# Role-conditioned baseline (SPIRAL)
# --------------------------------------------------------------------------- #


class RoleBaseline:
    """A running mean return per role, subtracted from that role's returns.

    Why (SPIRAL's role-conditioned advantage estimation): in zero-sum
    self-play one shared policy plays every seat, so its average return over
    all seats is ~0 and a single global baseline subtracts nothing useful.
    But each role has its own expected return (the first mover may win 60 %,
    the seller in a negotiation may earn more than the buyer); without a
    per-role baseline, the policy is pushed up on every action of the
    favoured role and down on every action of the other, which is variance,
    not learning. Keying the baseline by role (e.g. ``"negotiation-v0/seller"``)
    removes that offset.

    The baseline of a key is an exponential moving average of its batch-mean
    returns: the first observation initialises it, then
    ``b <- decay * b + (1 - decay) * batch_mean``. An unseen key has value 0.

    Args:
        decay: EMA decay in ``[0, 1]``; 0.9 remembers roughly the last ten batches.
    """

    def __init__(self, decay: float = 0.9) -> None:
        if not (0.0 <= decay <= 1.0):
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self._values: dict[str, float] = {}

    def value(self, key: str) -> float:
        """Current baseline of ``key``; 0.0 if never updated."""
        return self._values.get(key, 0.0)

    def update(self, key: str, returns: Tensor | list[float]) -> None:
        """Fold the mean of ``returns`` (a non-empty batch for ``key``) into the EMA."""
        batch = torch.as_tensor(returns, dtype=torch.float64).reshape(-1)
        if batch.numel() == 0:
            raise ValueError(f"update({key!r}) needs at least one return")
        mean = float(batch.mean())
        if key in self._values:
            self._values[key] = self.decay * self._values[key] + (1.0 - self.decay) * mean
        else:
            self._values[key] = mean

    def subtract(self, returns: Tensor, keys: list[str], *, update: bool = True) -> Tensor:
        """Advantages ``returns[i] - value(keys[i])`` using the values BEFORE this batch.

        The baseline excludes the batch it is applied to, so an episode's own
        return never sits in its baseline (no shrinkage bias). With
        ``update=True`` (the default, one call per batch) each key's EMA is then
        updated with the mean of that key's returns in this batch; pass
        ``update=False`` to only read.

        Args:
            returns: ``[N]`` float.
            keys: ``N`` role keys, one per element.
            update: fold this batch into the baselines after subtracting.

        Returns:
            ``[N]`` advantages, same dtype and device as ``returns``.
        """
        if returns.dim() != 1 or returns.shape[0] != len(keys):
            raise ValueError(f"returns must be [N] with one key per element; got shape {tuple(returns.shape)} and {len(keys)} keys")
        base = torch.tensor([self.value(k) for k in keys], dtype=returns.dtype, device=returns.device)
        out = returns - base
        if update:
            detached = returns.detach().cpu()
            for key in dict.fromkeys(keys):  # unique keys, first-seen order
                self.update(key, detached[[i for i, k in enumerate(keys) if k == key]])
        return out

    def state_dict(self) -> dict:
        """Plain JSON-able state: ``{"decay": float, "values": {key: float}}``."""
        return {"decay": self.decay, "values": dict(self._values)}

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict` (decay included, so a resumed run continues the same EMA)."""
        decay = float(state["decay"])
        if not (0.0 <= decay <= 1.0):
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        self.decay = decay
        self._values = {str(k): float(v) for k, v in state["values"].items()}
