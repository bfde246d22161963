"""``repeated_matrix-v0``: repeated 2x2 games with hidden simultaneous moves (rules in :mod:`.rules`)."""

import itertools

from arena.environments.repeated_matrix.bots import BOTS, CLASSIC_BOTS, CRITICS
from arena.environments.repeated_matrix.rules import RepeatedMatrixGame
from arena.registry import register

#: the classic strategies whose every ordered pairing is the default warm start's demonstrations
_DEMO_BOTS = ("tit_for_tat", "grim_trigger", "alternate", "always_cooperate", "always_defect", "random")

register(
    "repeated_matrix-v0",
    RepeatedMatrixGame,
    description="Repeated 2x2 games (Prisoner's Dilemma, Battle of the Sexes, Stag Hunt, Chicken) with hidden simultaneous moves.",
    bots=BOTS,
    critics=CRITICS,  # the critic loop: scripted/critic coaches reciprocity (scripted/coachable follows it)
    corpus_bots=CLASSIC_BOTS,
    demonstrations=[{"player_0": f"scripted/{a}", "player_1": f"scripted/{b}"} for a, b in itertools.product(_DEMO_BOTS, repeat=2)],
)

__all__ = ["BOTS", "CRITICS", "RepeatedMatrixGame"]
