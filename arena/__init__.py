"""Arena: multi-agent self-play with language-model policies."""

from arena.agents.base import Action, PlayerView, Policy
from arena.game import GameConfig, IllegalMove, TextGame
from arena.records import Episode, Matchup, Turn
from arena.registry import make, register, registered_games

__all__ = [
    "Action",
    "Episode",
    "GameConfig",
    "IllegalMove",
    "Matchup",
    "PlayerView",
    "Policy",
    "TextGame",
    "Turn",
    "make",
    "register",
    "registered_games",
]
__version__ = "0.1.0"
