"""A learner on Ray Train: the recipe's Learner in every TorchTrainer worker, its model under DDP.

    learner = RayLearner(Learner, model, cfg.trainer, pad_id=tok.pad_token_id, max_len=1048, workers=2)
    stats = learner.learn(samples, generator)   # what Learner.learn does, on `workers` processes
    learner.version, learner.weights            # the new version; an ObjectRef to its state dict
    learner.probe_logprobs(probe)               # the learner's side of the weight-sync check
    learner.close()

:class:`RayLearner` has the interface of :class:`~arena.trainers.selfplay.Learner`
(``learn``, ``model``, ``optimizer``, ``version``), so the experiment loop,
checkpoints and resume treat it as one. Behind it:

* one ``TorchTrainer.fit()`` runs for the learner's whole life, in a thread of
  the driver (starting a Ray Train worker group takes ~15 s on two cores, so it
  happens once, not every round); its workers wait on a mailbox actor for jobs
  (learn, probe, get or set state) and reply there;
* each worker builds the recipe's own learner class (``Learner`` for ``pg`` and
  ``rest``) around a copy of the model, then wraps the model in DDP
  (``ray.train.torch.prepare_model``; gloo on CPU, NCCL on GPU): the frozen KL
  reference and the optimizer belong to the bare model, and gradients are
  averaged across workers on every backward;
* a round's samples go to the object store once; each worker takes its shard by
  :func:`shard` (torch's ``DistributedSampler`` rule: padded by repeating samples
  from the start, so every worker takes the same number of optimizer steps, as
  DDP's collective calls require) and runs ``learn`` with the per-worker batch
  size ``ceil(batch_size / workers)`` and the same shuffling generator;
* after the update, worker 0 puts its state dict in the object store (engines
  load it from there: :mod:`arena.weight_sync`) and scores the sync probe.

One optimizer step over a batch split between workers equals the single-process
step on the whole batch when every worker's share holds the same number of
completion tokens (the losses are token means per worker, and DDP averages the
workers' gradients); otherwise it weighs each worker's tokens slightly
differently, as data-parallel training always does.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np
import ray
import torch

from arena.config import TrainerConfig
from arena.weight_sync import Probe, probe_logprobs

#: stats that add up across workers (the rest are means of per-worker means)
SUMMED_STATS = frozenset({"train_tokens", "train_tokens_per_s", "num_tokens"})


# ----- pure helpers ---------------------------------------------------------------------------------
def shard(items: Sequence[Any], rank: int, world: int) -> list[Any]:
    """Worker ``rank``'s share of ``items``: every ``world``-th item from ``rank``, the list
    first padded to a multiple of ``world`` by repeating items from its start
    (``DistributedSampler(shuffle=False, drop_last=False)``). Every share has
    ``ceil(len(items) / world)`` items; an empty list gives empty shares."""
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, {world}), got {rank}")
    n = len(items)
    if n == 0:
        return []
    padded = [i % n for i in range(math.ceil(n / world) * world)]
    return [items[i] for i in padded[rank::world]]


def worker_config(cfg: TrainerConfig, world: int) -> TrainerConfig:
    """The trainer config one of ``world`` workers runs: ``batch_size`` split between them."""
    return cfg.model_copy(update={"batch_size": max(1, math.ceil(cfg.batch_size / world))})


def combine_stats(per_worker: Sequence[dict[str, float]], samples: int) -> dict[str, float]:
    """One round's stats from the workers' own: sums for :data:`SUMMED_STATS`, means otherwise;
    ``samples`` is the round's sample count (padding repeats none of them in the result)."""
    keys = sorted({k for s in per_worker for k in s})
    out: dict[str, float] = {}
    for k in keys:
        values = [float(s[k]) for s in per_worker if k in s]
        out[k] = float(np.sum(values)) if k in SUMMED_STATS else float(np.mean(values))
    if per_worker and any(per_worker):
        out["samples"] = float(samples)
        out["learner_workers"] = float(len(per_worker))
    return out


# ----- the mailbox between the driver and the workers ----------------------------------------------
@ray.remote(num_cpus=0)
class LearnerMailbox:
    """Jobs from the driver to every worker, replies back: an async actor, so waiting costs nothing."""

    def __init__(self, world: int) -> None:
        self.world = world
        self.jobs: list[asyncio.Queue] = [asyncio.Queue() for _ in range(world)]
        self.replies: dict[int, dict[int, Any]] = {}
        self.complete: dict[int, asyncio.Event] = {}

    async def post(self, job: dict[str, Any] | None) -> None:
        """Give ``job`` to every worker (``None`` tells them to stop)."""
        for q in self.jobs:
            q.put_nowait(job)

    async def next_job(self, rank: int) -> dict[str, Any] | None:
        return await self.jobs[rank].get()

    async def reply(self, job_id: int, rank: int, result: dict[str, Any]) -> None:
        got = self.replies.setdefault(job_id, {})
        got[rank] = result
        if len(got) == self.world:
            self._event(job_id).set()

    async def collect(self, job_id: int) -> list[dict[str, Any]]:
        """Every worker's reply to ``job_id``, by rank, once all have replied."""
        await self._event(job_id).wait()
        del self.complete[job_id]
        got = self.replies.pop(job_id)
        return [got[r] for r in range(self.world)]

    def _event(self, job_id: int) -> asyncio.Event:
        return self.complete.setdefault(job_id, asyncio.Event())


# ----- what each Ray Train worker runs -----------------------------------------------------------
def _train_worker(config: dict[str, Any]) -> None:
    """The loop of one Ray Train worker: build the learner, then serve jobs until told to stop."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    model = ray.get(config["model"])
    learner = config["learner_class"](model, worker_config(config["cfg"], world), pad_id=config["pad_id"], max_len=config["max_len"])
    # the reference copy and the optimizer were made from the bare model; DDP wraps the same parameters
    learner.model = ray.train.torch.prepare_model(model, parallel_strategy="ddp")
    mailbox = config["mailbox"]
    while (job := ray.get(mailbox.next_job.remote(rank))) is not None:
        try:
            result = JOBS[job["kind"]](learner, job, rank, world)
        except Exception:
            ray.get(mailbox.reply.remote(job["id"], rank, {"error": traceback.format_exc()}))
            raise
        ray.get(mailbox.reply.remote(job["id"], rank, result))


def _bare(learner: Any) -> torch.nn.Module:
    return getattr(learner.model, "module", learner.model)


def _learn_job(learner: Any, job: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    items = shard(ray.get(job["items"]), rank, world)
    generator = torch.Generator()
    generator.set_state(job["generator"])
    started = time.perf_counter()
    stats = learner.learn(items, generator)
    out: dict[str, Any] = {"stats": stats, "version": learner.version, "learn_s": time.perf_counter() - started}
    if rank == 0:
        out.update(_publish(learner, job.get("probe")))
    return out


def _probe_job(learner: Any, job: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    return _publish(learner, job["probe"]) if rank == 0 else {}


def _publish(learner: Any, probe: Probe | None) -> dict[str, Any]:
    """Worker 0's weights in the object store, their version, and the probe scored on them."""
    model = _bare(learner)
    out: dict[str, Any] = {"version": learner.version, "weights": ray.put({k: v.detach() for k, v in model.state_dict().items()})}
    if probe is not None:
        out["probe"] = probe_logprobs(model, probe)
    return out


def _get_state_job(learner: Any, job: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    if rank != 0:
        return {}
    return {"optimizer": learner.optimizer.state_dict(), "version": learner.version}


def _set_state_job(learner: Any, job: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    state = ray.get(job["state"])
    with torch.no_grad():
        _bare(learner).load_state_dict(state["model"])
    learner.optimizer.load_state_dict(state["optimizer"])
    learner.version = int(state["version"])
    return {"version": learner.version}


#: job kind -> what a worker does with it
JOBS = {"learn": _learn_job, "probe": _probe_job, "get_state": _get_state_job, "set_state": _set_state_job}


# ----- the driver's handle ---------------------------------------------------------------------------
class RayLearner:
    """The driver's side of a learner running on ``workers`` Ray Train workers (see the module docstring).

    ``model`` is the driver's copy of the weights, refreshed from the object store
    when read after an update (checkpoints save it; a checkpoint loads into it).
    ``optimizer`` stands for the workers' optimizers: ``state_dict()`` fetches
    worker 0's, ``load_state_dict()`` queues a restore, which sends the driver's
    ``model`` weights, that optimizer state and ``version`` to every worker
    before the next job.
    """

    def __init__(
        self,
        learner_class: type,
        model: torch.nn.Module,
        cfg: TrainerConfig,
        *,
        pad_id: int,
        max_len: int = 2048,
        workers: int = 2,
        cpus_per_worker: float = 0.25,
        use_gpu: bool = False,
        name: str = "learner",
        storage_path: str | None = None,
        start_timeout_s: float = 600.0,
    ) -> None:
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.cfg = cfg
        self.workers = workers
        self.version = 0
        self._model = model
        self._weights: Any = None  # ObjectRef of the newest weights, once the workers produced some
        self._model_is_current = True
        self._probe: Probe | None = None
        self._probe_cache: dict[tuple[int, Probe], list[float]] = {}
        self._restore: dict[str, Any] | None = None
        self._jobs = itertools.count()
        self._error: BaseException | None = None
        self._started = False
        self._start_deadline = time.monotonic() + start_timeout_s
        self._mailbox = LearnerMailbox.remote(workers)
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config={
                "learner_class": learner_class,
                "model": ray.put(model),
                "cfg": cfg,
                "pad_id": pad_id,
                "max_len": max_len,
                "mailbox": self._mailbox,
            },
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker}),
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            run_config=RunConfig(name=f"arena-{name.replace('/', '_')}", storage_path=storage_path or tempfile.mkdtemp(prefix="arena-ray-train-")),
        )
        self._thread = threading.Thread(target=self._fit, args=(trainer,), name=f"ray-train-{name}", daemon=True)
        self._thread.start()

    def _fit(self, trainer: Any) -> None:
        try:
            trainer.fit()
        except BaseException as e:  # the driver raises it at its next wait
            self._error = e

    # ----- the Learner interface ---------------------------------------------------------------------
    def learn(self, samples: Sequence[Any], generator: torch.Generator) -> dict[str, float]:
        """One round of updates on ``samples`` across the workers; bumps ``version`` as ``Learner.learn`` does.

        Every worker shuffles with the state of ``generator`` (which itself is not advanced)."""
        if not samples:
            return {}
        self._send_restore()
        items = ray.put(list(samples))
        replies = self._run({"kind": "learn", "items": items, "generator": generator.get_state(), "probe": self._probe})
        self._adopt(replies[0])
        stats = combine_stats([r["stats"] for r in replies], len(samples))
        if stats:
            stats["worker_learn_s_max"] = max(r["learn_s"] for r in replies)
        return stats

    @property
    def model(self) -> torch.nn.Module:
        if not self._model_is_current:
            with torch.no_grad():
                self._model.load_state_dict(ray.get(self._weights))
            self._model_is_current = True
        return self._model

    @property
    def optimizer(self) -> _RemoteOptimizer:
        return _RemoteOptimizer(self)

    # ----- for the weight sync -----------------------------------------------------------------------
    @property
    def weights(self) -> Any:
        """An ObjectRef to the current weights (worker 0's after an update, else the driver's copy)."""
        self._send_restore()
        if self._weights is None:
            self._weights = ray.put({k: v.detach() for k, v in self._model.state_dict().items()})
        return self._weights

    def probe_logprobs(self, probe: Probe) -> list[float]:
        """Worker 0's log-probabilities of ``probe`` under the current weights (later updates
        score this probe as part of ``learn``)."""
        self._probe = probe
        self._send_restore()
        key = (self.version, probe)
        if key not in self._probe_cache:
            self._adopt(self._run({"kind": "probe", "probe": probe})[0])
        return self._probe_cache[key]

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the workers (``fit`` returns) and the mailbox; ``model`` keeps the last weights."""
        if self._thread.is_alive():
            _ = self.model  # the newest weights live in worker 0's object store: fetch them before it stops
            ray.get(self._mailbox.post.remote(None))
            self._thread.join(timeout_s)
        ray.kill(self._mailbox)

    # ----- internals ---------------------------------------------------------------------------------
    def _adopt(self, reply: dict[str, Any]) -> None:
        self.version = int(reply["version"])
        self._weights = reply["weights"]
        self._model_is_current = False
        if "probe" in reply:
            self._probe_cache = {(self.version, self._probe): reply["probe"]}

    def _send_restore(self) -> None:
        if self._restore is None:
            return
        state = {"model": {k: v.detach() for k, v in self._model.state_dict().items()}, **self._restore, "version": self.version}
        self._restore = None
        self._run({"kind": "set_state", "state": ray.put(state)})
        self._weights, self._model_is_current, self._probe_cache = None, True, {}

    def _run(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        """Post ``job`` to every worker and wait for all replies (raising if a worker or ``fit`` failed)."""
        job = {**job, "id": next(self._jobs)}
        ray.get(self._mailbox.post.remote(job))
        pending = self._mailbox.collect.remote(job["id"])
        while not ray.wait([pending], timeout=1.0)[0]:
            if not self._thread.is_alive():
                raise RuntimeError(f"the Ray Train learner stopped before finishing a {job['kind']} job: {self._error!r}")
            if not self._started and time.monotonic() > self._start_deadline:
                free = ray.available_resources().get("CPU", 0.0)
                raise RuntimeError(
                    f"the Ray Train workers did not start in time ({free:g} Ray CPUs free, {self.workers} workers asked for): "
                    "lower cluster.learner_worker_cpus or give Ray more CPUs"
                )
        self._started = True
        replies = ray.get(pending)
        failed = [(rank, r["error"]) for rank, r in enumerate(replies) if "error" in r]
        if failed:
            rank, error = failed[0]
            raise RuntimeError(f"learner worker {rank} failed a {job['kind']} job:\n{error}")
        return replies


class _RemoteOptimizer:
    """What checkpoints need of the workers' optimizers (identical on every worker under DDP)."""

    def __init__(self, learner: RayLearner) -> None:
        self._learner = learner

    def state_dict(self) -> dict[str, Any]:
        self._learner._send_restore()
        return self._learner._run({"kind": "get_state"})[0]["optimizer"]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._learner._restore = {"optimizer": state}
