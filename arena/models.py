"""Where a run's model comes from: a local path or hub id, or the tiny model built here.

The tiny model's tokenizer is trained on text the run's own games produce:
the bots each game declares (its ``corpus_bots``, default all) play every
seating of them, and their observations and moves, plus the agent's system
prompts, make the corpus. A user's game is no different from a shipped one.
The default warm start then imitates the bots those games declare
(:mod:`arena.trainers.imitation`); a game package may register a warm start
of its own (:mod:`arena.warm_start`).
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arena.agents.catalog import make_fixed_policy
from arena.agents.llm import LLMAgent
from arena.records import Matchup
from arena.registry import make, spec
from arena.rollout import play_many
from arena.tiny import TinyModelConfig, cached_tiny_model, default_cache_dir
from arena.warm_start import WarmStartRequest, build_warm_start, game_ids
from arena.warm_start import warm_start as warm_start_recipe

if TYPE_CHECKING:
    from arena.config import RunConfig

#: the tokenizer's corpus: episodes per seating of a game's corpus bots
EPISODES_PER_PAIRING = 3
#: a game with more seatings of its corpus bots than this plays a seeded sample of them
MAX_CORPUS_SEATINGS = 256


def game_text_corpus(games: Sequence[str], episodes_per_pairing: int = EPISODES_PER_PAIRING, seed: int = 0) -> list[str]:
    """Observations, moves and prompts from scripted play of ``games`` (ids, in sorted order):
    every seating of each game's corpus bots, ``episodes_per_pairing`` times."""
    texts: list[str] = []
    matchups: list[Matchup] = []
    for game_id in sorted(set(games)):
        s = spec(game_id)
        bots = [b for b in s.bots if s.corpus_bots is None or b in s.corpus_bots]
        players = list(make(game_id).possible_agents)
        names = [f"scripted/{b}" for b in bots] or ["random"]
        combos = list(itertools.product(names, repeat=len(players)))
        if len(combos) > MAX_CORPUS_SEATINGS:
            import numpy as np

            keep = np.random.default_rng([seed, len(matchups)]).choice(len(combos), MAX_CORPUS_SEATINGS, replace=False)
            combos = [combos[i] for i in sorted(keep)]
        for combo in combos:
            for _ in range(episodes_per_pairing):
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


def corpus_key(games: Sequence[str]) -> str:
    """Names the tokenizer corpus: the Arena version and the run's games (their ids carry rule versions)."""
    from arena import __version__

    return ",".join([__version__, *sorted(set(games))])


def resolve_model_path(
    path: str | None,
    tiny: TinyModelConfig,
    cache_dir: Path | None = None,
    warm_start: Any = None,
    *,
    games: Sequence[str] = (),
) -> str:
    """A user's model path/hub id as given, else the cached tiny model for ``games`` (built on
    first use, its tokenizer trained on their text), warm-started by ``warm_start`` (a registered
    warm-start config, :mod:`arena.warm_start`) when one is given."""
    if path:
        return path
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    ids = game_ids(games)
    if warm_start is not None and warm_start_recipe(warm_start.recipe).own_base:
        return str(build_warm_start(WarmStartRequest(tiny=tiny, config=warm_start, cache_dir=cache, games=ids)))
    if not ids:
        raise ValueError("the tiny model needs the run's games: its tokenizer is trained on their text")
    base = cached_tiny_model(tiny, lambda: game_text_corpus(ids), cache_dir=cache, corpus_key=corpus_key(ids))
    if warm_start is None:
        return str(base)
    return str(build_warm_start(WarmStartRequest(tiny=base, config=warm_start, cache_dir=cache, games=ids)))


def run_model_path(cfg: RunConfig) -> str:
    """The model a run config plays: ``model.path``, or the tiny model of its games (``model.games``,
    default the games it plays) with its warm start."""
    games = cfg.model.games or [g.id for g in cfg.games]
    return resolve_model_path(cfg.model.path, cfg.model.tiny, warm_start=cfg.model.warm_start, games=games)


# ----- checking model.path before any work -------------------------------------------------------
_LOCAL = re.compile(r"^(?:[/~.]|[A-Za-z]:[\\/])")


def check_model_path(path: str) -> str:
    """``model.path`` must be a local model directory (with a ``config.json``) or a hub id
    (``name`` or ``org/name``) that resolves from the local Hugging Face cache or the hub.
    Raises ValueError naming the problem; nothing is downloaded here."""
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ValueError(f"{path!r} is a file, not a model directory")
        if not (p / "config.json").is_file():
            raise ValueError(f"{path!r} has no config.json: not a Hugging Face model directory")
        return path
    if _LOCAL.match(path) or path.count("/") > 1 or "\\" in path:
        raise ValueError(f"no such model directory: {path!r}")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(path)
    except HFValidationError as e:
        raise ValueError(f"{path!r} is neither a local model directory nor a valid hub id: {e}") from None
    return path
