"""Bounded staleness: which episodes a learner may train on when rollouts run ahead of learning.

With ``trainer.max_staleness`` > 0 the engines play round k+1 while the learner trains on round k,
so a turn can be sampled by weights older than the learner's. Every turn records the version that
sampled it (``Turn.policy_version``); an episode's staleness for a policy is how far its oldest turn
of that policy is behind the learner:

    staleness = learner_version - min(turn.policy_version for the policy's turns)

An episode is trained on only if that is at most ``max_staleness``; staler ones are dropped and
counted. The correction for what is kept (truncated importance weights) is in
:mod:`arena.trainers.losses`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from arena.records import Episode


def episode_staleness(episode: Episode, policy_id: str, learner_version: int) -> int | None:
    """How many versions behind ``learner_version`` the oldest turn ``policy_id`` played is (None: it played none)."""
    versions = [t.policy_version for t in episode.turns if t.policy_id == policy_id]
    return learner_version - min(versions) if versions else None


@dataclass
class Fresh:
    """The episodes a policy may train on, and what the filter saw."""

    episodes: list[Episode]
    labels: list[str]
    #: staleness of each episode the policy played (kept or not)
    staleness: list[int]
    dropped: int

    def metrics(self, policy_id: str) -> dict[str, float]:
        """``staleness/<policy>/mean|max`` over the episodes it played, and ``staleness/<policy>/dropped_episodes``."""
        s = self.staleness
        return {
            f"staleness/{policy_id}/mean": sum(s) / len(s) if s else 0.0,
            f"staleness/{policy_id}/max": float(max(s, default=0)),
            f"staleness/{policy_id}/dropped_episodes": float(self.dropped),
        }


def fresh_episodes(episodes: Sequence[Episode], labels: Sequence[str], policy_id: str, learner_version: int, max_staleness: int) -> Fresh:
    """The episodes (and their labels) whose turns of ``policy_id`` are all at most ``max_staleness``
    versions behind ``learner_version``; episodes the policy did not play pass through (they give it
    no samples)."""
    if max_staleness < 0:
        raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
    kept, kept_labels, seen, dropped = [], [], [], 0
    for ep, label in zip(episodes, labels, strict=True):
        s = episode_staleness(ep, policy_id, learner_version)
        if s is not None:
            seen.append(s)
            if s > max_staleness:
                dropped += 1
                continue
        kept.append(ep)
        kept_labels.append(label)
    return Fresh(kept, kept_labels, seen, dropped)
