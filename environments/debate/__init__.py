"""``debate-v0``: two debaters answer, then debate; an oracle or a model judge (rules in :mod:`.rules`,
scores and pair labels for DPO from trees in :mod:`.trees`)."""

from arena.environments.debate.bots import BOTS
from arena.environments.debate.rules import DebateGame
from arena.environments.debate.trees import TREE_HOOKS
from arena.registry import register

register(
    "debate-v0",
    DebateGame,
    description="Two debaters answer a question with confidence and reasons, then debate; an oracle or a model judge decides.",
    bots=BOTS,
    tree=TREE_HOOKS,
)

__all__ = ["BOTS", "DebateGame"]
