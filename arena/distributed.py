"""The Ray runtime: rollout workers, engine actors and Ray Train learners playing a run's rounds.

    cluster: {mode: ray, rollout_workers: 2, engines: 2, learner_workers: 2}   # in a run's config

:class:`RayRuntime` is what :func:`arena.experiment.run` uses when
``cluster.mode`` is ``ray``; the round loop is the same as in one process.
The pieces, each a plain class with typed methods:

* :class:`EngineGroup` — one model policy's engines: ``cluster.engines``
  :class:`~arena.engines.actor.EngineActor` processes (HF or vLLM) serving one
  weights version. It syncs them (:func:`arena.weight_sync.sync_actors`: the
  weights cross the object store once, every engine confirms the version and
  scores the probe), restarts one that died and brings it to the current
  version, and serves code in the driver through the
  :class:`~arena.engines.base.Engine` interface.
* :class:`EngineRouter` — in each rollout worker: sends an episode's first
  request to the engine with the fewest requests in flight and the episode's
  later requests to the same engine (its prompts grow turn by turn, so an
  engine with a prefix cache reuses them); a request whose engine died goes to
  another engine, where it samples the same tokens: same weights version, same
  per-request seed.
* :class:`RolloutWorker` — an async actor that plays many episodes at once
  with :func:`arena.rollout.play_many` and streams every finished episode back
  as soon as it ends.
* :class:`EpisodeLedger` — a round's episode ids: each expected id received
  exactly once, or the round fails.

LoRA policies (``model.adapter: lora``). Every policy is an adapter of one
frozen base, so one engine group serves them all: each engine actor holds the
base once and every policy's adapter, and a request names its adapter (a
policy's agent plays through an :class:`~arena.adapters.AdapterView` of the
group; in the rollout workers, through a :class:`RoutedEngine` that carries the
adapter's name). One Ray Train worker group trains every adapter
(:class:`~arena.trainers.ray_learner.RayAdapterLearners`). A sync sends one
adapter's tensors and checks each engine on the probe scored through that
adapter; an engine that dies comes back with every adapter at its current
version.

Faults. A rollout worker that dies mid-round loses only its unfinished
episodes: the ones it already streamed back are kept, the rest are played
again on another worker (same matchups, seeds and weights, so the same
episodes), and a new worker takes its place. An engine that dies is found by
the driver (requests to it fail over to the others meanwhile), restarted,
synced to the current weights version and handed to every worker. Each fault
is logged to the run: a ``faults/<kind>`` metric and a line in ``faults.jsonl``.

Resources. Every actor asks Ray for a fraction of a CPU (``cluster.*_cpus``):
a scheduling share, not a thread count. The run starts a Ray instance of its
own unless ``cluster.address`` names a cluster to join (``auto``), or Ray is
already initialised in the process.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError

from arena import tracking
from arena.adapters import AdapterView
from arena.agents.base import Policy
from arena.agents.catalog import make_fixed_policy
from arena.agents.llm import LLMAgent
from arena.engines.actor import EngineActor, init_ray
from arena.engines.base import Completion, Engine, SamplingParams
from arena.records import Episode, Matchup
from arena.registry import import_modules, import_paths
from arena.rollout import play_many
from arena.weight_sync import EngineDied, Probe, SyncReport, check_probe, make_probe, sync_actors

logger = logging.getLogger(__name__)

#: seconds between the driver's health checks of the engines while a round plays
ENGINE_CHECK_S = 1.0
#: how long a request waits for any engine of its policy to be alive again
NO_ENGINE_WAIT_S = 300.0


# ----- routing ---------------------------------------------------------------------------------------
def least_loaded(in_flight: Sequence[int], alive: Sequence[bool], assigned: Sequence[int], offset: int = 0) -> int:
    """The engine for a new episode: among live engines, the fewest requests in flight, then the
    fewest episodes assigned so far, then the first counting from ``offset`` (rollout workers
    start at different engines). Raises ``LookupError`` when no engine is alive."""
    n = len(alive)
    live = [i for i in range(n) if alive[i]]
    if not live:
        raise LookupError("no engine is alive")
    return min(live, key=lambda i: (in_flight[i], assigned[i], (i - offset) % n))


class RoutedEngine(Engine):
    """One episode's handle on an :class:`EngineRouter`: every request it makes goes to one engine,
    and names ``adapter`` (a LoRA policy of a group that serves several; None: the group's weights)."""

    def __init__(self, router: EngineRouter, adapter: str | None = None) -> None:
        self.router = router
        self.adapter = adapter
        self.tokenizer = router.tokenizer
        #: the engine serving this episode (None until its first request)
        self.engine_index: int | None = None

    @property
    def version(self) -> int:  # type: ignore[override]
        return self.router.version if self.adapter is None else self.router.adapter_versions[self.adapter]

    async def generate(self, prompt_ids: list[int], params: SamplingParams, seed: int) -> Completion:
        return await self.router.generate(self, prompt_ids, params, seed, self.adapter)

    def generate_batch(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int]) -> list[Completion]:
        i = least_loaded(self.router.in_flight, self.router.alive, self.router.assigned)
        adapters = None if self.adapter is None else [self.adapter] * len(prompts)
        return ray.get(self.router.actors[i].generate_batch.remote(prompts, params, seeds, adapters))


class EngineRouter:
    """Sends one policy's requests to its engine actors (see the module docstring).

    ``actors`` are :class:`~arena.engines.actor.EngineActor` handles. ``version``
    is the weights version they serve, set by the driver before each round (it
    is what turns record as ``policy_version``); ``adapter_versions`` the same
    for each LoRA adapter they serve.
    """

    def __init__(self, actors: Sequence[Any], tokenizer: Any, *, version: int = 0, offset: int = 0, wait_s: float = NO_ENGINE_WAIT_S) -> None:
        self.actors = list(actors)
        self.tokenizer = tokenizer
        self.version = version
        #: LoRA adapter name -> the version its engines serve (a group that serves adapters)
        self.adapter_versions: dict[str, int] = {}
        self.offset = offset
        self.wait_s = wait_s
        self.alive = [True] * len(self.actors)
        self.in_flight = [0] * len(self.actors)
        #: episodes that started on each engine
        self.assigned = [0] * len(self.actors)
        #: requests sent again because their engine died
        self.retries = 0
        #: episodes moved to another engine because theirs died
        self.moved = 0

    def view(self, adapter: str | None = None) -> RoutedEngine:
        """A handle for one episode (its requests stay on one engine), of LoRA adapter ``adapter`` if given."""
        return RoutedEngine(self, adapter)

    def replace(self, index: int, actor: Any) -> None:
        """Engine ``index`` is now ``actor`` (a restarted engine, already serving the current weights)."""
        self.actors[index] = actor
        self.alive[index] = True

    async def generate(self, view: RoutedEngine | None, prompt_ids: list[int], params: SamplingParams, seed: int, adapter: str | None = None) -> Completion:
        """A completion from ``view``'s engine (the least loaded one for ``view=None``), failing over if
        it died; ``adapter`` names the LoRA adapter that serves it (None: the engine's weights)."""
        while True:
            i = await self._engine_for(view)
            actor = self.actors[i]
            self.in_flight[i] += 1
            try:
                return await actor.generate.remote(list(prompt_ids), params, int(seed), adapter)
            except RayActorError:
                if self.actors[i] is actor:  # not already replaced by a restarted engine
                    self.alive[i] = False
                self.retries += 1
                logger.warning("engine %d died during a request; sending it to another engine", i)
            finally:
                self.in_flight[i] -= 1

    async def _engine_for(self, view: RoutedEngine | None) -> int:
        if view is not None and view.engine_index is not None and self.alive[view.engine_index]:
            return view.engine_index
        deadline = time.monotonic() + self.wait_s
        while not any(self.alive):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no engine of this policy has been alive for {self.wait_s:g} s")
            await asyncio.sleep(0.1)
        i = least_loaded(self.in_flight, self.alive, self.assigned, self.offset)
        if view is not None:
            if view.engine_index is not None:
                self.moved += 1
            view.engine_index = i
        self.assigned[i] += 1
        return i

    def stats(self) -> dict[str, Any]:
        return {"assigned": list(self.assigned), "retries": self.retries, "moved": self.moved}


# ----- who sits where, as data a rollout worker can rebuild ------------------------------------------
@dataclass(frozen=True)
class ModelSeat:
    """A seat played by an LLM agent on an engine group (through one of its LoRA adapters, if ``adapter``)."""

    group: str
    policy_id: str
    sampling: SamplingParams
    history_turns: int
    max_prompt_tokens: int
    system_prompt: str
    adapter: str | None = None


@dataclass(frozen=True)
class FixedSeat:
    """A seat played by a fixed policy (a scripted bot), rebuilt by name in the worker."""

    policy_id: str


SeatSpec = ModelSeat | FixedSeat


def seat_specs(pools: Mapping[str, Mapping[str, Policy]], matchups: Sequence[Matchup]) -> dict[str, dict[str, SeatSpec]]:
    """Per game id, per seated policy id: how a rollout worker rebuilds that policy.

    ``pools`` maps game id -> policy id -> policy, as the experiment builds them:
    LLM agents on :class:`EngineGroup` engines (or on an :class:`~arena.adapters.AdapterView`
    of one: a LoRA policy) become :class:`ModelSeat`, anything else a :class:`FixedSeat` made
    again with ``make_fixed_policy``.
    """
    specs: dict[str, dict[str, SeatSpec]] = {}
    for m in matchups:
        game = specs.setdefault(m.game, {})
        for pid in m.seats.values():
            if pid in game:
                continue
            policy = pools[m.game][pid]
            if isinstance(policy, LLMAgent):
                e, adapter = policy.engine, None
                if isinstance(e, AdapterView):  # a LoRA policy: its requests name its adapter
                    e, adapter = e.engine, e.name
                if not isinstance(e, EngineGroup):
                    raise TypeError(f"policy {pid!r} plays on {type(e).__name__}: on Ray, model policies need an EngineGroup (RayRuntime.engine)")
                game[pid] = ModelSeat(e.name, policy.policy_id, policy.sampling, policy.history_turns, policy.max_prompt_tokens, policy.system_prompt, adapter)
            else:
                game[pid] = FixedSeat(pid)
    return specs


# ----- rollout workers -------------------------------------------------------------------------------
@ray.remote(num_cpus=0.25)
class RolloutWorker:
    """Plays episodes on the engines it is given; start with ``RolloutWorker.options(num_cpus=...).remote(...)``.

    ``engines`` maps an engine group's name to its actors, ``tokenizers`` the
    group's name to its tokenizer; ``offset`` staggers where new episodes start.
    """

    def __init__(
        self,
        name: str,
        engines: Mapping[str, Sequence[Any]],
        tokenizers: Mapping[str, Any],
        offset: int = 0,
        imports: Sequence[str] = (),
        import_paths: Sequence[str] = (),
    ) -> None:
        import_modules(imports, import_paths)  # the run's `imports:` register its games here too
        self.name = name
        self.routers = {g: EngineRouter(actors, tokenizers[g], offset=offset) for g, actors in engines.items()}
        self.fixed: dict[tuple[str, str], Policy] = {}

    async def ready(self) -> str:
        return self.name

    async def replace_engine(self, group: str, index: int, actor: Any) -> None:
        self.routers[group].replace(index, actor)

    async def routing(self) -> dict[str, dict[str, Any]]:
        """Per engine group: episodes started on each engine, requests retried, episodes moved."""
        return {g: r.stats() for g, r in self.routers.items()}

    async def play(
        self,
        tasks: list[tuple[str, Matchup]],
        seats: dict[str, dict[str, SeatSpec]],
        versions: dict[str, int],
        concurrency: int,
        max_steps: int,
        adapter_versions: dict[str, dict[str, int]] | None = None,
    ):
        """Play ``(episode id, matchup)`` tasks, up to ``concurrency`` at once; yields each episode when it ends.

        ``versions``: per engine group, the weights version its engines serve; ``adapter_versions``:
        per group that serves LoRA adapters, each adapter's."""
        for group, version in versions.items():
            self.routers[group].version = version
        for group, adapters in (adapter_versions or {}).items():
            self.routers[group].adapter_versions = dict(adapters)
        finished: asyncio.Queue[Episode] = asyncio.Queue()
        runner = asyncio.ensure_future(
            play_many(
                [m for _, m in tasks],
                lambda m: self._policies(m, seats[m.game]),
                concurrency=concurrency,
                episode_ids=[i for i, _ in tasks],
                on_episode=finished.put_nowait,
                max_steps=max_steps,
            )
        )
        for _ in tasks:
            getter = asyncio.ensure_future(finished.get())
            await asyncio.wait({getter, runner}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():  # play_many failed: its exception ends the stream
                getter.cancel()
                runner.result()
            yield getter.result()
        await runner

    def _policies(self, matchup: Matchup, seats: Mapping[str, SeatSpec]) -> dict[str, Policy]:
        """The policies of one episode: a fresh agent (and engine view) per model seat, shared bots."""
        out: dict[str, Policy] = {}
        for pid in set(matchup.seats.values()):
            spec = seats[pid]
            if isinstance(spec, ModelSeat):
                out[pid] = LLMAgent(
                    self.routers[spec.group].view(spec.adapter),
                    spec.policy_id,
                    sampling=spec.sampling,
                    history_turns=spec.history_turns,
                    max_prompt_tokens=spec.max_prompt_tokens,
                    system_prompt=spec.system_prompt,
                )
            else:
                key = (matchup.game, spec.policy_id)
                if key not in self.fixed:
                    self.fixed[key] = make_fixed_policy(spec.policy_id, matchup.game)
                out[pid] = self.fixed[key]
        return out


# ----- accounting ----------------------------------------------------------------------------------------
class EpisodeAccountingError(RuntimeError):
    """A round that did not receive every expected episode exactly once."""


class EpisodeLedger:
    """A round's episode ids: each expected id must arrive exactly once."""

    def __init__(self, ids: Sequence[str]) -> None:
        if len(set(ids)) != len(ids):
            repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
            raise ValueError(f"episode ids must be unique within a round; repeated: {repeated[:5]}")
        self.ids = list(ids)
        self._expected = set(ids)
        self.received: dict[str, Episode] = {}
        #: episodes that arrived again after their first copy (dropped, never counted twice)
        self.duplicates = 0
        #: episodes handed to another worker after theirs died
        self.rerun = 0

    def receive(self, episode: Episode) -> bool:
        """Record ``episode``; False (and counted as a duplicate) if its id already arrived."""
        eid = episode.episode_id
        if eid not in self._expected:
            raise EpisodeAccountingError(f"episode {eid!r} was never asked for in this round")
        if eid in self.received:
            self.duplicates += 1
            return False
        self.received[eid] = episode
        return True

    def missing(self, ids: Sequence[str] | None = None) -> list[str]:
        return [i for i in (self.ids if ids is None else ids) if i not in self.received]

    def episodes(self) -> list[Episode]:
        """Every episode in the order asked for; :class:`EpisodeAccountingError` if any is missing."""
        missing = self.missing()
        if missing:
            raise EpisodeAccountingError(f"{len(missing)} of {len(self.ids)} episodes never arrived: {missing[:5]}")
        return [self.received[i] for i in self.ids]

    def metrics(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}/episodes_expected": float(len(self.ids)),
            f"{prefix}/episodes_received": float(len(self.received)),
            f"{prefix}/episodes_rerun": float(self.rerun),
            f"{prefix}/duplicates_dropped": float(self.duplicates),
        }


# ----- engines ---------------------------------------------------------------------------------------------
class AdapterActor:
    """One LoRA adapter of an :class:`~arena.engines.actor.EngineActor`, with the two methods
    :func:`arena.weight_sync.sync_actors` calls on an actor: ``update_weights.remote(weights, version)``
    loads the adapter's tensors, ``score.remote(...)`` scores the probe through the adapter. So an
    adapter's sync is the full-weights sync: versioned, bounded in time, probe-checked."""

    def __init__(self, actor: Any, adapter: str) -> None:
        self.actor, self.adapter = actor, adapter
        self.update_weights = _Remote(lambda weights, version: actor.update_adapter.remote(adapter, weights, version))
        self.score = _Remote(lambda prompt_ids, continuation_ids, temperature=1.0: actor.score.remote(prompt_ids, continuation_ids, temperature, adapter))


class _Remote:
    """An actor method's ``.remote`` with arguments of its own added (see :class:`AdapterActor`)."""

    def __init__(self, call: Callable[..., Any]) -> None:
        self.remote = call


class EngineGroup(Engine):
    """One model policy's engine actors, all serving the same weights version; or, with LoRA
    (:meth:`add_adapters`), every LoRA policy's adapter on one frozen base, each adapter at its own version.

    For code in the driver it is an :class:`~arena.engines.base.Engine`
    (requests go to the least loaded engine); ``update_weights`` pushes a state
    dict to every engine and checks that they agree on the probe; :meth:`sync`
    pushes a learner's weights and checks every engine against the learner's
    probe log-probabilities. For adapters, :meth:`update_adapter` and
    :meth:`sync_adapter` do the same with one adapter's tensors (an
    :class:`~arena.adapters.AdapterView` of the group is one LoRA policy's engine).
    """

    def __init__(
        self,
        name: str,
        kind: str,
        model_path: str,
        *,
        engines: int = 2,
        num_cpus: float = 0.5,
        num_gpus: float = 0.0,
        options: Mapping[str, Any] | None = None,
        timeout_s: float = 120.0,
        tolerance: float = 1e-3,
        start_timeout_s: float = 600.0,
    ) -> None:
        self.name = name
        self.kind = kind
        self.model_path = model_path
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.options = dict(options or {})
        self.timeout_s, self.tolerance = timeout_s, tolerance
        #: LoRA: the adapters' shape (an arena.adapters.LoraSpec), and adapter name -> the version every engine serves
        self.lora: Any = None
        self.adapter_versions: dict[str, int] = {}
        #: adapter name -> (its tensors as an ObjectRef, the probe logprobs through it every engine must match);
        #: an adapter not here serves its start (B = 0: the base model)
        self._adapters: dict[str, tuple[Any, list[float] | None]] = {}
        self.actors = [self._start() for _ in range(engines)]
        _wait_started([a.version.remote() for a in self.actors], f"{name}: {engines} {kind} engine actors ({num_cpus} CPU each)", start_timeout_s)
        self.tokenizer = ray.get(self.actors[0].tokenizer.remote())
        self.version = 0
        self.probe: Probe = make_probe(self.tokenizer)
        self.router = EngineRouter(self.actors, self.tokenizer)
        self.restarts = 0
        #: engines restarted during a weight push, whose new actors the rollout workers have yet to get
        self.unannounced: list[int] = []
        #: the weights every engine serves (an ObjectRef; None = the model's own files)
        self._weights: Any = None
        # what every engine's probe scoring must match: for the model's own files, the first engine's
        scored = ray.get([self._score_ref(a) for a in self.actors])
        for i, s in enumerate(scored):
            check_probe(self.engine_name(i), 0, s, scored[0], tolerance)
        self._expected: list[float] | None = scored[0]

    def engine_name(self, index: int) -> str:
        return f"{self.name}/engine_{index}"

    def _start(self) -> Any:
        """A new engine actor; in a LoRA group it serves every adapter of the group (at their start, until synced)."""
        return EngineActor.options(num_cpus=self.num_cpus, num_gpus=self.num_gpus).remote(
            self.kind, self.model_path, self.options, self.lora, list(self.adapter_versions)
        )

    # ----- the Engine interface, for code in the driver ------------------------------------------------------
    async def generate(self, prompt_ids: list[int], params: SamplingParams, seed: int, adapter: str | None = None) -> Completion:
        self.router.version = self.version
        out = await self.router.generate(None, prompt_ids, params, seed, adapter)
        self.stats.requests += 1
        self.stats.completion_tokens += len(out.token_ids)
        return out

    def generate_batch(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int], adapters: list[str | None] | None = None) -> list[Completion]:
        return ray.get(self._live_actor().generate_batch.remote(prompts, params, seeds, adapters))

    def score(self, prompt_ids: list[int], continuation_ids: list[int], temperature: float = 1.0, adapter: str | None = None) -> list[float]:
        return ray.get(self._live_actor().score.remote(list(prompt_ids), list(continuation_ids), temperature, adapter))

    def update_weights(self, weights: Any, version: int) -> None:
        """Serve ``weights`` (a state dict or an ObjectRef to one) as ``version`` on every engine;
        the engines must then agree with each other on the probe."""
        self._push(weights if isinstance(weights, ray.ObjectRef) else ray.put(dict(weights)), version, None)

    def sync(self, weights: Any, version: int, learner_logprobs: Sequence[float]) -> SyncReport:
        """Serve a learner's ``weights`` as ``version``: every engine must match ``learner_logprobs`` on :attr:`probe`."""
        return self._push(weights, version, list(learner_logprobs))

    # ----- LoRA adapters ---------------------------------------------------------------------------------------
    def add_adapters(self, lora: Any, names: Sequence[str]) -> None:
        """Serve LoRA adapters ``names`` (shape ``lora``, an :class:`arena.adapters.LoraSpec`) on every
        engine, each at version 0 (the base model until its tensors are pushed); an engine restarted
        later starts with them and is brought to each adapter's current version."""
        names = list(names)
        ray.get([a.add_adapters.remote(lora, names) for a in self.actors])
        self.lora = lora
        self.adapter_versions.update(dict.fromkeys(names, 0))
        self.router.adapter_versions = dict(self.adapter_versions)

    def adapter_state(self, name: str) -> dict[str, Any]:
        """The tensors adapter ``name`` is served with: the last ones pushed, else an engine's (its start)."""
        if name not in self.adapter_versions:
            raise KeyError(f"{self.name} serves no adapter {name!r} (adapters: {sorted(self.adapter_versions)})")
        if name in self._adapters:
            return dict(ray.get(self._adapters[name][0]))
        return ray.get(self._live_actor().adapter_state.remote(name))

    def remove_adapter(self, name: str) -> None:
        """Stop serving adapter ``name`` on every engine (a snapshot dropped from a pool)."""
        ray.get([a.remove_adapter.remote(name) for a in self.actors])
        del self.adapter_versions[name]
        self._adapters.pop(name, None)

    def update_adapter(self, name: str, state: Any, version: int) -> None:
        """Serve ``state`` (adapter tensors, or an ObjectRef to them) as adapter ``name``'s ``version``
        on every engine; the engines must then agree with each other on the probe through it."""
        self._push_adapter(name, state if isinstance(state, ray.ObjectRef) else ray.put(dict(state)), version, None)

    def sync_adapter(self, name: str, weights: Any, version: int, learner_logprobs: Sequence[float]) -> SyncReport:
        """Serve a learner's adapter tensors ``weights`` as adapter ``name``'s ``version``: every engine,
        scoring :attr:`probe` through that adapter, must match ``learner_logprobs``."""
        return self._push_adapter(name, weights, version, list(learner_logprobs))

    # ----- faults ----------------------------------------------------------------------------------------------
    def dead_engines(self, timeout_s: float = 10.0) -> list[int]:
        """Indices of engines whose process is gone (a busy engine still answers: batches run on its own thread)."""
        dead = []
        for i, actor in enumerate(self.actors):
            try:
                ray.get(actor.version.remote(), timeout=timeout_s)
            except RayActorError:
                dead.append(i)
            except ray.exceptions.GetTimeoutError:
                logger.warning("%s did not answer a health check within %g s", self.engine_name(i), timeout_s)
        return dead

    def restart(self, index: int) -> Any:
        """Replace engine ``index`` by a new actor serving the current version (synced and probe-checked); returns it."""
        ray.kill(self.actors[index])  # no-op for a dead one; a hung one must not linger
        actor = self._start()
        name = self.engine_name(index)
        if self._weights is not None:
            sync_actors({name: actor}, self._weights, self.version, self.probe, self._expected, tolerance=self.tolerance, timeout_s=self.timeout_s)
        elif self._expected is not None:  # it loaded the model's own files, as the others did: check the probe alone
            check_probe(name, self.version, ray.get(self._score_ref(actor)), self._expected, self.tolerance)
        for adapter, (weights, expected) in self._adapters.items():  # each adapter at the version the others serve
            version = self.adapter_versions[adapter]
            sync_actors({name: AdapterActor(actor, adapter)}, weights, version, self.probe, expected, tolerance=self.tolerance, timeout_s=self.timeout_s)
        self.actors[index] = actor
        self.router.replace(index, actor)
        self.restarts += 1
        return actor

    # ----- internals -------------------------------------------------------------------------------------------
    def _push_adapter(self, name: str, weights: Any, version: int, expected: list[float] | None) -> SyncReport:
        """:meth:`_push` for one adapter: load its tensors as ``version`` everywhere, restarting an engine that dies meanwhile."""
        if name not in self.adapter_versions:
            raise KeyError(f"{self.name}: no adapter {name!r}; the engines serve {sorted(self.adapter_versions) or 'none'}")
        # a restart meanwhile brings the new engine to this (expected None: checked against itself, then the group)
        self._adapters[name], self.adapter_versions[name] = (weights, expected), int(version)
        for _ in range(len(self.actors) + 1):
            named = {self.engine_name(i): AdapterActor(a, name) for i, a in enumerate(self.actors)}
            try:
                report = sync_actors(named, weights, version, self.probe, expected, tolerance=self.tolerance, timeout_s=self.timeout_s)
            except EngineDied as e:
                logger.warning("%s died during the sync of adapter %s; restarting it", e.engine, name)
                index = int(e.engine.rsplit("_", 1)[1])
                self.restart(index)
                self.unannounced.append(index)
                continue
            self._adapters[name] = (weights, report.reference)
            self.router.adapter_versions = dict(self.adapter_versions)
            return report
        raise RuntimeError(f"{self.name}: engines kept dying during the sync of adapter {name} to version {version}")

    def _push(self, weights: Any, version: int, expected: list[float] | None) -> SyncReport:
        """Load ``weights`` as ``version`` everywhere; an engine that dies meanwhile is restarted with them."""
        # a restart meanwhile checks against this (None: against itself; the whole group is compared next)
        self._weights, self.version, self._expected = weights, int(version), expected
        for _ in range(len(self.actors) + 1):
            named = {self.engine_name(i): a for i, a in enumerate(self.actors)}
            try:
                report = sync_actors(named, weights, version, self.probe, expected, tolerance=self.tolerance, timeout_s=self.timeout_s)
            except EngineDied as e:
                logger.warning("%s died during a weight sync; restarting it", e.engine)
                index = int(e.engine.rsplit("_", 1)[1])
                self.restart(index)
                self.unannounced.append(index)
                continue
            self._expected = report.reference
            self.router.version = self.version
            return report
        raise RuntimeError(f"{self.name}: engines kept dying during the sync to version {version}")

    def _score_ref(self, actor: Any) -> Any:
        p = self.probe
        return actor.score.remote(list(p.prompt_ids), list(p.continuation_ids), p.temperature)

    def _live_actor(self) -> Any:
        live = [a for a, ok in zip(self.actors, self.router.alive) if ok]
        if not live:
            raise RuntimeError(f"{self.name}: no engine is alive")
        return live[0]

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)

    def __repr__(self) -> str:
        adapters = f", adapters {self.adapter_versions}" if self.adapter_versions else ""
        return f"<EngineGroup {self.name}: {len(self.actors)} {self.kind} engines @{self.version}{adapters}>"


# ----- the runtime -------------------------------------------------------------------------------------------
class RayRuntime:
    """Engines, learners and rollouts of a run on Ray (``cluster.mode: ray``); the experiment loop calls
    :meth:`engine` and :meth:`learner` while setting up, then :meth:`play` and :meth:`sync` every round.

    ``on_episode(worker, episode)``, when set, is called in the driver as each episode arrives.
    """

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.cluster = cfg.cluster
        #: the MLflow run faults are logged to (set by the experiment; else the thread's active run)
        self.run_id: str | None = None
        self.groups: dict[str, EngineGroup] = {}
        self.learners: list[Any] = []
        #: rollout worker name -> actor
        self.workers: dict[str, Any] = {}
        #: every fault of the run, in order (also logged to MLflow)
        self.faults: list[dict[str, Any]] = []
        self.on_episode: Callable[[str, Episode], None] | None = None
        self.last_ledger: EpisodeLedger | None = None
        self._worker_serial = 0
        self._worker_groups: tuple[str, ...] = ()
        self._started_ray = False
        self._step: int | None = None  # the latest round's step, for faults outside a round

    def __enter__(self) -> RayRuntime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----- set-up ---------------------------------------------------------------------------------------------
    def engine(self, name: str, model_path: str) -> EngineGroup:
        """The engines of one model policy (``cluster.engines`` actors), as one Engine."""
        self._ensure_ray()
        from pathlib import Path

        c = self.cluster
        local = Path(model_path)
        path = str(local.resolve()) if local.exists() else str(model_path)  # the actors' cwd is not this one
        options: dict[str, Any] = {"dtype": self.cfg.model.dtype, "max_batch_size": self.cfg.engine.max_batch_size}
        if c.engine_kind == "hf":
            options["device"] = "cuda" if c.gpus_per_engine > 0 else "cpu"
        elif self.cfg.model.adapter == "lora":  # vLLM sizes its LoRA buffers when it starts
            options.update(enable_lora=True, max_lora_rank=self.cfg.model.lora.rank)
        group = EngineGroup(
            name,
            c.engine_kind,
            path,
            engines=c.engines,
            num_cpus=c.engine_cpus,
            num_gpus=c.gpus_per_engine,
            options=options,
            timeout_s=c.sync_timeout_s,
            tolerance=c.probe_tolerance,
        )
        self.groups[name] = group
        return group

    def learner(self, learner_class: type, model: Any, *, pad_id: int, max_len: int, name: str = "learner") -> Any:
        """A :class:`~arena.trainers.ray_learner.RayLearner` of ``cluster.learner_workers`` Ray Train workers."""
        self._ensure_ray()
        from arena.trainers.ray_learner import RayLearner

        learner = RayLearner(learner_class, model, self.cfg.trainer, pad_id=pad_id, max_len=max_len, name=name, **self._train_workers())
        self.learners.append(learner)
        return learner

    def _train_workers(self) -> dict[str, Any]:
        """How many Ray Train workers a learner gets, and their resources (``cluster.learner_*``)."""
        c = self.cluster
        return {"workers": c.learner_workers, "cpus_per_worker": c.learner_worker_cpus, "use_gpu": self.cfg.model.device == "cuda"}

    def adapter_learners(self, model: Any, names: Sequence[str], *, pad_id: int, max_len: int) -> dict[str, Any]:
        """LoRA policies: one group of ``cluster.learner_workers`` Ray Train workers holds the peft
        ``model`` (one frozen base, an adapter per name) and trains every adapter; returns a learner
        per name (:class:`~arena.trainers.ray_learner.RayAdapterLearner`)."""
        self._ensure_ray()
        from arena.trainers.ray_learner import RayAdapterLearners

        group = RayAdapterLearners(model, names, self.cfg.trainer, pad_id=pad_id, max_len=max_len, **self._train_workers())
        self.learners.append(group)
        return dict(group.learners)

    def _ensure_ray(self) -> None:
        if ray.is_initialized():
            return
        c = self.cluster
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        if c.address:
            options["address"] = c.address
        else:
            options["num_cpus"] = c.num_cpus or max(_cpu_count(), cpu_budget(self.cfg))
        init_ray(**options)
        self._started_ray = True

    def _ensure_workers(self) -> None:
        """Start ``cluster.rollout_workers`` workers once the engine groups exist (again if groups were added)."""
        if self.workers and self._worker_groups == tuple(self.groups):
            return
        for actor in self.workers.values():
            ray.kill(actor)
        self.workers = {}
        for _ in range(self.cluster.rollout_workers):
            self._start_worker()
        _wait_started(
            [w.ready.remote() for w in self.workers.values()],
            f"{self.cluster.rollout_workers} rollout workers ({self.cluster.rollout_worker_cpus} CPU each)",
            300.0,
        )
        self._worker_groups = tuple(self.groups)

    def _start_worker(self) -> str:
        name = f"rollout_{self._worker_serial}"
        offset = self._worker_serial
        self._worker_serial += 1
        engines = {g: list(group.actors) for g, group in self.groups.items()}
        tokenizers = {g: group.tokenizer for g, group in self.groups.items()}
        self.workers[name] = RolloutWorker.options(num_cpus=self.cluster.rollout_worker_cpus).remote(
            name, engines, tokenizers, offset, list(self.cfg.imports), import_paths(self.cfg.imports)
        )
        return name

    # ----- a round --------------------------------------------------------------------------------------------
    def play(
        self,
        matchups: Sequence[Matchup],
        pools: Mapping[str, Mapping[str, Policy]],
        ids: Sequence[str],
        console: Any = None,
        label: str = "episodes",
        *,
        step: int | None = None,
        tag: str = "train",
    ) -> list[Episode]:
        """Play every matchup on the rollout workers; episodes come back in the order of ``matchups``.

        ``pools`` maps game id -> policy id -> policy as in one process; workers rebuild
        the same seats (:func:`seat_specs`). Accounting metrics (``rollout/<tag>/...``)
        are logged at ``step`` when an MLflow run is active.
        """
        if len(ids) != len(matchups):
            raise ValueError(f"got {len(matchups)} matchups but {len(ids)} episode ids")
        seats = seat_specs(pools, matchups)
        self._step = step
        self._ensure_workers()
        self._announce_pending()
        self._heal_engines(step)
        ledger = EpisodeLedger(ids)
        lost_before, restarts_before = self._count_faults("rollout_worker_died"), self._count_faults("engine_died")
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, disable=console is None
        ) as progress:
            bar = progress.add_task(f"{label}: episodes", total=len(ids))
            asyncio.run(self._play(list(zip(ids, matchups)), seats, ledger, lambda: progress.advance(bar), step))
        self._heal_engines(step)  # a round ends with every engine alive at the current version
        episodes = ledger.episodes()
        self._count_tokens(episodes, seats)
        self.last_ledger = ledger
        metrics = ledger.metrics(f"rollout/{tag}")
        metrics[f"rollout/{tag}/workers_lost"] = float(self._count_faults("rollout_worker_died") - lost_before)
        metrics[f"rollout/{tag}/engines_restarted"] = float(self._count_faults("engine_died") - restarts_before)
        _log_metrics(metrics, step)
        return episodes

    async def _play(self, tasks: list[tuple[str, Matchup]], seats: dict, ledger: EpisodeLedger, advance: Callable[[], None], step: int | None) -> None:
        versions = {g: group.version for g, group in self.groups.items()}
        adapters = {g: dict(group.adapter_versions) for g, group in self.groups.items() if group.adapter_versions}
        running: dict[asyncio.Task, tuple[str, list[tuple[str, Matchup]]]] = {}

        def launch(worker: str, share: list[tuple[str, Matchup]]) -> None:
            running[asyncio.ensure_future(self._drain(worker, share, seats, versions, adapters, ledger, advance))] = (worker, share)

        for worker, share in zip(list(self.workers), _split(tasks, len(self.workers))):
            if share:
                launch(worker, share)
        watcher = asyncio.ensure_future(self._watch_engines(step))
        try:
            while running:
                done, _ = await asyncio.wait({*running, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if watcher in done:  # an engine could not be brought back: the round cannot be trusted
                    watcher.result()
                for task in done - {watcher}:
                    worker, share = running.pop(task)
                    error = task.exception()
                    if error is None:
                        continue
                    if not isinstance(error, RayActorError):
                        raise error
                    unfinished = [t for t in share if t[0] not in ledger.received]
                    first_report = worker in self.workers  # a worker streaming two shares fails twice
                    replacement = await asyncio.to_thread(self._replace_worker, worker) if first_report else None
                    busy = Counter({w: len(ledger.missing([i for i, _ in s])) for w, s in running.values()})
                    others = [w for w in self.workers if w != replacement]
                    target = min(others, key=lambda w: busy[w]) if others else replacement
                    ledger.rerun += len(unfinished)
                    if first_report:
                        self._fault(
                            "rollout_worker_died",
                            worker,
                            step,
                            replacement=replacement,
                            episodes_finished=len(share) - len(unfinished),
                            episodes_rerun=len(unfinished),
                            rerun_on=target,
                            rerun_ids=[i for i, _ in unfinished],
                        )
                    if unfinished:
                        launch(target, unfinished)
        finally:
            watcher.cancel()

    async def _drain(
        self,
        worker: str,
        share: list[tuple[str, Matchup]],
        seats: dict,
        versions: dict[str, int],
        adapters: dict[str, dict[str, int]],
        ledger: EpisodeLedger,
        advance: Callable[[], None],
    ) -> None:
        """Collect a worker's episodes as they finish (a dead worker raises RayActorError here)."""
        actor = self.workers[worker]
        stream = actor.play.remote(share, seats, versions, self.cfg.rollout.concurrency, self.cfg.rollout.max_steps, adapters)
        async for ref in stream:
            episode = await ref
            if ledger.receive(episode):
                advance()
                if self.on_episode is not None:
                    self.on_episode(worker, episode)

    async def _watch_engines(self, step: int | None) -> None:
        while True:
            await asyncio.sleep(ENGINE_CHECK_S)
            for group in list(self.groups.values()):
                for index in await asyncio.to_thread(group.dead_engines):
                    await asyncio.to_thread(self._restart_engine, group, index, step)

    def _heal_engines(self, step: int | None) -> None:
        for group in self.groups.values():
            for index in group.dead_engines():
                self._restart_engine(group, index, step)

    def _replace_worker(self, dead: str) -> str:
        del self.workers[dead]
        return self._start_worker()

    def _restart_engine(self, group: EngineGroup, index: int, step: int | None) -> None:
        started = time.perf_counter()
        group.restart(index)
        self._announce_engine(group, index, step, restart_s=round(time.perf_counter() - started, 3))

    def _announce_pending(self) -> None:
        """Engines restarted while their weights were pushed (a sync, a snapshot): to the workers, and logged."""
        for group in self.groups.values():
            while group.unannounced:
                self._announce_engine(group, group.unannounced.pop(0), self._step, during="weight push")

    def _announce_engine(self, group: EngineGroup, index: int, step: int | None, **detail: Any) -> None:
        """Hand a restarted engine to every rollout worker, and log the fault."""
        for worker in list(self.workers.values()):
            try:
                ray.get(worker.replace_engine.remote(group.name, index, group.actors[index]))
            except RayActorError:
                pass  # a dead worker is replaced with the current engines when its stream fails
        if group.adapter_versions:
            detail["adapter_versions"] = dict(group.adapter_versions)
        self._fault("engine_died", group.engine_name(index), step, version=group.version, **detail)

    # ----- weights --------------------------------------------------------------------------------------------
    def sync(self, policy_id: str, engine: EngineGroup | AdapterView, learner: Any) -> dict[str, float]:
        """Push ``learner``'s weights to ``engine``'s actors through the object store and check each on the probe.

        A LoRA policy's engine is an :class:`~arena.adapters.AdapterView` of the shared group: only its
        adapter's tensors travel, and each engine scores the probe through that adapter. ``bytes`` and
        ``tensors`` in the metrics are what one engine received."""
        if isinstance(engine, AdapterView):
            group = engine.engine
            report = group.sync_adapter(engine.name, learner.weights, learner.version, learner.probe_logprobs(group.probe))
        else:
            report = engine.sync(learner.weights, learner.version, learner.probe_logprobs(engine.probe))
        self._announce_pending()
        metrics = report.metrics(f"sync/{policy_id}")
        sent = getattr(learner, "weights_size", None)
        if sent is not None:
            metrics[f"sync/{policy_id}/tensors"], metrics[f"sync/{policy_id}/bytes"] = float(sent[0]), float(sent[1])
        return metrics

    # ----- bookkeeping ----------------------------------------------------------------------------------------
    def _fault(self, kind: str, target: str, step: int | None, **detail: Any) -> None:
        event = {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "step": step,
            "kind": kind,
            "target": target,
            **detail,
        }
        self.faults.append(event)
        logger.warning("fault: %s %s (%s)", kind, target, detail)
        tracking.log_fault(event, self.faults, run_id=self.run_id)

    def _count_faults(self, kind: str) -> int:
        return sum(1 for f in self.faults if f["kind"] == kind)

    def _count_tokens(self, episodes: Sequence[Episode], seats: Mapping[str, Mapping[str, SeatSpec]]) -> None:
        """Add the model seats' turns to their engine groups' stats (the experiment reads tokens from there)."""
        for ep in episodes:
            for turn in ep.turns:
                spec = seats[ep.matchup.game].get(ep.matchup.seats[turn.player])
                if isinstance(spec, ModelSeat) and turn.completion_ids:
                    st = self.groups[spec.group].stats
                    st.requests += 1
                    st.prompt_tokens += len(turn.prompt_ids)
                    st.completion_tokens += len(turn.completion_ids)

    def routing(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per rollout worker, per engine group: episodes started on each engine, retries, moves."""
        names = list(self.workers)
        return dict(zip(names, ray.get([self.workers[n].routing.remote() for n in names])))

    def close(self) -> None:
        for actor in self.workers.values():
            ray.kill(actor)
        self.workers = {}
        for learner in self.learners:
            try:
                learner.close()
            except Exception as e:  # closing must reach the engines and Ray too
                logger.warning("closing a learner: %s", e)
        self.learners = []
        for group in self.groups.values():
            group.close()
        self.groups = {}
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False


def cpu_budget(cfg: Any) -> float:
    """The CPUs a run's actors ask Ray for: engines per model policy (and snapshot seat), rollout workers, learners.
    LoRA policies share one engine group and one learner worker group."""
    from arena.config import SNAPSHOT, is_model_policy

    c = cfg.cluster
    seats = [pid for g in cfg.games for s in g.matchups for pid in s.values()]
    policies = len({pid for pid in seats if is_model_policy(pid)})
    groups = policies + (1 if SNAPSHOT in seats else 0)
    learner_groups = policies
    if cfg.model.adapter == "lora":
        groups, learner_groups = 1, min(policies, 1)
    training = cfg.trainer.recipe != "none" and cfg.trainer.rounds > 0
    return (
        groups * c.engines * c.engine_cpus
        + c.rollout_workers * c.rollout_worker_cpus
        + (learner_groups * c.learner_workers * c.learner_worker_cpus if training else 0.0)
    )


def _wait_started(refs: list[Any], what: str, timeout_s: float) -> None:
    """Wait for actors to answer; name the likely cause (Ray's CPU budget) if they never do."""
    try:
        ray.get(refs, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        free = ray.available_resources().get("CPU", 0.0)
        raise RuntimeError(
            f"{what} did not start within {timeout_s:g} s; Ray has {free:g} of {ray.cluster_resources().get('CPU', 0.0):g} CPUs free: "
            "lower the cluster.*_cpus shares or give Ray more CPUs (cluster.num_cpus)"
        ) from None


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1


def _split(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """``items`` in ``parts`` contiguous runs of near-equal length (episodes of one group stay together)."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for k in range(parts):
        end = start + size + (1 if k < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out


def _log_metrics(metrics: Mapping[str, float], step: int | None) -> None:
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.log_metrics(dict(metrics), step=step)
