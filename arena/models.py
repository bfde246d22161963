"""Where a run's model comes from: a local path or hub id, or the tiny model built here.

The tiny model's tokenizer is trained on text the games themselves produce:
scripted bots play every shipped game and their observations and moves, plus
the agent's system prompts, make the corpus.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from arena.agents.catalog import make_fixed_policy, scripted_bots
from arena.agents.llm import LLMAgent
from arena.records import Matchup
from arena.registry import make, registered_games
from arena.rollout import play_many
from arena.tiny import TinyModelConfig, cached_tiny_model


#: the scripted play whose text trains the tiny model's tokenizer: game id -> bots (None = all of
#: the game's bots). Fixed on purpose: the tokenizer decides the tiny model and its warm start, which
#: the learning tests and benchmarks were measured on. Other games' text is encoded all the same
#: (the tokenizer is byte-level), only in more tokens.
TOKENIZER_BOTS: dict[str, tuple[str, ...] | None] = {
    "repeated_matrix-v0": None,
    "negotiation-v0": ("fair_seller", "hard_seller", "fair_buyer", "hard_buyer", "random"),
}


def game_text_corpus(episodes_per_pairing: int = 3, seed: int = 0) -> list[str]:
    """Observations, moves and prompts from scripted play of the games in ``TOKENIZER_BOTS``."""
    texts: list[str] = []
    matchups: list[Matchup] = []
    for game_id in registered_games():
        if game_id not in TOKENIZER_BOTS:
            continue
        allowed = TOKENIZER_BOTS[game_id]
        bots = [b for b in scripted_bots(game_id) if allowed is None or b in allowed]
        players = list(make(game_id).possible_agents)
        names = [f"scripted/{b}" for b in bots]
        for combo in itertools.product(names, repeat=len(players)):
            for k in range(episodes_per_pairing):
                matchups.append(Matchup(game=game_id, seed=seed * 100_003 + len(matchups), seats=dict(zip(players, combo))))
        texts += [LLMAgent.DEFAULT_SYSTEM_PROMPT.format(player=p, game=game_id) for p in players]

    def pool(m: Matchup):
        return {pid: make_fixed_policy(pid, m.game) for pid in set(m.seats.values())}

    episodes = asyncio.run(play_many(matchups, pool, concurrency=256))
    for ep in episodes:
        for t in ep.turns:
            texts.append(t.observation)
            texts.append(t.action)
    return texts


def resolve_model_path(path: str | None, tiny: TinyModelConfig, cache_dir: Path | None = None, warm_start=None) -> str:
    """A user's model path/hub id as given, else the cached tiny model (built on first use),
    warm-started by imitation of the scripted bots when ``warm_start`` (an ImitationConfig) is given,
    or turned into the collaborative-QA model when it is a KnowledgeConfig."""
    if path:
        return path
    from arena.environments.collab_qa.knowledge import KnowledgeConfig

    if isinstance(warm_start, KnowledgeConfig):  # its own base: a tokenizer trained on collab_qa's text
        from arena.tiny import default_cache_dir
        from arena.environments.collab_qa.knowledge import cached_knowledge_model

        return str(cached_knowledge_model(tiny, warm_start, cache_dir if cache_dir is not None else default_cache_dir()))
    base = cached_tiny_model(tiny, game_text_corpus, cache_dir=cache_dir, corpus_key=corpus_key())
    if warm_start is None:
        return str(base)
    from arena.tiny import default_cache_dir
    from arena.trainers.imitation import cached_warm_start

    return str(cached_warm_start(base, warm_start, cache_dir if cache_dir is not None else default_cache_dir()))


def corpus_key() -> str:
    """Names the tokenizer corpus: the Arena version and its games (their ids carry rule versions)."""
    from arena import __version__

    return ",".join([__version__] + [g for g in registered_games() if g in TOKENIZER_BOTS])
