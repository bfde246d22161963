"""Policies: the LLM agent, scripted bots per game, random and human players."""

from arena.agents.base import Action, PlayerView, Policy, ScriptedPolicy
from arena.agents.random_agent import RandomPolicy

__all__ = ["Action", "PlayerView", "Policy", "RandomPolicy", "ScriptedPolicy"]
