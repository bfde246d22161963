"""The engine interface: prompt token ids in; completion ids, sampler logprobs and text out.

An engine implements one synchronous method, :meth:`Engine.generate_batch`.
The async :meth:`Engine.generate` is what agents call: requests from every
episode that is waiting on the model are gathered into one batch, so many
concurrent episodes share each forward pass. Batches run on a single worker
thread, leaving the event loop free to collect the next batch meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

logger = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 32
    #: 0 means greedy
    temperature: float = 1.0
    top_p: float = 1.0
    #: generation also stops at the tokenizer's end-of-turn / eos token
    stop_token_ids: tuple[int, ...] = ()


@dataclass
class Completion:
    token_ids: list[int]
    #: log-probability of each sampled token under the model's distribution at the
    #: sampling temperature (before top-p truncation); what a learner's ratio uses
    logprobs: list[float]
    text: str
    finish_reason: Literal["stop", "length"]


@dataclass
class EngineStats:
    """Running totals; ``tokens_per_s`` is over time spent inside ``generate_batch``."""

    requests: int = 0
    batches: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generate_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.generate_s if self.generate_s else 0.0

    @property
    def mean_batch_size(self) -> float:
        return sum(self.batch_sizes) / len(self.batch_sizes) if self.batch_sizes else 0.0


@dataclass
class _Request:
    prompt_ids: list[int]
    params: SamplingParams
    seed: int
    future: asyncio.Future
    #: the adapter this request is for (a multi-adapter engine); None = the engine's own weights
    adapter: str | None = None


class Engine(ABC):
    """Base class for token generators (HF transformers here; vLLM plugs in the same way)."""

    #: a Hugging Face tokenizer: agents render prompts with its chat template
    tokenizer: Any
    #: weight version, bumped by each weight update
    version: int = 0
    max_batch_size: int = 64

    @abstractmethod
    def generate_batch(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int]) -> list[Completion]:
        """Generate one completion per prompt, the whole batch at once.

        ``seeds[i]`` fixes row ``i``'s sampling, whatever else is in the batch.
        """

    async def generate(self, prompt_ids: list[int], params: SamplingParams, seed: int, adapter: str | None = None) -> Completion:
        """One completion; concurrent calls are batched. ``adapter``: which adapter of a
        multi-adapter engine (:mod:`arena.adapters`) serves it; requests for different adapters
        share a batch."""
        loop = asyncio.get_running_loop()
        if getattr(self, "_loop", None) is not loop:
            self._start_batcher(loop)
        fut = loop.create_future()
        self._queue.append(_Request(list(prompt_ids), params, int(seed), fut, adapter))
        self._wakeup.set()
        return await fut

    @property
    def stats(self) -> EngineStats:
        if not hasattr(self, "_stats"):
            self._stats = EngineStats()
        return self._stats

    def timed_generate_batch(
        self, prompts: list[list[int]], params: SamplingParams, seeds: list[int], adapters: list[str | None] | None = None
    ) -> list[Completion]:
        t0 = time.perf_counter()
        out = self.generate_batch(prompts, params, seeds) if adapters is None else self.generate_batch(prompts, params, seeds, adapters=adapters)
        st = self.stats
        st.generate_s += time.perf_counter() - t0
        st.requests += len(prompts)
        st.batches += 1
        st.batch_sizes.append(len(prompts))
        st.prompt_tokens += sum(map(len, prompts))
        st.completion_tokens += sum(len(c.token_ids) for c in out)
        return out

    async def run_in_engine_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` on the thread that runs batches, so it never overlaps one.

        For async callers of weight updates and scoring: a model is not safe to
        mutate or share while a batch is running on it.
        """
        if not hasattr(self, "_executor"):
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))

    def sleep(self, level: int = 1) -> None:
        """Free accelerator memory between rollout phases, where the engine supports it (vLLM on GPU).

        The default keeps everything in memory and only says so.
        """
        logger.info("%s has no sleep mode: sleep(level=%d) keeps weights and caches in memory", type(self).__name__, level)

    def wake_up(self) -> None:
        """Undo :meth:`sleep`; a no-op for engines without a sleep mode."""
        logger.info("%s has no sleep mode: wake_up() has nothing to restore", type(self).__name__)

    # ----- batching -----------------------------------------------------------------------
    def _start_batcher(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: list[_Request] = []
        self._wakeup = asyncio.Event()
        if not hasattr(self, "_executor"):
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._batcher = loop.create_task(self._batch_loop())

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self._settle()
            while self._queue:
                params = self._queue[0].params
                batch = [r for r in self._queue if r.params == params][: self.max_batch_size]
                taken = set(map(id, batch))
                self._queue = [r for r in self._queue if id(r) not in taken]
                adapters = [r.adapter for r in batch] if any(r.adapter is not None for r in batch) else None
                try:
                    results = await loop.run_in_executor(
                        self._executor,
                        self.timed_generate_batch,
                        [r.prompt_ids for r in batch],
                        params,
                        [r.seed for r in batch],
                        adapters,
                    )
                except Exception as e:  # hand the failure to every waiting caller
                    for r in batch:
                        if not r.future.done():
                            r.future.set_exception(e)
                    continue
                for r, c in zip(batch, results):
                    if not r.future.done():
                        r.future.set_result(c)
                await self._settle()

    async def _settle(self) -> None:
        """Let every coroutine that is about to ask for a completion do so before a batch forms.

        Episodes resumed by the previous batch step their game, let scripted
        opponents move, and come back with new prompts within a few loop turns.
        """
        seen = -1
        while len(self._queue) != seen and len(self._queue) < self.max_batch_size:
            seen = len(self._queue)
            for _ in range(4):
                await asyncio.sleep(0)
