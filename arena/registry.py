"""The one registry: game ids -> game packages (Gymnasium's ``EnvSpec`` / ``make``, plus a game's own parts).

A game package registers itself once, declaring everything Arena needs to run
it with no other edit::

    arena.register(
        "sealed_bid-v0", SealedBidAuction,
        description="Two bidders, one sealed bid each.",
        bots={"truthful": TruthfulBidder, "shade": ShadingBidder},   # seated as scripted/<name>
        report=auction_report,                                      # optional hooks, see GameSpec
    )

Where games come from, in order: the games Arena ships (``arena.environments``),
installed distributions that declare an entry point in the group
``arena.games`` (the entry point names a module to import, or a function to
call, that registers its games), and the modules a run config lists under
``imports:`` (:func:`import_modules`, called before the config is validated,
in the driver and in every Ray worker).
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pettingzoo import AECEnv

if TYPE_CHECKING:
    from arena.records import Episode

log = logging.getLogger(__name__)

_ID = re.compile(r"^[a-z][a-z0-9_]*-v\d+$")
_BOT = re.compile(r"^[a-z][a-z0-9_]*$")

#: the entry-point group an installed distribution declares its games in
ENTRY_POINT_GROUP = "arena.games"

#: a bot: a Policy class constructible with no arguments, or "module:Class"
BotRef = "type[Policy] | str"
#: one seating: player -> policy id
Seats = dict[str, str]


@dataclass(frozen=True)
class GameReport:
    """What a game's ``report`` hook returns after a run: renderables to print (rich tables,
    strings) and a short name for each, already logged to the active MLflow run by the hook."""

    renderables: list[Any] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportInput:
    """A run's evaluation episodes of one game, handed to the game's ``report`` hook.

    ``before``/``after`` hold this game's entries' episodes (``after`` is empty for a run that does
    not train); ``labels_*`` name each episode's game entry (``GameEntry.label``); ``entries`` maps
    each of this game's entry labels to its kwargs. ``models`` maps ``start`` to the model directory the
    run's model policies started from (where the run has model policies) and each trained policy id to
    its directory in the run's last checkpoint (a full model, or a LoRA adapter in peft's format)."""

    game: str
    before: list[Episode]
    labels_before: list[str]
    after: list[Episode]
    labels_after: list[str]
    entries: dict[str, dict[str, Any]]
    run_name: str
    step: int
    models: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalRequest:
    """``arena eval``'s arguments, handed to a game's ``evaluate`` hook.

    ``target``: a config file or a trained model directory; ``overrides``: ``key=value`` config
    overrides; ``models``: more trained model directories to evaluate; ``options``: the game's own
    options (``-o key=value``, repeatable: each key maps to its values in order)."""

    target: str
    overrides: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    options: dict[str, list[str]] = field(default_factory=dict)
    limit: int | None = None
    baselines: bool = True
    temperature: float = 0.0


@dataclass(frozen=True)
class TreeHooks:
    """How tree branching (``trainer.recipe=dpo``, :mod:`arena.trainers.trees`) scores a continuation and names a pair.

    - ``score(episode, player) -> float``: the branched player's outcome of one rollout (default:
      its return, ``episode.returns[player]``); a continuation's score is the mean over its rollouts.
    - ``label(env, player, action) -> str``: a preference pair's label (default ``"other"``).
      ``env`` is the game at the branch point (replayed from the seed, before the branched move;
      read it, do not step it), ``player`` the branched player, ``action`` the chosen continuation's
      text (possibly an illegal move).
    - ``labels``: every label ``label`` may give; the round's statistics count pairs per label."""

    score: Callable[[Episode, str], float] | None = None
    label: Callable[[AECEnv, str, str], str] | None = None
    labels: tuple[str, ...] = ("other",)


@dataclass(frozen=True)
class GameSpec:
    """One registered game: how to build it, and the parts its package declares.

    - ``bots`` / ``critics``: scripted policies (``scripted/<name>``) and scripted critics for
      the in-context critic loop, each a class constructible with no arguments or ``"module:Class"``;
    - ``demonstrations``: seatings of bots whose play is the default warm start (imitation) of a run
      playing this game, listed with repeats where a game's turns should weigh more;
    - ``corpus_bots``: the bots whose play (every seating of them) trains the tiny model's
      tokenizer (default: all ``bots``);
    - ``report(ReportInput) -> GameReport``: the game's own tables, metrics and plots after a run;
    - ``evaluate(EvalRequest, console)``: the game's ``arena eval`` (raise ValueError for bad input);
    - ``check_entry(entry, run_config)``: config-time checks of one game entry (raise ValueError);
    - ``tree``: scoring and labels for tree branching (DPO from trees);
    - ``feedback_filter(text) -> (text, n_cut)``: what the critic loop's feedback may not say;
    - ``teams(episode) -> [[player, ...], ...]``: the sides of an episode for ratings (players who
      share a reward); default: every player a side of its own (:mod:`arena.ratings`).
    """

    id: str
    entry_point: Callable[..., AECEnv] | str
    description: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    bots: Mapping[str, Any] = field(default_factory=dict)
    critics: Mapping[str, Any] = field(default_factory=dict)
    demonstrations: tuple[Seats, ...] = ()
    corpus_bots: tuple[str, ...] | None = None
    report: Callable[[ReportInput], GameReport | None] | None = None
    evaluate: Callable[..., Any] | None = None
    check_entry: Callable[[Any, Any], None] | None = None
    tree: TreeHooks | None = None
    feedback_filter: Callable[[str], tuple[str, int]] | None = None
    teams: Callable[[Any], list[list[str]]] | None = None

    def load(self) -> Callable[..., AECEnv]:
        return _resolve(self.entry_point)

    def make(self, **kwargs: Any) -> AECEnv:
        return self.load()(**{**self.kwargs, **kwargs})

    def bot_class(self, name: str) -> type:
        return _resolve(self.bots[name])

    def critic_class(self, name: str) -> type:
        return _resolve(self.critics[name])


def _resolve(ref: Any) -> Any:
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


_REGISTRY: dict[str, GameSpec] = {}


def register(
    id: str,
    entry_point: Callable[..., AECEnv] | str,
    description: str = "",
    kwargs: dict[str, Any] | None = None,
    *,
    bots: Mapping[str, Any] | None = None,
    critics: Mapping[str, Any] | None = None,
    demonstrations: Sequence[Seats] = (),
    corpus_bots: Sequence[str] | None = None,
    report: Callable[[ReportInput], GameReport | None] | None = None,
    evaluate: Callable[..., Any] | None = None,
    check_entry: Callable[[Any, Any], None] | None = None,
    tree: TreeHooks | None = None,
    feedback_filter: Callable[[str], tuple[str, int]] | None = None,
    teams: Callable[[Any], list[list[str]]] | None = None,
    override: bool = False,
) -> GameSpec:
    """Register a game under a versioned id such as ``negotiation-v0``.

    ``entry_point`` is a class or factory returning a PettingZoo ``AECEnv`` (an
    Arena :class:`~arena.game.TextGame` or any other AEC environment with text
    observations), or a ``"module:attr"`` string imported on first use. The
    keyword arguments declare the game's own parts (see :class:`GameSpec`).
    Registering the same id again with the same entry point (a module imported
    twice, e.g. by ``imports:`` and an entry point) is a no-op.
    """
    if not _ID.match(id):
        raise ValueError(f"game id {id!r} must look like 'name-v0' (lower case, a version suffix)")
    bots, critics = dict(bots or {}), dict(critics or {})
    for kind, table in (("bot", bots), ("critic", critics)):
        for name in table:
            if not _BOT.match(name):
                raise ValueError(f"{id}: {kind} name {name!r} must be lower case letters, digits and '_' (it is seated as scripted/{name})")
    if corpus_bots is not None:
        unknown = sorted(set(corpus_bots) - set(bots))
        if unknown:
            raise ValueError(f"{id}: corpus_bots names no declared bot: {', '.join(unknown)}")
    spec = GameSpec(
        id=id,
        entry_point=entry_point,
        description=description,
        kwargs=dict(kwargs or {}),
        bots=bots,
        critics=critics,
        demonstrations=tuple(dict(s) for s in demonstrations),
        corpus_bots=tuple(corpus_bots) if corpus_bots is not None else None,
        report=report,
        evaluate=evaluate,
        check_entry=check_entry,
        tree=tree,
        feedback_filter=feedback_filter,
        teams=teams,
    )
    old = _REGISTRY.get(id)
    if old is not None and not override:
        if _same_entry_point(old.entry_point, entry_point):
            _REGISTRY[id] = spec
            return spec
        raise ValueError(f"game id {id!r} is already registered (by {_describe(old.entry_point)}); pass override=True to replace it")
    _REGISTRY[id] = spec
    return spec


def _same_entry_point(a: Any, b: Any) -> bool:
    return a is b or _describe(a) == _describe(b)


def _describe(entry_point: Any) -> str:
    if isinstance(entry_point, str):
        return entry_point
    return f"{getattr(entry_point, '__module__', '?')}:{getattr(entry_point, '__qualname__', repr(entry_point))}"


def spec(id: str) -> GameSpec:
    _load_games()
    try:
        return _REGISTRY[id]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(f"unknown game id {id!r}; registered games: {known} (a game of your own: list its module under `imports:`)") from None


def make(id: str, **kwargs: Any) -> AECEnv:
    """Build a registered game: ``arena.make("negotiation-v0", max_rounds=6)``."""
    return spec(id).make(**kwargs)


def registered_games() -> dict[str, GameSpec]:
    _load_games()
    return dict(sorted(_REGISTRY.items()))


# ----- where games come from -----------------------------------------------------------------------
_loaded = False


def _load_games() -> None:
    """The shipped games, then every installed ``arena.games`` entry point (once per process)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    importlib.import_module("arena.environments")
    load_entry_points()


def load_entry_points() -> list[str]:
    """Load the ``arena.games`` entry points of installed distributions; returns their names.

    An entry point names a module (imported: registering is its side effect) or a callable
    (called with no arguments). One that fails is reported, with its distribution, and skipped."""
    from importlib.metadata import entry_points

    names = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type(sys)):
                obj()
        except Exception as e:  # a broken third-party package must not take every game down
            log.warning("arena.games entry point %r (%s) failed to load: %s", ep.name, ep.value, e)
            continue
        names.append(ep.name)
    return names


def import_modules(modules: Sequence[str], search_paths: Sequence[str | Path] = ()) -> None:
    """Import the modules of a config's ``imports:`` (which register their games, bots, recipes).

    ``search_paths`` (e.g. the config file's folder) are put on ``sys.path`` first, so a module
    next to the config imports without installing it. Raises ImportError naming the module."""
    for p in search_paths:
        p = str(Path(p).resolve())
        if p not in sys.path:
            sys.path.insert(0, p)
    _load_games()
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:
            raise ImportError(f"cannot import {name!r}: {type(e).__name__}: {e}") from e


def import_paths(modules: Sequence[str]) -> list[str]:
    """The ``sys.path`` entries the (already imported) ``modules`` were found under, for a worker
    process that must import them too (a Ray worker does not start in the driver's folder)."""
    out = []
    for name in modules:
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        if not file:
            continue
        root = Path(file).resolve().parent
        for _ in range(name.count(".") + (Path(file).name == "__init__.py")):
            root = root.parent
        if str(root) not in out:
            out.append(str(root))
    return out


# ----- a game's bots ------------------------------------------------------------------------------
def scripted_bots(game_id: str) -> dict[str, Any]:
    """The game's declared bots: name -> class (or "module:Class")."""
    return dict(spec(game_id).bots)


def scripted_critics(game_id: str) -> dict[str, Any]:
    return dict(spec(game_id).critics)
