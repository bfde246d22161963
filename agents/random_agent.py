"""A policy that plays uniformly random legal-looking moves, or arbitrary text."""

from __future__ import annotations

import string
from collections.abc import Sequence

from arena.agents.base import PlayerView, ScriptedPolicy


class RandomPolicy(ScriptedPolicy):
    """Plays a uniformly random move.

    It picks from ``choices`` when given, else from the legal moves the game
    offers in ``view.sample_moves``; with ``junk_rate`` > 0 (or when there is
    nothing to pick from) it types random printable text instead, which
    exercises a game's illegal-move rule.
    """

    def __init__(self, choices: Sequence[str] = (), policy_id: str = "random", junk_rate: float = 0.0, max_len: int = 24):
        self.choices = list(choices)
        self.policy_id = policy_id
        self.junk_rate = junk_rate
        self.max_len = max_len

    def choose(self, view: PlayerView) -> str:
        options = self.choices or view.sample_moves
        if options and (self.junk_rate <= 0 or view.rng.random() >= self.junk_rate):
            return options[int(view.rng.integers(len(options)))]
        n = int(view.rng.integers(0, self.max_len + 1))
        alphabet = string.printable
        return "".join(alphabet[i] for i in view.rng.integers(0, len(alphabet), size=n))
