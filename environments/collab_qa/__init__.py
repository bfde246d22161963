"""``collab_qa-v0``: collaborative question answering with search tools (Eisenstein et al., 2025).

The package: :mod:`.rules` (the game), :mod:`.world` (the generated world of
facts and its JSONL loader), :mod:`.retrieval` (BM25 search tools), :mod:`.bots`
(scripted askers and helpers), :mod:`.knowledge` (the knowledge model: the
warm start that makes "what the model knows" a fact of the data) and
:mod:`.evaluation` (the QA table, ``arena eval``, and the run report).
"""

from arena.environments.collab_qa.bots import BOTS
from arena.environments.collab_qa.rules import CollabQAGame
from arena.registry import register

register(
    "collab_qa-v0",
    CollabQAGame,
    description="An asker and helpers with different search tools answer a question together; shared reward F1 minus search cost.",
    bots=BOTS,
)

__all__ = ["BOTS", "CollabQAGame"]
