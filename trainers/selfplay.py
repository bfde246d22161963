"""Self-play learning from group rewards: credit assignment and the learner step.

Read top to bottom: which return each seat trains on, how episodes become
advantaged samples (policy gradient) or kept demonstrations (ReST), and the
:class:`Learner` that turns samples into one round of weight updates. The
round loop itself (play, learn, sync, log, checkpoint) is in
:mod:`arena.experiment`.
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from arena.config import TrainerConfig
from arena.records import Episode
from arena.trainers.advantages import ADVANTAGES, RoleBaseline, seat_returns
from arena.trainers.batching import Sample, collate, forward_logprobs
from arena.trainers.losses import LOSSES, kl_penalty, masked_mean, truncated_importance_weights

#: a supervised example: (prompt ids, target ids)
Example = tuple[list[int], list[int]]


@dataclass
class Seat:
    """One trained seat in one episode: the turns it took and the return it trains on."""

    episode: Episode
    player: str
    ret: float
    #: episodes of the same matchup, seed and player: the baseline group
    group: tuple
    role: str
    label: str = ""


def trained_seats(episodes: list[Episode], policy_id: str, mix: float, labels: list[str] | None = None) -> list[Seat]:
    """Every seat ``policy_id`` played, with its training return: (1-mix)·own + mix·group."""
    out = []
    for i, ep in enumerate(episodes):
        for player, pid in ep.matchup.seats.items():
            if pid != policy_id:
                continue
            own = torch.tensor([ep.returns[player]])
            group = torch.tensor([ep.group_return])
            ret = float(seat_returns(own, group, mix)[0])
            key = (ep.matchup.game, tuple(sorted(ep.matchup.seats.items())), ep.matchup.seed, player)
            out.append(Seat(ep, player, ret, key, f"{ep.matchup.game}/{player}", labels[i] if labels else ep.matchup.game))
    return out


def policy_gradient_samples(seats: list[Seat], cfg: TrainerConfig, baseline: RoleBaseline | None) -> tuple[list[Sample], dict[str, float]]:
    """Advantage per seat (role baseline first, then the group estimator), shared by all its turns."""
    if not seats:
        return [], {}
    returns = torch.tensor([s.ret for s in seats], dtype=torch.float32)
    if baseline is not None:  # subtracts each key's running value, then folds this batch into it
        keys = [s.role if cfg.baseline == "per_role" else s.role.split("/")[0] for s in seats]
        returns = baseline.subtract(returns, keys)
    group_index = {g: i for i, g in enumerate(dict.fromkeys(s.group for s in seats))}
    group_ids = torch.tensor([group_index[s.group] for s in seats], dtype=torch.long)
    adv = ADVANTAGES[cfg.advantage](returns, group_ids)
    samples = [
        Sample(t.prompt_ids, t.completion_ids, t.logprobs, float(a), s.episode.episode_id, s.player)
        for s, a in zip(seats, adv.tolist())
        for t in s.episode.turns
        if t.player == s.player and t.completion_ids
    ]
    stats = {"advantage_abs_mean": float(adv.abs().mean()), "advantage_std": float(adv.std()) if len(adv) > 1 else 0.0}
    return samples, stats


def rest_samples(seats: list[Seat], cfg: TrainerConfig) -> tuple[list[Sample], dict[str, float]]:
    """ReST: keep the top fraction of seats by return within each group (``cfg.rest_within``: the
    episodes of one matchup and seed, or a whole game), and imitate their legal turns (advantage 1).
    Within groups, a seat is kept only if it beat the group's worst: where every episode scored
    alike, nothing tells a better move from a worse one. With ``cfg.rest_min_return``, only seats with
    at least that return are kept: a group's best failure is not imitated. With ``cfg.rest_keep_uniform``,
    a group whose seats all scored alike keeps its top fraction too. With ``cfg.rest_weight="margin"``, a
    kept seat is imitated in proportion to how far it beat its group's worst (scaled so the kept seats
    weigh 1 on the mean): a move that saved much outweighs one that saved little."""
    by: dict[object, list[Seat]] = defaultdict(list)
    for s in seats:
        by[s.group if cfg.rest_within == "group" else s.label].append(s)
    kept: list[Seat] = []
    margins: list[float] = []
    for group in by.values():
        k = max(1, int(round(cfg.rest_top_fraction * len(group))))
        best = sorted(group, key=lambda s: s.ret, reverse=True)[:k]
        worst = min(s.ret for s in group)
        uniform = best[0].ret == worst  # every seat of the group scored alike
        if cfg.rest_within == "group" and not (uniform and cfg.rest_keep_uniform):
            best = [s for s in best if s.ret > worst]
        if cfg.rest_min_return is not None:
            best = [s for s in best if s.ret >= cfg.rest_min_return]
        kept += best
        margins += [s.ret - worst for s in best]
    weights = [1.0] * len(kept)
    scale = float(np.mean(margins)) if margins else 0.0
    if cfg.rest_weight == "margin" and scale > 0:
        weights = [m / scale for m in margins]
    samples = [
        Sample(t.prompt_ids, t.completion_ids, t.logprobs, w, s.episode.episode_id, s.player)
        for s, w in zip(kept, weights)
        for t in s.episode.turns
        if t.player == s.player and t.completion_ids and not t.illegal
    ]
    threshold = min((s.ret for s in kept), default=0.0)
    stats = {"rest_kept_seats": float(len(kept)), "rest_return_threshold": threshold, "rest_groups": float(len(by))}
    if kept:
        stats["rest_margin_mean"] = scale
    if cfg.rest_within == "group":
        stats["rest_groups_kept"] = float(len({s.group for s in kept}))
    return samples, stats


def importance_stats(weights: torch.Tensor, mask: torch.Tensor, cap: float) -> dict[str, float]:
    """The mean truncated importance weight over a batch's tokens, and the fraction at the cap."""
    kept = weights[mask.bool()]
    if not kept.numel():
        return {}
    return {"tis_weight_mean": float(kept.mean()), "tis_capped_fraction": float((kept >= cap * (1 - 1e-6)).float().mean())}


@dataclass
class LearnStats:
    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, **kw: float) -> None:
        for k, v in kw.items():
            self.values[k].append(float(v))

    def means(self) -> dict[str, float]:
        return {k: float(np.mean(v)) for k, v in self.values.items() if v}


class Learner:
    """One trainable policy: its model, optimizer and (with a KL term) a frozen reference copy."""

    def __init__(self, model, cfg: TrainerConfig, pad_id: int, max_len: int = 2048, replay: Sequence[Example] = ()):
        self.model = model
        self.cfg = cfg
        self.pad_id = pad_id
        self.max_len = max_len
        self.version = 0
        #: the warm start's own examples, mixed into every update with ``cfg.replay_coef`` (:meth:`replay_step`)
        self.replay = list(replay)
        #: what the optimizer steps (and the gradient norm is clipped over)
        self.trainable = list(model.parameters())
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.reference = None
        if cfg.kl_coef > 0:
            self.reference = copy.deepcopy(model).eval()
            for p in self.reference.parameters():
                p.requires_grad_(False)

    def engine_weights(self) -> dict[str, torch.Tensor]:
        """What this policy's engines load after an update: the model's state dict."""
        return self.model.state_dict()

    def probe_logprobs(self, probe) -> list[float]:
        """This policy's log-probabilities of a sync probe's continuation."""
        from arena.weight_sync import probe_logprobs

        return probe_logprobs(self.model, probe)

    def reference_logprobs(self, batch) -> torch.Tensor | None:
        """The KL reference's log-probabilities of the batch's targets (None: no KL term)."""
        if self.reference is None:
            return None
        with torch.no_grad():
            return forward_logprobs(self.reference, batch)[0]

    @staticmethod
    def _replay_generator(generator: torch.Generator) -> torch.Generator:
        """The replay draws' own generator, seeded from ``generator``'s state without advancing it: the
        round's shuffles stay those of a run without replay, and a resumed round draws the same examples."""
        twin = torch.Generator()
        twin.set_state(generator.get_state())
        return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=twin)))

    def replay_step(self, generator: torch.Generator) -> torch.Tensor:
        """Add to the gradients ``cfg.replay_coef`` times the mean target cross-entropy of ``cfg.replay_batch``
        warm-start examples drawn with ``generator``; returns that cross-entropy, detached."""
        from arena.trainers.imitation import batch_step

        idx = torch.randint(0, len(self.replay), (self.cfg.replay_batch,), generator=generator).tolist()
        device = next(self.model.parameters()).device
        return batch_step(self.model, [self.replay[i] for i in idx], self.max_len, self.pad_id, device, scale=self.cfg.replay_coef)

    def learn(self, samples: list[Sample], generator: torch.Generator) -> dict[str, float]:
        """One round of updates on ``samples``; bumps ``version`` when the weights changed."""
        if not samples:
            return {}
        cfg, loss_fn = self.cfg, LOSSES[self.cfg.loss]
        stats = LearnStats()
        started, tokens = time.perf_counter(), 0
        # samples from older weights (asynchronous rollouts): reinforce weighs each token by the
        # learner's probability over the sampler's, truncated; ppo_clip's ratio is that already
        tis = cfg.max_staleness > 0 and cfg.loss == "reinforce"
        replay = self._replay_generator(generator) if self.replay and cfg.replay_coef > 0 else None
        self.model.train()
        for _ in range(cfg.epochs):
            order = torch.randperm(len(samples), generator=generator).tolist()
            for i in range(0, len(order), cfg.batch_size):
                batch = collate([samples[j] for j in order[i : i + cfg.batch_size]], self.pad_id, self.max_len)
                logp, ent = forward_logprobs(self.model, batch, with_entropy=True)
                extra: dict[str, torch.Tensor] = {}
                if tis:
                    extra["token_weights"] = w = truncated_importance_weights(logp.detach(), batch.old_logprobs, batch.mask, cfg.tis_cap)
                    stats.add(**importance_stats(w, batch.mask, cfg.tis_cap))
                loss, parts = loss_fn(logp, batch.old_logprobs, batch.advantages, batch.mask, clip_eps=cfg.clip_eps, **extra)
                kl = torch.zeros(())
                ref_logp = self.reference_logprobs(batch)
                if ref_logp is not None:
                    kl = masked_mean(kl_penalty(logp, ref_logp, batch.mask, kind=cfg.kl_estimator), batch.mask)
                    loss = loss + cfg.kl_coef * kl
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if replay is not None:
                    stats.add(replay_loss=self.replay_step(replay).item())
                grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, cfg.max_grad_norm)
                self.optimizer.step()
                tokens += batch.num_tokens
                parts["pg_loss"] = parts.pop("loss")
                stats.add(loss=loss.item(), kl=kl.item(), entropy=masked_mean(ent, batch.mask).item(), grad_norm=grad_norm.item(), **parts)
        self.model.eval()
        self.version += 1
        seconds = time.perf_counter() - started
        out = stats.means()
        out.update(train_tokens=float(tokens), train_tokens_per_s=tokens / seconds if seconds else 0.0, samples=float(len(samples)))
        return out
