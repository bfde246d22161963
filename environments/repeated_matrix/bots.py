"""Scripted bots for ``repeated_matrix-v0``: classic strategies of the repeated-games literature.

Each bot reads only ``view.observation`` (the game's text): the labels from the
line ``Answer with X or Y.`` (option 1 first) and the opponent's earlier moves
from ``History (you/them, your points): X/Y 8, ...``. "Cooperate" means
option 1 and "defect" option 2, whatever the matrix or the (shuffled) letters.

``BOTS`` maps short names to the classes, all constructible with no arguments;
``CRITICS`` the scripted critic of the critic loop (:mod:`arena.critic_loop`), which
coaches one player between games, and ``coachable`` is a bot that follows it.
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


# ----- the critic loop: coaching between games ------------------------------------------------------
#: the critic's tips, as the coachable bot recognises them (in feedback lines starting with "- ")
TIP_RETALIATE = "defect back"
TIP_PEACE = "offer peace"


def coaching(obs: str) -> tuple[int, int]:
    """How many feedback lines in a prompt asked to retaliate, and to offer peace."""
    lines = [ln.lower() for ln in obs.splitlines() if ln.lstrip().startswith("- ")]
    return sum(TIP_RETALIATE in ln for ln in lines), sum(TIP_PEACE in ln for ln in lines)


class Coachable(_MatrixBot):
    """A naive cooperator that follows coaching read from its prompt. Without feedback it always
    cooperates (like ``always_cooperate``); after a "defect back" tip it defects in the round after
    the opponent defected (tit for tat); after an "offer peace" tip it cooperates after a round in
    which both defected. It shows what the critic loop can do for a side that listens."""

    policy_id = "scripted/coachable"

    def pick(self, rounds, view):
        if not rounds:
            return 0
        retaliate, peace = coaching(view.observation)
        mine, theirs = rounds[-1]
        if peace and mine == 1 and theirs == 1:
            return 0
        return 1 if retaliate and theirs == 1 else 0


_METRICS = re.compile(r"^Metrics: (.*)$", re.MULTILINE)
_ROLE = re.compile(r"^Coached role: (\w+)", re.MULTILINE)


class MatrixCritic(ScriptedPolicy):
    """Reads a finished game from the critic prompt (:func:`arena.critic_loop.critic_prompt`: the
    ``Coached role:`` and ``Metrics:`` lines, i.e. the game's ``coop_rate/<p>`` and
    ``retaliation/<p>``) and coaches the reciprocity of the repeated-games literature:

    - exploited (the opponent defected, the coached player kept cooperating without retaliating):
      defect back, i.e. copy the opponent's previous choice;
    - stuck in mutual defection with an opponent that sometimes cooperates: offer peace;
    - otherwise: keep the same approach.
    """

    policy_id = "scripted/critic"

    def choose(self, view: PlayerView) -> str:
        role = _ROLE.search(view.observation)
        line = _METRICS.search(view.observation)
        metrics = {k: float(v) for k, v in re.findall(r"([\w/]+)=([^,\s]+)", line.group(1))} if line else {}
        me = role.group(1) if role else "player_0"
        rates = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("coop_rate/")}
        others = [p for p in rates if p != me]
        if me not in rates or not others:
            return "- Answer every round with exactly one of the two letters."
        mine, theirs = rates[me], rates[others[0]]
        retaliation = metrics.get(f"retaliation/{me}")
        if theirs < 1.0 and mine >= 0.5 and (retaliation is None or retaliation < 0.5):
            return (
                f"- You were exploited: in the round after the other player defects, {TIP_RETALIATE} "
                "(copy its previous choice).\n- Keep cooperating while it cooperates."
            )
        if mine < 0.5 and 0.0 < theirs < 0.5:
            return (
                f"- You are both stuck defecting: after a round where you both defected, cooperate once to {TIP_PEACE}.\n"
                "- Mutual cooperation pays you both more than mutual defection."
            )
        return "- Good result: keep the same approach."


BOTS: dict[str, type[ScriptedPolicy]] = {
    "tit_for_tat": TitForTat,
    "grim_trigger": GrimTrigger,
    "always_defect": AlwaysDefect,
    "always_cooperate": AlwaysCooperate,
    "alternate": Alternate,
    "random": RandomChoice,
    "coachable": Coachable,
}
#: the classic strategies: the tokenizer's corpus (``coachable`` plays like ``always_cooperate`` without feedback)
CLASSIC_BOTS: tuple[str, ...] = ("tit_for_tat", "grim_trigger", "always_defect", "always_cooperate", "alternate", "random")
CRITICS: dict[str, type[ScriptedPolicy]] = {"critic": MatrixCritic}
