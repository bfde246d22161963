"""Engines as Ray actors: one process per engine, with typed, awaitable methods called by name.

    engine = ActorEngine.start("vllm", model_path, num_cpus=0.5)   # or "hf"
    agent = LLMAgent(engine)                                       # plays as with a local engine
    engine.update_weights(learner.model.state_dict(), version=3)

:class:`EngineActor` is a plain ``@ray.remote`` class wrapping either engine
kind (:data:`ENGINES`). Its methods are coroutines, so Ray runs it as an async
actor: concurrent ``generate`` calls from many episodes meet in the engine's
batcher inside the actor and share forward passes, while scoring and weight
updates run on the engine's batch thread and never overlap a batch.

Call the actor directly (``await actor.generate.remote(...)``) from async code
that drives several engines, or wrap it in :class:`ActorEngine`, which
implements the :class:`~arena.engines.base.Engine` interface so that agents,
rollouts and the experiment loop use an engine in another process unchanged.

Start Ray with :func:`init_ray` (``ray.init`` from a neutral directory, so
workers import the installed package even when the driver runs in a source
checkout). CPUs: the actor asks Ray for half a CPU by default. Ray's CPU count
is a scheduling budget, not a thread limit: on a two-core machine a third actor
that asks for a whole CPU stays pending forever.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import ray
import torch

from arena.engines.base import Completion, Engine, EngineStats, SamplingParams

EngineKind = Literal["hf", "vllm"]

#: a fraction of a CPU, so that several engines (and rollout workers) fit on a small machine
DEFAULT_NUM_CPUS = 0.5


def _hf_engine(model_path: str, **options: Any) -> Engine:
    from arena.engines.hf import HFEngine

    return HFEngine(model_path, **options)


def _vllm_engine(model_path: str, **options: Any) -> Engine:
    from arena.engines.vllm import VLLMEngine

    return VLLMEngine(model_path, **options)


#: engine kind -> constructor taking the model path and the engine's keyword options
ENGINES: dict[str, Callable[..., Engine]] = {"hf": _hf_engine, "vllm": _vllm_engine}


def make_engine(kind: EngineKind, model_path: str | Path, **options: Any) -> Engine:
    """Build an engine of ``kind`` in this process (``options`` go to its constructor)."""
    if kind not in ENGINES:
        raise ValueError(f"unknown engine kind {kind!r}; choose one of {sorted(ENGINES)}")
    return ENGINES[kind](str(model_path), **options)


def init_ray(**options: Any) -> None:
    """``ray.init(**options)``, with workers that import the installed Arena package.

    Ray puts the driver's working directory first on every worker's ``sys.path``.
    Started from a source checkout, that directory's ``arena/`` folder would shadow
    the installed package, which maps ``arena.agents``, ``arena.environments`` and
    ``arena.trainers`` from other folders, and actors would fail with "No module
    named 'arena.agents'". So Ray starts from an empty directory of its own, where
    its workers then run: hand them absolute paths (:meth:`ActorEngine.start` does).
    """
    neutral = Path(tempfile.gettempdir()) / "arena-ray-cwd"
    neutral.mkdir(exist_ok=True)
    here = os.getcwd()
    os.chdir(neutral)
    try:
        ray.init(**options)
    finally:
        os.chdir(here)


@ray.remote(num_cpus=DEFAULT_NUM_CPUS)
class EngineActor:
    """An engine of either kind in its own process. Start with
    ``EngineActor.options(num_cpus=...).remote(kind, model_path, options)``; with ``lora`` (a
    :class:`~arena.adapters.LoraSpec`) and ``adapters`` (names), it serves those LoRA adapters too,
    and each request names the adapter it is for (``adapter=``)."""

    def __init__(
        self,
        kind: EngineKind,
        model_path: str,
        options: Mapping[str, Any] | None = None,
        lora: Any = None,
        adapters: Sequence[str] = (),
    ) -> None:
        self.kind = kind
        self.engine = make_engine(kind, model_path, **dict(options or {}))
        if adapters:  # a restarted engine of a LoRA group serves the group's adapters from the start
            self.engine.add_adapters(lora, list(adapters))

    async def generate(self, prompt_ids: list[int], params: SamplingParams, seed: int, adapter: str | None = None) -> Completion:
        """One completion (of LoRA adapter ``adapter``; None: the engine's own weights); concurrent
        calls are batched together inside the actor, whatever adapter each names."""
        if adapter is None:
            return await self.engine.generate(prompt_ids, params, seed)
        return await self.engine.generate(prompt_ids, params, seed, adapter=adapter)

    async def generate_batch(
        self, prompts: list[list[int]], params: SamplingParams, seeds: list[int], adapters: list[str | None] | None = None
    ) -> list[Completion]:
        return await self.engine.run_in_engine_thread(self.engine.timed_generate_batch, prompts, params, seeds, adapters)

    async def score(self, prompt_ids: list[int], continuation_ids: list[int], temperature: float = 1.0, adapter: str | None = None) -> list[float]:
        if adapter is None:
            return await self.engine.run_in_engine_thread(self.engine.score, prompt_ids, continuation_ids, temperature)
        return await self.engine.run_in_engine_thread(self.engine.score, prompt_ids, continuation_ids, temperature, adapter)

    async def update_weights(self, weights: Mapping[str, torch.Tensor] | str, version: int) -> int:
        """Load a state dict (or a checkpoint directory) between batches; returns the new version."""
        await self.engine.run_in_engine_thread(self.engine.update_weights, weights, version)
        return self.engine.version

    async def version(self) -> int:
        return self.engine.version

    # ----- LoRA adapters (an engine that serves several policies on one frozen base: arena.adapters) -----
    async def add_adapters(self, lora: Any, names: list[str]) -> dict[str, int]:
        """Serve LoRA adapters ``names`` (shape ``lora``, an :class:`arena.adapters.LoraSpec`), each at
        version 0; returns every adapter's version."""
        await self.engine.run_in_engine_thread(self.engine.add_adapters, lora, list(names))
        return dict(self.engine.adapter_versions)

    async def update_adapter(self, name: str, state: Mapping[str, torch.Tensor], version: int) -> int:
        """Load adapter ``name``'s tensors between batches; returns its new version."""
        await self.engine.run_in_engine_thread(self.engine.update_adapter, name, dict(state), version)
        return self.engine.adapter_versions[name]

    async def remove_adapter(self, name: str) -> None:
        await self.engine.run_in_engine_thread(self.engine.remove_adapter, name)

    async def adapter_state(self, name: str) -> dict[str, torch.Tensor]:
        """The tensors adapter ``name`` is served with (peft's key names: :func:`arena.adapters.adapter_state`)."""
        return await self.engine.run_in_engine_thread(self.engine.adapter_state, name)

    async def adapter_versions(self) -> dict[str, int]:
        """Adapter name -> the version of the weights it serves (empty: no adapters)."""
        return dict(getattr(self.engine, "adapter_versions", {}))

    async def sleep(self, level: int = 1) -> None:
        await self.engine.run_in_engine_thread(self.engine.sleep, level)

    async def wake_up(self) -> None:
        await self.engine.run_in_engine_thread(self.engine.wake_up)

    async def tokenizer(self) -> Any:
        return self.engine.tokenizer

    async def stats(self) -> EngineStats:
        return self.engine.stats


class ActorEngine(Engine):
    """The :class:`~arena.engines.base.Engine` interface over an :class:`EngineActor`.

    ``generate`` awaits the actor, which does the batching; the synchronous
    methods (``generate_batch``, ``score``, ``update_weights``, ``sleep``,
    ``wake_up``) wait for it, as a local engine's would. ``stats`` counts what
    went through this client; :meth:`remote_stats` is the actor's own view.
    """

    def __init__(self, actor: Any, tokenizer: Any, version: int = 0) -> None:
        self.actor = actor
        self.tokenizer = tokenizer
        self.version = int(version)

    @classmethod
    def connect(cls, actor: Any) -> ActorEngine:
        """Wrap a running actor (waits for it to finish starting)."""
        tokenizer, version = ray.get([actor.tokenizer.remote(), actor.version.remote()])
        return cls(actor, tokenizer, version)

    @classmethod
    def start(cls, kind: EngineKind, model_path: str | Path, *, num_cpus: float = DEFAULT_NUM_CPUS, **options: Any) -> ActorEngine:
        """Start an :class:`EngineActor` (``options`` go to the engine's constructor) and wrap it."""
        if kind not in ENGINES:
            raise ValueError(f"unknown engine kind {kind!r}; choose one of {sorted(ENGINES)}")
        local = Path(model_path)
        # the actor's working directory is not this one (see init_ray): a local path goes absolute
        path = str(local.resolve()) if local.exists() else str(model_path)
        actor = EngineActor.options(num_cpus=num_cpus).remote(kind, path, options)
        return cls.connect(actor)

    async def generate(self, prompt_ids: list[int], params: SamplingParams, seed: int) -> Completion:
        out = await self.actor.generate.remote(list(prompt_ids), params, int(seed))
        self._count([prompt_ids], [out])
        return out

    def generate_batch(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int]) -> list[Completion]:
        out = ray.get(self.actor.generate_batch.remote([list(p) for p in prompts], params, [int(s) for s in seeds]))
        self._count(prompts, out)
        return out

    def score(self, prompt_ids: list[int], continuation_ids: list[int], temperature: float = 1.0) -> list[float]:
        return ray.get(self.actor.score.remote(list(prompt_ids), list(continuation_ids), temperature))

    def update_weights(self, weights: Mapping[str, torch.Tensor] | str | Path | Any, version: int) -> None:
        """``weights``: a state dict, the ``ray.put`` of one (put it once when several engines
        take the same update), or a checkpoint directory (vLLM engines)."""
        if isinstance(weights, Path):
            weights = str(weights)
        self.version = int(ray.get(self.actor.update_weights.remote(weights, int(version))))

    def sleep(self, level: int = 1) -> None:
        ray.get(self.actor.sleep.remote(level))

    def wake_up(self) -> None:
        ray.get(self.actor.wake_up.remote())

    def remote_stats(self) -> EngineStats:
        return ray.get(self.actor.stats.remote())

    def _count(self, prompts: list[list[int]], out: list[Completion]) -> None:
        st = self.stats
        st.requests += len(prompts)
        st.prompt_tokens += sum(map(len, prompts))
        st.completion_tokens += sum(len(c.token_ids) for c in out)

    def __repr__(self) -> str:
        return f"<ActorEngine {self.actor} @{self.version}>"
