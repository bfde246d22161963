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


#: bumped when game_text_corpus changes what it collects (names the cached tiny models apart)
CORPUS_FORMAT = 2


def game_text_corpus(episodes_per_pairing: int = 3, seed: int = 0, max_chars_per_game: int = 1_000_000) -> list[str]:
    """Observations, moves and prompts from scripted play of every game that has bots: each distinct
    text once, at most ``max_chars_per_game`` characters per game (games with long observations
    and many seats would otherwise fill the tokenizer's corpus, and its training time)."""
    texts: list[str] = []
    matchups: list[Matchup] = []
    for game_id in registered_games():
        bots = scripted_bots(game_id)
        if not bots:
            continue
        players = list(make(game_id).possible_agents)
        names = [f"scripted/{b}" for b in bots]
        for combo in itertools.product(names, repeat=len(players)):
            for k in range(episodes_per_pairing):
                matchups.append(Matchup(game=game_id, seed=seed * 100_003 + len(matchups), seats=dict(zip(players, combo))))
        texts += [LLMAgent.DEFAULT_SYSTEM_PROMPT.format(player=p, game=game_id) for p in players]

    def pool(m: Matchup):
        return {pid: make_fixed_policy(pid, m.game) for pid in set(m.seats.values())}

    episodes = asyncio.run(play_many(matchups, pool, concurrency=256))
    seen: set[str] = set()
    used: dict[str, int] = {}
    for ep in episodes:
        for text in (x for t in ep.turns for x in (t.observation, t.action)):
            if text in seen or used.get(ep.matchup.game, 0) + len(text) > max_chars_per_game:
                continue
            seen.add(text)
            used[ep.matchup.game] = used.get(ep.matchup.game, 0) + len(text)
            texts.append(text)
    return texts


def resolve_model_path(path: str | None, tiny: TinyModelConfig, cache_dir: Path | None = None, warm_start=None) -> str:
    """A user's model path/hub id as given, else the cached tiny model (built on first use),
    warm-started by imitation of the scripted bots when ``warm_start`` (an ImitationConfig) is given."""
    if path:
        return path
    base = cached_tiny_model(tiny, game_text_corpus, cache_dir=cache_dir, corpus_key=corpus_key())
    if warm_start is None:
        return str(base)
    from arena.tiny import default_cache_dir
    from arena.trainers.imitation import cached_warm_start

    return str(cached_warm_start(base, warm_start, cache_dir if cache_dir is not None else default_cache_dir()))


def corpus_key() -> str:
    """Names the tokenizer corpus: the Arena version and the games that have bots (their ids carry rule versions)."""
    from arena import __version__

    return ",".join([__version__, f"corpus{CORPUS_FORMAT}"] + [g for g in registered_games() if scripted_bots(g)])
