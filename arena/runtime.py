"""Where a run's policies live and play: the model policies (engines, learners, snapshots), the
fixed policies, and the runtime that plays matchups and syncs weights.

:class:`LocalRuntime` runs everything in this process (``cluster.mode: local``, the default);
:class:`arena.distributed.RayRuntime` does the same with actors on a Ray cluster. A runtime makes
the model policies' engines and learners, plays a batch of matchups and pushes a learner's weights to
its engine; the experiment driver (:mod:`arena.experiment`) is the same for both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from arena.agents.base import Policy
from arena.agents.catalog import make_fixed_policy
from arena.agents.llm import LLMAgent
from arena.config import LEAGUE, SNAPSHOT, ClusterConfig, EngineConfig, ModelConfig, RolloutConfig, RunConfig, TrainerConfig, is_model_policy
from arena.engines.base import SamplingParams
from arena.records import Episode, Matchup
from arena.rollout import play_many
from arena.seeds import TRAIN


@dataclass
class ModelPolicies:
    """The run's model policies: per policy id an engine-backed agent and (when training) a learner."""

    agents: dict[str, LLMAgent]
    learners: dict[str, Any]
    tokenizer: Any
    snapshot: LLMAgent | None = None
    #: version -> weights of past snapshots of "main", served to "snapshot" seats
    pool: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    #: a new engine-backed agent: (policy id, model directory or None for the run's model)
    make_agent: Callable[[str, str | None], LLMAgent] | None = None

    @property
    def trained(self) -> bool:
        return bool(self.learners)


def model_policy_ids(cfg: RunConfig) -> list[str]:
    ids = {pid for g in cfg.games for seats in g.matchups for pid in seats.values() if is_model_policy(pid)}
    if cfg.critic is not None and is_model_policy(cfg.critic.critic):
        ids.add(cfg.critic.critic)
    return sorted(ids)


class LocalRuntime:
    """``cluster.mode: local``, the default: engines, learners and rollouts in this process.

    A runtime makes the model policies' engines and learners, plays a round's
    matchups, and pushes a learner's weights to its engine; :class:`arena.distributed.RayRuntime`
    does the same with actors on a Ray cluster.
    """

    def __init__(self, model: ModelConfig, engine: EngineConfig, trainer: TrainerConfig, rollout: RolloutConfig, cluster: ClusterConfig) -> None:
        self.model, self.engine_cfg, self.trainer, self.rollout, self.cluster = model, engine, trainer, rollout, cluster
        self.probes: dict[str, Any] = {}

    @classmethod
    def for_run(cls, cfg: RunConfig) -> LocalRuntime:
        """The runtime of a run config: each part gets its own section."""
        return cls(cfg.model, cfg.engine, cfg.trainer, cfg.rollout, cfg.cluster)

    def __enter__(self) -> LocalRuntime:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def engine(self, name: str, model_path: str) -> Any:
        if self.engine_cfg.kind == "vllm":
            from arena.engines.vllm import VLLMEngine

            # LoRA policies are adapters of one vLLM engine, sized for their rank when it starts
            lora = self.model.adapter == "lora"
            return VLLMEngine(
                model_path, dtype=self.model.dtype, max_batch_size=self.engine_cfg.max_batch_size, enable_lora=lora, max_lora_rank=self.model.lora.rank
            )
        from arena.engines.hf import HFEngine

        return HFEngine(model_path, device=self.model.device, dtype=self.model.dtype, max_batch_size=self.engine_cfg.max_batch_size)

    def learner(self, learner_class: type, model: Any, *, pad_id: int, max_len: int, name: str = "learner", replay: Sequence[Any] = ()) -> Any:
        return learner_class(model, self.trainer, pad_id=pad_id, max_len=max_len, **({"replay": replay} if replay else {}))

    def adapter_learners(self, model: Any, names: list[str], *, pad_id: int, max_len: int, replay: Sequence[Any] = ()) -> dict[str, Any]:
        """LoRA policies: a learner per adapter of the peft ``model``, all sharing its one base."""
        from arena.trainers.lora import AdapterLearner

        return {name: AdapterLearner(model, name, self.trainer, pad_id=pad_id, max_len=max_len, replay=replay) for name in names}

    def play(
        self,
        matchups: list[Matchup],
        pools: Mapping[str, Mapping[str, Policy]],
        ids: list[str],
        console: Console,
        label: str,
        *,
        step: int | None = None,
        tag: str = "train",
    ) -> list[Episode]:
        return play_with_progress(matchups, pools, ids, self.rollout, console, label)

    def sync(self, policy_id: str, engine: Any, learner: Any) -> dict[str, float]:
        """Load the learner's weights into its engine, with its version, and check the engine on the probe."""
        from arena.weight_sync import make_probe, probe_logprobs, sync_local

        probe = self.probes.setdefault(policy_id, make_probe(engine.tokenizer))
        own = hasattr(learner, "probe_logprobs")
        report = sync_local(
            {policy_id: engine},
            engine_weights(learner),
            learner.version,
            probe,
            learner.probe_logprobs(probe) if own else probe_logprobs(learner.model, probe),
            tolerance=self.cluster.probe_tolerance,
        )
        return report.metrics(f"sync/{policy_id}")


def engine_weights(learner: Any) -> dict[str, torch.Tensor]:
    """What a learner's engines load after an update: what it says (a LoRA adapter: its tensors), else its model's state dict."""
    return learner.engine_weights() if hasattr(learner, "engine_weights") else learner.model.state_dict()


def make_runtime(cfg: RunConfig) -> Any:
    """The runtime ``cluster.mode`` names (Ray is imported only for ``ray``)."""
    if cfg.cluster.mode == "ray":
        from arena.distributed import RayRuntime

        return RayRuntime(cfg)
    return LocalRuntime.for_run(cfg)


def load_model_policies(cfg: RunConfig, console: Console, runtime: Any = None) -> ModelPolicies | None:
    ids = model_policy_ids(cfg)
    if not ids:
        return None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arena.models import run_model_path
    from arena.trainers.recipes import RECIPES

    if cfg.model.path and cfg.model.warm_start is not None:
        console.print(
            f"[yellow]model.warm_start ({cfg.model.warm_start.recipe}) is skipped:[/yellow] it builds the tiny model, "
            f"and model.path={cfg.model.path} is used as given (set model.warm_start=null to silence this)"
        )
    from arena.progress import build_progress

    with console.status("Preparing the model (built once and cached)") as status:
        with build_progress(lambda line: status.update(f"Preparing the model (built once and cached): {line}")):
            path = run_model_path(cfg)
        tokenizer = AutoTokenizer.from_pretrained(path)
    console.print(f"model: [bold]{path}[/bold]")
    sampling = SamplingParams(max_new_tokens=cfg.sampling.max_new_tokens, temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p)

    runtime = runtime or LocalRuntime.for_run(cfg)

    def agent(policy_id: str, model_path: str | None = None) -> LLMAgent:
        engine = runtime.engine(policy_id, model_path or path)
        return LLMAgent(engine, policy_id, sampling=sampling, history_turns=cfg.agent.history_turns, max_prompt_tokens=cfg.agent.max_prompt_tokens)

    if cfg.model.adapter == "lora":
        return _lora_policies(cfg, ids, path, tokenizer, sampling, runtime)
    agents = {pid: agent(pid) for pid in ids}
    learners = {}
    if cfg.trainer.training:
        learner_class = RECIPES[cfg.trainer.recipe].learner
        replay = _replay(cfg, path, console)
        for pid in ids:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(cfg.model.dtype)).to(cfg.model.device)
            learners[pid] = runtime.learner(
                learner_class,
                model,
                pad_id=tokenizer.pad_token_id,
                max_len=cfg.agent.max_prompt_tokens + cfg.sampling.max_new_tokens,
                name=pid,
                **({"replay": replay} if replay else {}),
            )
    policies = ModelPolicies(agents=agents, learners=learners, tokenizer=tokenizer, make_agent=agent)
    if any(pid == SNAPSHOT for g in cfg.games for seats in g.matchups for pid in seats.values()):
        policies.snapshot = agent("main@0")
        policies.pool[0] = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(cfg.model.dtype)).state_dict()
    return policies


def _replay(cfg: RunConfig, path: str, console: Console | None) -> list:
    """The warm start's examples for ``trainer.replay_coef`` (none when it is 0)."""
    if cfg.trainer.replay_coef <= 0:
        return []
    from arena.warm_start import replay_examples

    examples = replay_examples(cfg.model.warm_start, path)
    if console is not None:
        console.print(f"replay: {len(examples)} examples of the warm start, {cfg.trainer.replay_batch} per update at weight {cfg.trainer.replay_coef}")
    return examples


def _lora_policies(cfg: RunConfig, ids: list[str], path: str, tokenizer: Any, sampling: SamplingParams, runtime: Any) -> ModelPolicies:
    """Every model policy a LoRA adapter of one base: one engine serves them all (each agent through
    an :class:`~arena.adapters.AdapterView`), and their learners share one base model. Past versions
    (the ``snapshot`` seat's pool, a league's snapshots) are adapters of the same engine too, so a pool
    of 32 versions costs 32 adapters, not 32 models."""
    from transformers import AutoModelForCausalLM

    from arena.adapters import AdapterView, add_adapters

    engine = runtime.engine("lora", path)
    engine.add_adapters(cfg.model.lora, ids)

    def agent(policy_id: str, model_path: str | None = None, adapter: str | None = None) -> LLMAgent:
        """An agent on adapter ``adapter`` (default: one named ``policy_id``, added on first use);
        a model directory (another run's checkpoint) gets an engine of its own."""
        if model_path is not None:
            view: Any = runtime.engine(policy_id, model_path)
        else:
            name = adapter or policy_id
            if name not in engine.adapter_versions:
                engine.add_adapters(cfg.model.lora, [name])
            view = AdapterView(engine, name)
        return LLMAgent(view, policy_id, sampling=sampling, history_turns=cfg.agent.history_turns, max_prompt_tokens=cfg.agent.max_prompt_tokens)

    agents = {pid: agent(pid) for pid in ids}
    learners = {}
    if cfg.trainer.training:
        base = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(cfg.model.dtype)).to(cfg.model.device)
        shared = add_adapters(base, cfg.model.lora, ids, seed=cfg.seed)
        max_len = cfg.agent.max_prompt_tokens + cfg.sampling.max_new_tokens
        replay = _replay(cfg, path, None)
        learners = runtime.adapter_learners(shared, ids, pad_id=tokenizer.pad_token_id, max_len=max_len, **({"replay": replay} if replay else {}))
    policies = ModelPolicies(agents=agents, learners=learners, tokenizer=tokenizer, make_agent=agent)
    if any(pid == SNAPSHOT for g in cfg.games for seats in g.matchups for pid in seats.values()):
        # one adapter slot into which choose_snapshot loads the drawn version; version 0 is main's start
        policies.snapshot = agent("main@0", adapter=SNAPSHOT)
        start = learners["main"] if "main" in learners else None
        policies.pool[0] = engine_weights(start) if start is not None else engine.adapter_state("main")
    return policies


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def policy_pools(cfg: RunConfig, models: ModelPolicies | None) -> dict[str, dict[str, Policy]]:
    """Per game id: policy id -> policy (bots are per game: "scripted/random" differs between games)."""
    pools: dict[str, dict[str, Policy]] = {}
    for game in cfg.games:
        pool = pools.setdefault(game.id, {})
        for seats in game.matchups:
            for pid in seats.values():
                if pid in pool or pid in (SNAPSHOT, LEAGUE):
                    continue
                pool[pid] = models.agents[pid] if is_model_policy(pid) else make_fixed_policy(pid, game.id)
    return pools


def choose_snapshot(cfg: RunConfig, models: ModelPolicies | None, round_index: int) -> str:
    """Load a past snapshot of "main", drawn from the pool by the round's own generator, into the snapshot engine."""
    if models is None or models.snapshot is None:
        return SNAPSHOT
    versions = sorted(models.pool)
    rng = np.random.default_rng([cfg.seed, TRAIN, round_index, 0x5A])
    version = versions[int(rng.integers(len(versions)))]
    engine = models.snapshot.engine
    if engine.version != version:
        engine.update_weights(models.pool[version], version)
    models.snapshot.policy_id = f"main@{version}"
    return models.snapshot.policy_id


def play_with_progress(
    matchups: list[Matchup],
    pools: Mapping[str, Mapping[str, Policy]] | Callable[[Matchup], Mapping[str, Policy]],
    ids: list[str],
    rollout: RolloutConfig,
    console: Console,
    label: str,
) -> list[Episode]:
    """Play with a progress bar; ``pools`` maps game id -> policies, or is a function of the matchup."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"{label}: episodes", total=len(matchups))
        return asyncio.run(
            play_many(
                matchups,
                pools if callable(pools) else (lambda m: pools[m.game]),
                concurrency=rollout.concurrency,
                episode_ids=ids,
                on_episode=lambda ep: progress.advance(task),
                max_steps=rollout.max_steps,
            )
        )
