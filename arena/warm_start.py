"""Warm starts: what a run does to its model before any reinforcement learning.

A warm start is a named recipe with a typed config and a builder; a run config
picks one with ``model.warm_start.recipe`` (the default, ``imitation``, clones
the bots that the run's games declare). A game package may register its own:
collaborative QA's knowledge model is one. Builders return the directory of
the warm-started model, cached by their config.

    register_warm_start("imitation", ImitationConfig, build_imitation)
    cfg = warm_start_config({"recipe": "imitation", "steps": 100})
    path = build_warm_start(WarmStartRequest(tiny=..., config=cfg, cache_dir=..., games=[...]))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic


@dataclass(frozen=True)
class WarmStartRequest:
    """What a builder gets: the tiny model's shape, its own config, the model cache, and the run's game ids."""

    tiny: Any
    config: pydantic.BaseModel
    cache_dir: Path
    games: tuple[str, ...]


@dataclass(frozen=True)
class WarmStart:
    name: str
    config: type[pydantic.BaseModel]
    build: Callable[[WarmStartRequest], Path]
    #: whether the builder trains the tiny model from scratch with its own tokenizer (true) or
    #: fine-tunes the run's tiny model built on the run's games' text (false)
    own_base: bool = False
    #: what the recipe taught, as (prompt ids, target ids) examples, given the built model's directory and
    #: the recipe's config: ``trainer.replay_coef`` mixes them into every reinforcement-learning update
    #: (a pretraining mix), so that what the warm start taught is kept while self-play moves the choices
    replay: Callable[[Path, pydantic.BaseModel], list[tuple[list[int], list[int]]]] | None = None


WARM_STARTS: dict[str, WarmStart] = {}


def register_warm_start(
    name: str,
    config: type[pydantic.BaseModel],
    build: Callable[[WarmStartRequest], Path],
    *,
    own_base: bool = False,
    replay: Callable[[Path, pydantic.BaseModel], list[tuple[list[int], list[int]]]] | None = None,
) -> None:
    """Register a warm-start recipe. ``config`` must accept a ``recipe`` key equal to ``name``; ``replay``
    (optional) returns the examples it taught, for ``trainer.replay_coef``."""
    WARM_STARTS[name] = WarmStart(name, config, build, own_base, replay)


def _builtin() -> None:
    """Register the default warm start, imitation of the run's games' bots (on first use: it imports torch)."""
    if "imitation" in WARM_STARTS:
        return
    from arena.trainers.imitation import ImitationConfig, cached_warm_start, imitation_replay

    def build(request: WarmStartRequest) -> Path:
        return cached_warm_start(request.tiny, request.config, request.cache_dir, request.games)

    register_warm_start("imitation", ImitationConfig, build, replay=imitation_replay)


def warm_start_config(value: Any) -> pydantic.BaseModel | None:
    """Validate ``model.warm_start``: None, or a mapping whose ``recipe`` (default ``imitation``) names a registered recipe."""
    if value is None:
        return None
    _builtin()
    if isinstance(value, pydantic.BaseModel):
        name = getattr(value, "recipe", None)
        if name in WARM_STARTS and isinstance(value, WARM_STARTS[name].config):
            return value
        raise ValueError(f"not a warm-start config: {type(value).__name__}")
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping with a 'recipe' key (one of {', '.join(sorted(WARM_STARTS))}) or null")
    name = value.get("recipe", "imitation")
    if name not in WARM_STARTS:
        raise ValueError(f"unknown warm-start recipe {name!r}; registered: {', '.join(sorted(WARM_STARTS))} (a game's own: list its module under `imports:`)")
    return WARM_STARTS[name].config.model_validate({**value, "recipe": name})


def warm_start(name: str) -> WarmStart:
    """A registered warm-start recipe by name (the built-in one included)."""
    _builtin()
    return WARM_STARTS[name]


def replay_examples(config: pydantic.BaseModel, model_dir: str | Path) -> list[tuple[list[int], list[int]]]:
    """The examples the warm start ``config`` taught the model in ``model_dir`` (``WarmStart.replay``)."""
    recipe = warm_start(config.recipe)
    if recipe.replay is None:
        raise ValueError(f"warm-start recipe {recipe.name!r} has no examples to replay")
    return recipe.replay(Path(model_dir), config)


def build_warm_start(request: WarmStartRequest) -> Path:
    _builtin()
    return WARM_STARTS[request.config.recipe].build(request)


def game_ids(games: Sequence[Any]) -> tuple[str, ...]:
    """The distinct game ids of a run's entries (ids or entries), in the order the run lists them."""
    return tuple(dict.fromkeys(g if isinstance(g, str) else g.id for g in games))
