"""``debate-v0``: two debaters answer, then debate; an oracle or a model judge (rules in :mod:`.rules`)."""

from arena.environments.debate.bots import BOTS
from arena.environments.debate.rules import DebateGame
from arena.registry import register

register(
    "debate-v0",
    DebateGame,
    description="Two debaters answer a question with confidence and reasons, then debate; an oracle or a model judge decides.",
    bots=BOTS,
)

__all__ = ["BOTS", "DebateGame"]
