"""``social_deduction-v0``: an Among-Us-like game of tasks, kills, discussion and votes (rules in :mod:`.rules`)."""

from arena.environments.social_deduction.bots import BOTS
from arena.environments.social_deduction.rules import SocialDeductionGame
from arena.registry import register

register(
    "social_deduction-v0",
    SocialDeductionGame,
    description="Among-Us-like social deduction: a crew does tasks on a grid of rooms, one impostor kills; simultaneous moves, "
    "discussion after a body is reported, then a secret vote.",
    bots=BOTS,
)

__all__ = ["BOTS", "SocialDeductionGame"]
