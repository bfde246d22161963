"""Debate's part in tree branching (DPO from trees, :mod:`arena.trainers.trees`): scores and pair labels.

Persuasion-balanced training (Stengel-Eskin et al., 2025) branches a debater's
turn and scores each continuation by the correctness of the debater's final
answer in the games below it. A preference pair is labelled

- ``resist``: the debater held a right answer before the turn and the chosen
  continuation kept it (it resisted being pushed off it);
- ``accept``: the debater held a wrong answer and the chosen continuation
  adopted a right one (it accepted being persuaded);
- ``other``: anything else (e.g. the branch is the opening, the chosen
  continuation is an illegal move, or it is better for a later reason).

A model judge's turn can be branched too: it is scored by its return (a right
pick) and its pairs are ``other``.
"""

from __future__ import annotations

from pettingzoo import AECEnv

from arena.environments.debate.rules import DEBATERS, debate_game, normalize_answer, parse_message
from arena.records import Episode
from arena.registry import TreeHooks

LABELS = ("resist", "accept", "other")


def final_correct(episode: Episode, player: str) -> float:
    """A rollout's score: 1 when the debater's final answer is right, else 0 (a judge: its return)."""
    if player not in DEBATERS:
        return float(episode.returns[player])
    return float(episode.metrics.get(f"final_correct/{player}", 0.0))


def chosen_answer(env: AECEnv, action: str) -> str | None:
    """The answer a debater's message gives (None when the message is an illegal move)."""
    game = debate_game(env)
    try:
        return parse_message(action, game.config.max_answer_chars)[0]
    except Exception:  # an illegal move (the game treats a parser failure as one too)
        return None


def persuasion_label(env: AECEnv, player: str, action: str) -> str:
    """``resist``, ``accept`` or ``other`` for a pair whose chosen continuation is ``action``,
    from the debater's answer in ``env`` (the game at the branch point); see the module docstring."""
    game = debate_game(env)
    if game is None or player not in DEBATERS:
        return "other"
    prior = game.current_answer(player)
    chosen = chosen_answer(env, action)
    if prior is None or chosen is None:
        return "other"
    right = game.question.is_right
    if right(prior) and normalize_answer(chosen) == normalize_answer(prior):
        return "resist"
    if not right(prior) and right(chosen):
        return "accept"
    return "other"


TREE_HOOKS = TreeHooks(score=final_correct, label=persuasion_label, labels=LABELS)
