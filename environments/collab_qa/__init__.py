"""``collab_qa-v0``: collaborative question answering with search tools (Eisenstein et al., 2025).

The package: :mod:`.rules` (the game), :mod:`.world` (the generated world of
facts and its JSONL loader), :mod:`.retrieval` (BM25 search tools), :mod:`.bots`
(scripted askers and helpers), :mod:`.knowledge` (the knowledge model: the
warm start that makes "what the model knows" a fact of the data) and
:mod:`.evaluation` (the QA table, ``arena eval``, and the run report).

Its registration declares the game's own parts to Arena:

- ``report``: :func:`.evaluation.report`, the QA table before -> after self-play of an ``arena run``;
- ``evaluate``: :func:`.evaluation.eval_command`, ``arena eval`` with ``-o split=S`` and
  ``-o setting=isolated|collaborative``;
- ``check_entry``: :func:`.knowledge.check_entry`, with the knowledge warm start every collab_qa entry
  plays the world the model knows;
- the warm-start recipe ``knowledge`` (``model.warm_start: {recipe: knowledge, ...}``):
  :func:`.knowledge.knowledge_warm_start`, the model with its own tokenizer trained on the game's text.
"""

from arena.environments.collab_qa.bots import BOTS
from arena.environments.collab_qa.evaluation import eval_command, report
from arena.environments.collab_qa.knowledge import KnowledgeConfig, check_entry, knowledge_replay, knowledge_warm_start
from arena.environments.collab_qa.rules import CollabQAGame
from arena.registry import register
from arena.warm_start import register_warm_start

#: the default warm start's demonstrations (imitation, when a run plays this game without the knowledge
#: model): the protocol as ``always_search`` plays it in every seat (helpers search and reply, the asker
#: asks and answers), on as many seeds as listed. The game's other bots answer from the default world's
#: facts without searching (``oracle``, ``memory_first``) or never answer (``never_search``).
DEMONSTRATIONS = [{seat: "scripted/always_search" for seat in ("asker", "helper_0", "helper_1")}] * 16

register(
    "collab_qa-v0",
    CollabQAGame,
    description="An asker and helpers with different search tools answer a question together; shared reward F1 minus search cost.",
    bots=BOTS,
    demonstrations=DEMONSTRATIONS,
    report=report,
    evaluate=eval_command,
    check_entry=check_entry,
)
register_warm_start("knowledge", KnowledgeConfig, knowledge_warm_start, own_base=True, replay=knowledge_replay)

__all__ = ["BOTS", "CollabQAGame", "KnowledgeConfig"]
