"""A human at the terminal, in one seat."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TextIO

from arena.agents.base import Action, PlayerView


class HumanPolicy:
    """Shows the observation and reads one line as the move.

    Input is read on a worker thread, so other episodes keep running while the
    human thinks. End of input (Ctrl-D) sends an empty move, which the game
    treats as illegal under its own rule.
    """

    version = 0

    def __init__(self, policy_id: str = "human", *, read: Callable[[], str] | None = None, out: TextIO | None = None):
        self.policy_id = policy_id
        self._read = read or _read_line
        self._out = out or sys.stdout

    async def act(self, view: PlayerView) -> Action:
        print(f"\n--- {view.player} (turn {view.turn}) ---\n{view.observation}", file=self._out)
        if view.sample_moves:
            print(f"(for example: {' | '.join(view.sample_moves[:4])})", file=self._out)
        print("> ", end="", file=self._out, flush=True)
        text = await asyncio.to_thread(self._read)
        return Action(text=text)


def _read_line() -> str:
    line = sys.stdin.readline()
    return line.rstrip("\n")
