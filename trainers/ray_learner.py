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

LoRA policies (``model.adapter: lora``): :class:`RayAdapterLearners` starts one
worker group for all of them, as one peft model holds them all in one process.
Each worker holds the peft model (the frozen base once, every policy's adapter)
and an :class:`~arena.trainers.lora.AdapterLearner` per adapter; a job names
its adapter. :class:`RayAdapterLearner` is one policy's handle, with
AdapterLearner's interface: its published weights are the adapter's tensors,
its probe is scored through the adapter, and it saves and loads peft's format.
Gradients are averaged across workers by a hook on each LoRA tensor rather
than by DDP: peft's adapter switches (``set_adapter``, ``disable_adapter``) live
on the peft model, which a DDP wrapper hides, and each step trains one adapter
while DDP expects every trainable tensor to get a gradient.
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

from arena.adapters import adapter_state, load_adapter_state
from arena.config import TrainerConfig
from arena.trainers.lora import AdapterLearner
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
    """The loop of one Ray Train worker: build the learner (or, for LoRA, a learner per adapter),
    then serve jobs until told to stop; a job's ``adapter`` names its learner."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    model = ray.get(config["model"])
    cfg, pad_id, max_len = worker_config(config["cfg"], world), config["pad_id"], config["max_len"]
    learners: dict[str | None, Any]
    if config.get("adapters"):
        model = ray.train.torch.prepare_model(model, parallel_strategy=None)  # to the worker's device, unwrapped
        learners = {name: config["learner_class"](model, name, cfg, pad_id=pad_id, max_len=max_len) for name in config["adapters"]}
        if world > 1:
            average_gradients([p for n, p in model.named_parameters() if ".lora_" in n], world)
    else:
        learner = config["learner_class"](model, cfg, pad_id=pad_id, max_len=max_len)
        # the reference copy and the optimizer were made from the bare model; DDP wraps the same parameters
        learner.model = ray.train.torch.prepare_model(model, parallel_strategy="ddp")
        learners = {None: learner}
    mailbox = config["mailbox"]
    while (job := ray.get(mailbox.next_job.remote(rank))) is not None:
        try:
            result = JOBS[job["kind"]](learners[job.get("adapter")], job, rank, world)
        except Exception:
            ray.get(mailbox.reply.remote(job["id"], rank, {"error": traceback.format_exc()}))
            raise
        ray.get(mailbox.reply.remote(job["id"], rank, result))


def average_gradients(params: Sequence[torch.nn.Parameter], world: int) -> None:
    """Average each tensor's gradient over the ``world`` workers as soon as backward has accumulated
    it, before the learner clips and steps: DDP's arithmetic for tensors that may or may not train
    in a given step (LoRA: only the stepping adapter's get gradients, on every worker alike)."""
    import torch.distributed as dist

    def average(p: torch.nn.Parameter) -> None:
        dist.all_reduce(p.grad)
        p.grad.div_(world)

    for p in params:
        p.register_post_accumulate_grad_hook(average)


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
    """Worker 0's weights in the object store (a LoRA learner's: its adapter's tensors), their
    version and size (tensors, bytes), and the probe scored on them."""
    if isinstance(learner, AdapterLearner):
        weights = learner.engine_weights()
        scored = learner.probe_logprobs(probe) if probe is not None else None
    else:
        model = _bare(learner)
        weights = {k: v.detach() for k, v in model.state_dict().items()}
        scored = probe_logprobs(model, probe) if probe is not None else None
    out: dict[str, Any] = {"version": learner.version, "weights": ray.put(weights), "size": state_size(weights)}
    if scored is not None:
        out["probe"] = scored
    return out


def state_size(state: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(tensors, bytes) of a state dict: what a weight sync sends each engine."""
    return len(state), sum(v.numel() * v.element_size() for v in state.values())


def _get_state_job(learner: Any, job: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    if rank != 0:
        return {}
    out = {"optimizer": learner.optimizer.state_dict(), "version": learner.version}
    if isinstance(learner, AdapterLearner):  # the adapter's tensors as the workers hold them now
        out["weights"] = learner.engine_weights()
    return out


def _set_state_job(learner: Any, job: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    state = ray.get(job["state"])
    if isinstance(learner, AdapterLearner):
        load_adapter_state(learner.model, learner.name, state["model"])
    else:
        with torch.no_grad():
            _bare(learner).load_state_dict(state["model"])
    learner.optimizer.load_state_dict(state["optimizer"])
    learner.version = int(state["version"])
    return {"version": learner.version}


#: job kind -> what a worker does with it
JOBS = {"learn": _learn_job, "probe": _probe_job, "get_state": _get_state_job, "set_state": _set_state_job}


# ----- the worker group ------------------------------------------------------------------------------
class TrainWorkers:
    """``workers`` Ray Train workers running :func:`_train_worker` for a learner's whole life: one
    ``TorchTrainer.fit()`` in a thread of the driver, jobs and replies through a :class:`LearnerMailbox`.

    ``loop_config`` is what every worker builds its learner(s) from (``learner_class``, ``model``
    as an ObjectRef, ``cfg``, ``pad_id``, ``max_len``, and ``adapters`` for LoRA).
    """

    def __init__(
        self,
        loop_config: dict[str, Any],
        *,
        workers: int,
        cpus_per_worker: float,
        use_gpu: bool,
        name: str,
        storage_path: str | None = None,
        start_timeout_s: float = 600.0,
    ) -> None:
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._jobs = itertools.count()
        self._error: BaseException | None = None
        self._started = False
        self._start_deadline = time.monotonic() + start_timeout_s
        self._mailbox = LearnerMailbox.remote(workers)
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config={**loop_config, "mailbox": self._mailbox},
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

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def run(self, job: dict[str, Any]) -> list[dict[str, Any]]:
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

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the workers (``fit`` returns) and the mailbox."""
        if self._thread.is_alive():
            ray.get(self._mailbox.post.remote(None))
            self._thread.join(timeout_s)
        ray.kill(self._mailbox)


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
        self.cfg = cfg
        self.workers = workers
        self.version = 0
        #: (tensors, bytes) of the weights :attr:`weights` holds: what a sync sends each engine
        self.weights_size: tuple[int, int] | None = None
        self._model = model
        self._weights: Any = None  # ObjectRef of the newest weights, once the workers produced some
        self._model_is_current = True
        self._probe: Probe | None = None
        self._probe_cache: dict[tuple[int, Probe], list[float]] = {}
        self._restore: dict[str, Any] | None = None
        self._workers = TrainWorkers(
            {"learner_class": learner_class, "model": ray.put(model), "cfg": cfg, "pad_id": pad_id, "max_len": max_len},
            workers=workers,
            cpus_per_worker=cpus_per_worker,
            use_gpu=use_gpu,
            name=name,
            storage_path=storage_path,
            start_timeout_s=start_timeout_s,
        )

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
        return _learn_stats(replies, len(samples))

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
            state = {k: v.detach() for k, v in self._model.state_dict().items()}
            self._weights, self.weights_size = ray.put(state), state_size(state)
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
        if self._workers.running:
            _ = self.model  # the newest weights live in worker 0's object store: fetch them before it stops
        self._workers.stop(timeout_s)

    # ----- internals ---------------------------------------------------------------------------------
    def _adopt(self, reply: dict[str, Any]) -> None:
        self.version = int(reply["version"])
        self._weights, self.weights_size = reply["weights"], tuple(reply["size"])
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
        return self._workers.run(job)


class _RemoteOptimizer:
    """What checkpoints need of the workers' optimizers (identical on every worker under DDP)."""

    def __init__(self, learner: RayLearner) -> None:
        self._learner = learner

    def state_dict(self) -> dict[str, Any]:
        self._learner._send_restore()
        return self._learner._run({"kind": "get_state"})[0]["optimizer"]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._learner._restore = {"optimizer": state}


def _learn_stats(replies: list[dict[str, Any]], samples: int) -> dict[str, float]:
    stats = combine_stats([r["stats"] for r in replies], samples)
    if stats:
        stats["worker_learn_s_max"] = max(r["learn_s"] for r in replies)
    return stats


# ----- LoRA policies -----------------------------------------------------------------------------------
class RayAdapterLearners:
    """Every LoRA policy of a run on one group of Ray Train workers (see the module docstring).

    ``model`` is a peft model holding an adapter per name (:func:`arena.adapters.add_adapters`);
    it is the driver's copy, shipped to every worker as it is (so each adapter starts from the same
    tensors everywhere). :attr:`learners` maps each name to its :class:`RayAdapterLearner`.
    """

    def __init__(
        self,
        model: Any,
        names: Sequence[str],
        cfg: TrainerConfig,
        *,
        pad_id: int,
        max_len: int = 2048,
        workers: int = 2,
        cpus_per_worker: float = 0.25,
        use_gpu: bool = False,
        name: str = "lora",
        storage_path: str | None = None,
        start_timeout_s: float = 600.0,
    ) -> None:
        names = list(names)
        self.model = model
        self.workers = TrainWorkers(
            {"learner_class": AdapterLearner, "model": ray.put(model), "cfg": cfg, "pad_id": pad_id, "max_len": max_len, "adapters": names},
            workers=workers,
            cpus_per_worker=cpus_per_worker,
            use_gpu=use_gpu,
            name=name,
            storage_path=storage_path,
            start_timeout_s=start_timeout_s,
        )
        self.learners = {n: RayAdapterLearner(self, AdapterLearner(model, n, cfg, pad_id=pad_id, max_len=max_len)) for n in names}

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the workers; the driver's ``model`` keeps every adapter's last tensors."""
        if self.workers.running:
            for learner in self.learners.values():  # the newest tensors live in worker 0's object store
                learner.fetch()
        self.workers.stop(timeout_s)


class RayAdapterLearner:
    """One LoRA policy's learner on a :class:`RayAdapterLearners` worker group, with the interface of
    :class:`~arena.trainers.lora.AdapterLearner` (``learn``, ``version``, ``engine_weights``,
    ``probe_logprobs``, ``save``, ``load``).

    ``local`` is the driver's side: an AdapterLearner of the driver's peft model. It is brought up to
    date from worker 0 when saved; a checkpoint loads into it, and its tensors, optimizer state and
    ``version`` go to every worker before the next job.
    """

    def __init__(self, group: RayAdapterLearners, local: AdapterLearner) -> None:
        self.group, self.local, self.name = group, local, local.name
        self.version = 0
        #: (tensors, bytes) of the tensors :attr:`weights` holds: what a sync sends each engine
        self.weights_size: tuple[int, int] | None = None
        self._weights: Any = None  # ObjectRef of worker 0's newest tensors of this adapter
        self._probe: Probe | None = None
        self._probe_cache: dict[tuple[int, Probe], list[float]] = {}
        self._restore = False

    def learn(self, samples: Sequence[Any], generator: torch.Generator) -> dict[str, float]:
        """One round of updates of this adapter on ``samples`` across the workers (as ``RayLearner.learn``)."""
        if not samples:
            return {}
        self._send_restore()
        items = ray.put(list(samples))
        replies = self._run({"kind": "learn", "items": items, "generator": generator.get_state(), "probe": self._probe})
        self._adopt(replies[0])
        return _learn_stats(replies, len(samples))

    @property
    def weights(self) -> Any:
        """An ObjectRef to the adapter's current tensors (worker 0's after an update, else the driver's)."""
        self._send_restore()
        if self._weights is None:
            state = self.local.weights
            self._weights, self.weights_size = ray.put(state), state_size(state)
        return self._weights

    def engine_weights(self) -> dict[str, torch.Tensor]:
        """The adapter's tensors: what its engines load (and what a snapshot pool keeps)."""
        return ray.get(self.weights)

    def probe_logprobs(self, probe: Probe) -> list[float]:
        """Worker 0's log-probabilities of ``probe`` through this adapter (later updates score it as part of ``learn``)."""
        self._probe = probe
        self._send_restore()
        key = (self.version, probe)
        if key not in self._probe_cache:
            self._adopt(self._run({"kind": "probe", "probe": probe})[0])
        return self._probe_cache[key]

    def worker_state(self) -> dict[str, Any]:
        """Worker 0's state of this adapter now: its ``weights`` (tensors), ``optimizer`` state and ``version``."""
        self._send_restore()
        return self._run({"kind": "get_state"})[0]

    def fetch(self) -> None:
        """Bring ``local`` (the driver's adapter and optimizer) up to worker 0's."""
        state = self.worker_state()
        load_adapter_state(self.local.model, self.name, state["weights"])
        self.local.optimizer.load_state_dict(state["optimizer"])
        self.local.version = int(state["version"])

    def save(self, directory: Any) -> None:
        """The adapter in peft's format and the optimizer state, as :meth:`AdapterLearner.save` writes them."""
        self.fetch()
        self.local.save(directory)

    def load(self, directory: Any) -> None:
        """Load what :meth:`save` wrote; it reaches the workers before their next job."""
        self.local.load(directory)
        self._restore = True

    # ----- internals ---------------------------------------------------------------------------------
    def _adopt(self, reply: dict[str, Any]) -> None:
        self.version = int(reply["version"])
        self._weights, self.weights_size = reply["weights"], tuple(reply["size"])
        if "probe" in reply:
            self._probe_cache = {(self.version, self._probe): reply["probe"]}

    def _send_restore(self) -> None:
        if not self._restore:
            return
        self._restore = False
        state = {"model": adapter_state(self.local.model, self.name), "optimizer": self.local.optimizer.state_dict(), "version": self.version}
        self._run({"kind": "set_state", "state": ray.put(state)})
        self._weights, self._probe_cache = None, {}

    def _run(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        return self.group.workers.run({**job, "adapter": self.name})

    def __repr__(self) -> str:
        return f"<RayAdapterLearner {self.name}@{self.version} on {self.group.workers.workers} Ray Train workers>"
