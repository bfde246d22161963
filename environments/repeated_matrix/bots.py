"""Scripted bots for ``repeated_matrix-v0``: classic strategies of the repeated-games literature.

Each bot reads only ``view.observation`` (the game's text): the labels from the
line ``Answer with X or Y.`` (option 1 first) and the opponent's earlier moves
from ``History (you/them, your points): X/Y 8, ...``. "Cooperate" means
option 1 and "defect" option 2, whatever the matrix or the (shuffled) letters.

``BOTS`` maps short names to the classes, all constructible with no arguments.
"""

from __future__ import annotations

import re

from arena.agents.base import PlayerView, ScriptedPolicy

_ANSWER = re.compile(r"^Answer with (\w+) or (\w+)\.", re.MULTILINE)
_HISTORY = re.compile(r"^History \(you/them, your points\): (.*)$", re.MULTILINE)


def parse_observation(text: str) -> tuple[tuple[str, str], list[tuple[int, int]]]:
    """Labels (option 1, option 2) and past rounds as (my option, their option), 0 = option 1.

    Raises ValueError when the text is not a ``repeated_matrix`` observation
    asking for a move.
    """
    answer = _ANSWER.search(text)
    history = _HISTORY.search(text)
    if answer is None or history is None:
        raise ValueError("not a repeated_matrix observation asking for a move")
    labels = (answer.group(1), answer.group(2))
    rounds: list[tuple[int, int]] = []
    body = history.group(1).strip()
    if body != "none":
        for entry in body.split(", "):
            mine, _, rest = entry.partition("/")
            theirs = rest.split(" ", 1)[0]
            rounds.append((labels.index(mine), labels.index(theirs)))
    return labels, rounds


class _MatrixBot(ScriptedPolicy):
    """Shared plumbing: subclasses pick an option (0 or 1) from the past rounds."""

    def pick(self, rounds: list[tuple[int, int]], view: PlayerView) -> int:
        raise NotImplementedError

    def choose(self, view: PlayerView) -> str:
        labels, rounds = parse_observation(view.observation)
        return labels[self.pick(rounds, view)]


class TitForTat(_MatrixBot):
    """Cooperates first, then copies the opponent's previous move."""

    policy_id = "scripted/tit_for_tat"

    def pick(self, rounds, view):
        return rounds[-1][1] if rounds else 0


class GrimTrigger(_MatrixBot):
    """Cooperates until the opponent defects once, then defects for ever."""

    policy_id = "scripted/grim_trigger"

    def pick(self, rounds, view):
        return 1 if any(theirs == 1 for _, theirs in rounds) else 0


class AlwaysDefect(_MatrixBot):
    """Always option 2."""

    policy_id = "scripted/always_defect"

    def pick(self, rounds, view):
        return 1


class AlwaysCooperate(_MatrixBot):
    """Always option 1."""

    policy_id = "scripted/always_cooperate"

    def pick(self, rounds, view):
        return 0


class Alternate(_MatrixBot):
    """Option 1 in odd rounds (1, 3, ...), option 2 in even rounds; Akata et al.'s alternating opponent."""

    policy_id = "scripted/alternate"

    def pick(self, rounds, view):
        return len(rounds) % 2


class RandomChoice(_MatrixBot):
    """Either option with probability 1/2, drawn from ``view.rng`` (reproducible from the run seed)."""

    policy_id = "scripted/random"

    def pick(self, rounds, view):
        return int(view.rng.integers(2))


BOTS: dict[str, type[ScriptedPolicy]] = {
    "tit_for_tat": TitForTat,
    "grim_trigger": GrimTrigger,
    "always_defect": AlwaysDefect,
    "always_cooperate": AlwaysCooperate,
    "alternate": Alternate,
    "random": RandomChoice,
}
