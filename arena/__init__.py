"""Arena: multi-agent self-play with language-model policies."""

from arena.agents.base import Action, PlayerView, Policy, ScriptedPolicy
from arena.game import GameConfig, IllegalMove, TextGame
from arena.records import Episode, Matchup, Turn
from arena.registry import GameReport, ReportInput, make, register, registered_games

__all__ = [
    "Action",
    "Episode",
    "GameReport",
    "GameConfig",
    "IllegalMove",
    "Matchup",
    "PlayerView",
    "Policy",
    "ReportInput",
    "ScriptedPolicy",
    "TextGame",
    "Turn",
    "make",
    "register",
    "registered_games",
]
__version__ = "0.1.0"
