"""A policy that plays uniformly random legal-looking moves, or arbitrary text."""

from __future__ import annotations

import string
from typing import Sequence

from arena.agents.base import PlayerView, ScriptedPolicy


class RandomPolicy(ScriptedPolicy):
    """Picks one of ``choices`` at random; with no choices, types random printable text.

    Games list their move vocabulary for this bot (e.g. ``["C", "D"]``); random
    text exercises the illegal-move rule.
    """

    def __init__(self, choices: Sequence[str] = (), policy_id: str = "random", max_len: int = 24):
        self.choices = list(choices)
        self.policy_id = policy_id
        self.max_len = max_len

    def choose(self, view: PlayerView) -> str:
        if self.choices:
            return self.choices[int(view.rng.integers(len(self.choices)))]
        n = int(view.rng.integers(0, self.max_len + 1))
        alphabet = string.printable
        return "".join(alphabet[i] for i in view.rng.integers(0, len(alphabet), size=n))
