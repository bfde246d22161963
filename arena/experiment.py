"""An experiment: evaluate the model policies, train them by self-play, evaluate again.

``arena run`` calls :func:`run`. It reads top to bottom:

1. set up the run (MLflow run, model policies with their engines and learners)
   or resume one from its latest checkpoint;
2. evaluate every seating (the "before" tournament);
3. for each training round: build the matchups (groups of episodes sharing a
   seed), play them concurrently, turn the trained seats' returns into
   advantaged samples, update each trained policy, push the new weights to its
   engine with a version number, log, checkpoint (``trainer.recipe=dpo``: each
   training matchup grows a debate tree instead, and the policy learns from its
   preference pairs; see :mod:`arena.trainers.trees`);
4. evaluate again (the "after" tournament) and print the before/after table.

With ``trainer.recipe=none`` only step 2 runs: a tournament.

Where it runs is ``cluster.mode``'s choice of runtime, the object the loop asks
for engines and learners, to play a batch of matchups and to sync a learner's
weights: :class:`LocalRuntime` (one process, the default) or
:class:`arena.distributed.RayRuntime` (rollout workers, engine actors and a
Ray Train learner). The loop is the same for both.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from arena import checkpoint, tracking
from arena.agents.base import Policy
from arena.agents.catalog import make_fixed_policy
from arena.agents.llm import LLMAgent
from arena.config import SNAPSHOT, ConfigError, RunConfig, dump_config, is_model_policy
from arena.engines.base import SamplingParams
from arena.records import Episode, Matchup
from arena.rollout import play_many

EVAL, TRAIN = 0, 1  # seed-path tags: evaluation and training episodes never share seeds


@dataclass
class RunResult:
    run_id: str
    before: list[Episode] = field(default_factory=list)
    after: list[Episode] = field(default_factory=list)
    #: the game-entry label of each evaluation episode
    labels: list[str] = field(default_factory=list)
    rounds_done: int = 0
    traces_logged: int = 0
    seconds: float = 0.0
    run_dir: Path | None = None


def episode_seed(run_seed: int, *path: int) -> int:
    """A seed for one episode from the run seed and its place in the run."""
    return int(np.random.SeedSequence([run_seed, *path]).generate_state(1)[0])


def eval_matchups(cfg: RunConfig) -> tuple[list[Matchup], list[str]]:
    """Every seating, ``episodes_per_matchup`` times; the same seeds before and after training."""
    out, labels = [], []
    for gi, game in enumerate(cfg.games):
        for mi, seats in enumerate(game.matchups):
            for k in range(cfg.episodes_per_matchup):
                seed = episode_seed(cfg.seed, EVAL, gi, mi, k)
                out.append(Matchup(game=game.id, seed=seed, seats=dict(seats), game_kwargs=dict(game.kwargs)))
                labels.append(game.label)
    return out, labels


def train_matchups(cfg: RunConfig, round_index: int, snapshot_id: str) -> tuple[list[Matchup], list[str]]:
    """Seatings with a trained seat, ``groups_per_matchup`` groups of ``group_size`` samples each."""
    t = cfg.trainer
    out, labels = [], []
    for gi, game in enumerate(cfg.games):
        if game.eval_only:
            continue
        for mi, seats in enumerate(game.matchups):
            if not any(is_model_policy(p) for p in seats.values()):
                continue
            seats = {p: (snapshot_id if pid == SNAPSHOT else pid) for p, pid in seats.items()}
            for g in range(t.groups_per_matchup):
                seed = episode_seed(cfg.seed, TRAIN, round_index, gi, mi, g)
                for k in range(t.group_size):
                    out.append(Matchup(game=game.id, seed=seed, seats=dict(seats), game_kwargs=dict(game.kwargs), sample=k))
                    labels.append(game.label)
    return out, labels


# ----- the model policies ------------------------------------------------------------------------
@dataclass
class ModelPolicies:
    """The run's model policies: per policy id an engine-backed agent and (when training) a learner."""

    agents: dict[str, LLMAgent]
    learners: dict[str, Any]
    tokenizer: Any
    snapshot: LLMAgent | None = None
    #: version -> weights of past snapshots of "main", served to "snapshot" seats
    pool: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def trained(self) -> bool:
        return bool(self.learners)


def model_policy_ids(cfg: RunConfig) -> list[str]:
    ids = {pid for g in cfg.games for seats in g.matchups for pid in seats.values() if is_model_policy(pid)}
    if cfg.critic is not None and is_model_policy(cfg.critic.critic):
        ids.add(cfg.critic.critic)
    return sorted(ids)


# ----- where engines, learners and rollouts run ---------------------------------------------------
class LocalRuntime:
    """``cluster.mode: local``, the default: engines, learners and rollouts in this process.

    A runtime makes the model policies' engines and learners, plays a round's
    matchups, and pushes a learner's weights to its engine; :class:`arena.distributed.RayRuntime`
    does the same with actors on a Ray cluster.
    """

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.probes: dict[str, Any] = {}

    def __enter__(self) -> "LocalRuntime":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def engine(self, name: str, model_path: str) -> Any:
        from arena.engines.hf import HFEngine

        return HFEngine(model_path, device=self.cfg.model.device, dtype=self.cfg.model.dtype, max_batch_size=self.cfg.engine.max_batch_size)

    def learner(self, learner_class: type, model: Any, *, pad_id: int, max_len: int, name: str = "learner") -> Any:
        return learner_class(model, self.cfg.trainer, pad_id=pad_id, max_len=max_len)

    def play(self, matchups: list[Matchup], pools: Mapping[str, Mapping[str, Policy]], ids: list[str], console: Console, label: str,
             *, step: int | None = None, tag: str = "train") -> list[Episode]:
        return _play(matchups, pools, ids, self.cfg, console, label)

    def sync(self, policy_id: str, engine: Any, learner: Any) -> dict[str, float]:
        """Load the learner's weights into its engine, with its version, and check the engine on the probe."""
        from arena.weight_sync import make_probe, probe_logprobs, sync_local

        probe = self.probes.setdefault(policy_id, make_probe(engine.tokenizer))
        report = sync_local({policy_id: engine}, learner.model.state_dict(), learner.version, probe, probe_logprobs(learner.model, probe),
                            tolerance=self.cfg.cluster.probe_tolerance)
        return report.metrics(f"sync/{policy_id}")


def make_runtime(cfg: RunConfig) -> Any:
    """The runtime ``cluster.mode`` names (Ray is imported only for ``ray``)."""
    if cfg.cluster.mode == "ray":
        from arena.distributed import RayRuntime

        return RayRuntime(cfg)
    return LocalRuntime(cfg)


def load_model_policies(cfg: RunConfig, console: Console, runtime: Any = None) -> ModelPolicies | None:
    ids = model_policy_ids(cfg)
    if not ids:
        return None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arena.models import resolve_model_path
    from arena.trainers.dpo import DPOLearner
    from arena.trainers.selfplay import Learner

    with console.status("Preparing the model (built once and cached)"):
        path = resolve_model_path(cfg.model.path, cfg.model.tiny, warm_start=cfg.model.warm_start)
        tokenizer = AutoTokenizer.from_pretrained(path)
    console.print(f"model: [bold]{path}[/bold]")
    sampling = SamplingParams(max_new_tokens=cfg.sampling.max_new_tokens, temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p)

    runtime = runtime or LocalRuntime(cfg)

    def agent(policy_id: str) -> LLMAgent:
        engine = runtime.engine(policy_id, path)
        return LLMAgent(engine, policy_id, sampling=sampling, history_turns=cfg.agent.history_turns, max_prompt_tokens=cfg.agent.max_prompt_tokens)

    agents = {pid: agent(pid) for pid in ids}
    learners = {}
    if cfg.trainer.recipe != "none" and cfg.trainer.rounds > 0:
        for pid in ids:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(cfg.model.dtype)).to(cfg.model.device)
            learner_class = DPOLearner if cfg.trainer.recipe == "dpo" else Learner
            learners[pid] = runtime.learner(learner_class, model, pad_id=tokenizer.pad_token_id, max_len=cfg.agent.max_prompt_tokens + cfg.sampling.max_new_tokens, name=pid)
    policies = ModelPolicies(agents=agents, learners=learners, tokenizer=tokenizer)
    if any(pid == SNAPSHOT for g in cfg.games for seats in g.matchups for pid in seats.values()):
        policies.snapshot = agent("main@0")
        policies.pool[0] = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(cfg.model.dtype)).state_dict()
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
                if pid in pool or pid == SNAPSHOT:
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


# ----- the run -----------------------------------------------------------------------------------
def run(cfg: RunConfig, console: Console | None = None, *, resume: bool = False) -> RunResult:
    import mlflow

    from arena.trainers.advantages import RoleBaseline
    from arena.trainers.trees import policy_pairs
    from arena.trainers.selfplay import policy_gradient_samples, rest_samples, trained_seats

    console = console or Console()
    if cfg.critic is not None:
        from arena.critic_loop import run_critic_loop

        if resume:
            raise ConfigError("a critic-loop run has no checkpoints to resume: run it again (it is seeded)")
        return run_critic_loop(cfg, console)
    tracking.quiet_mlflow()
    mlflow.set_tracking_uri(tracking.tracking_uri(cfg.tracking.uri))
    mlflow.set_experiment(cfg.tracking.experiment)
    t = cfg.trainer
    training = t.recipe != "none" and t.rounds > 0

    ckpt = _checkpoint_to_resume(cfg) if resume else None
    state: dict[str, Any] = checkpoint.read_state(ckpt) if ckpt else {}
    runtime = make_runtime(cfg)
    models = load_model_policies(cfg, console, runtime)
    pools = policy_pools(cfg, models)
    baselines = {pid: RoleBaseline(decay=t.baseline_decay) for pid in (models.learners if models else {})} if t.baseline != "none" else {}
    started = time.perf_counter()

    with runtime, mlflow.start_run(run_id=state.get("run_id"), run_name=None if state else (cfg.tracking.run_name or cfg.name)) as active:
        run_id = active.info.run_id
        result = RunResult(run_id=run_id, run_dir=checkpoint.run_dir(cfg.runs_dir, cfg.name) / run_id)
        logged = _logged_steps(run_id)
        if state:
            start_round = _restore(state, ckpt, models, baselines)
            console.print(f"Resuming MLflow run [bold]{run_id}[/bold] after round {start_round} from {ckpt}")
        else:
            start_round = 0
            mlflow.log_text(dump_config(cfg), "config.yaml")
            mlflow.log_params(tracking.flat_params({k: v for k, v in cfg.model_dump(mode="json").items() if k != "games"}))
            mlflow.log_param("games", ",".join(g.label for g in cfg.games))
            console.print(f"MLflow run [bold]{run_id}[/bold] in {mlflow.get_tracking_uri()}")

        matchups, labels = eval_matchups(cfg)
        result.labels = labels
        if state.get("before_done") or (state and not training):
            result.before = [Episode.model_validate(e) for e in state.get("before", [])]
        else:
            result.before = _evaluate(cfg, runtime, models, pools, matchups, labels, console, step=0, tag="before" if training else "eval", logged=logged)
            result.traces_logged += min(cfg.tracking.traces_per_round, len(result.before))
            if training:  # round 0's checkpoint: a run killed in its first round resumes too
                _save(cfg, result, 0, models, baselines, state_extra={"before": result.before})

        for r in range(start_round, t.rounds if training else 0):
            phase: dict[str, float] = {}
            tick = time.perf_counter()
            snapshot_id = choose_snapshot(cfg, models, r)
            pools_r = {g: {**p, snapshot_id: models.snapshot} if models.snapshot else p for g, p in pools.items()}
            matchups_r, labels_r = train_matchups(cfg, r, snapshot_id)
            tokens0 = sum(a.engine.stats.completion_tokens for a in models.agents.values())
            if t.recipe == "dpo":  # debate trees: pairs to learn from, and every game played in them
                trees, episodes, labels_r = _grow_trees(matchups_r, labels_r, pools_r, cfg, r, console)
            else:
                episodes = runtime.play(matchups_r, pools_r, [f"train{r}-{i:05d}" for i in range(len(matchups_r))], console, f"round {r + 1}/{t.rounds}", step=r)
            phase["rollout_s"] = time.perf_counter() - tick
            tokens = sum(a.engine.stats.completion_tokens for a in models.agents.values()) - tokens0
            metrics = {f"train/{k}": v for k, v in round_metrics(episodes, labels_r).items()}
            metrics["train/rollout_tokens_per_s"] = tokens / phase["rollout_s"]

            tick = time.perf_counter()
            for pid, learner in models.learners.items():
                seats = trained_seats(episodes, pid, t.return_mix, labels_r)
                if t.recipe == "pg":
                    samples, extra = policy_gradient_samples(seats, t, baselines.get(pid))
                elif t.recipe == "dpo":
                    samples, extra = policy_pairs(trees, pid)
                else:
                    samples, extra = rest_samples(seats, t)
                gen = torch.Generator().manual_seed(episode_seed(cfg.seed, TRAIN, r, 0x1EA2))
                stats = learner.learn(samples, gen)
                metrics.update({f"learn/{pid}/{k}": v for k, v in {**stats, **extra}.items()})
            phase["learn_s"] = time.perf_counter() - tick

            tick = time.perf_counter()
            for pid, learner in models.learners.items():
                metrics.update(runtime.sync(pid, models.agents[pid].engine, learner))
            if models.snapshot is not None and (r + 1) % t.snapshot_every == 0 and "main" in models.learners:
                models.pool[models.learners["main"].version] = {k: v.detach().clone() for k, v in models.learners["main"].model.state_dict().items()}
            phase["sync_s"] = time.perf_counter() - tick

            # Log before checkpointing: a kill in between re-runs this round on resume, which then
            # finds its metrics already logged (same values: the round is deterministic) and skips them.
            metrics.update({f"time/{k}": v for k, v in phase.items()})
            metrics["train/round"] = float(r)
            if r not in logged:
                mlflow.log_metrics(metrics, step=r)
                _log_traces(cfg, episodes, r, f"train/round_{r:05d}.jsonl")
                result.traces_logged += min(cfg.tracking.traces_per_round, len(episodes))
            done = r + 1
            if done % t.checkpoint_every == 0 or done == t.rounds:
                tick = time.perf_counter()
                _save(cfg, result, done, models, baselines, state_extra={"before": result.before})
                mlflow.log_metric("time/checkpoint_s", time.perf_counter() - tick, step=r)
            result.rounds_done = done

        if training:
            result.after = _evaluate(cfg, runtime, models, pools, matchups, labels, console, step=t.rounds, tag="after", logged=set())
            result.traces_logged += min(cfg.tracking.traces_per_round, len(result.after))
            _log_reward_curve(run_id, cfg)
        qa = _qa_results(result) if any(g.id.startswith("collab_qa-") for g in cfg.games) else None
        if qa is not None:
            from arena.environments.collab_qa.evaluation import log_run_results

            log_run_results(*qa)
        tracking.flush_traces()
        result.seconds = time.perf_counter() - started
        mlflow.log_metric("run/seconds", result.seconds)

    if training:
        console.print(before_after_table(result))
    else:
        console.print(summary_table(result.before, result.labels))
    if qa is not None:
        from arena.environments.collab_qa.evaluation import before_after_qa_table

        console.print(before_after_qa_table(*qa))
    n = len(result.before) + len(result.after)
    console.print(
        f"{n} evaluation episodes, {result.rounds_done} training rounds, {result.traces_logged} episodes traced, in {result.seconds:.1f} s. "
        f"Read them: [bold]arena episodes {result.run_id}[/bold] or [bold]arena ui[/bold]"
    )
    return result


def _qa_results(result: RunResult) -> tuple[list, list]:
    """The collab_qa evaluation episodes before and after training, read as QA results (arena.environments.collab_qa.evaluation)."""
    from arena.environments.collab_qa.evaluation import run_results

    return run_results(result.before, result.labels, "before"), run_results(result.after, result.labels, "after")


def _checkpoint_to_resume(cfg: RunConfig) -> Path:
    root = checkpoint.run_dir(cfg.runs_dir, cfg.name)
    candidates = [c for c in (checkpoint.latest(root, d.name) for d in root.glob("*") if d.is_dir()) if c is not None]
    if not candidates:
        raise ConfigError(f"nothing to resume: no checkpoint under {root}/")
    newest = max(candidates, key=lambda c: (c / checkpoint.STATE).stat().st_mtime)
    saved = checkpoint.read_state(newest)["config"]
    now = cfg.model_dump(mode="json")
    # where a run executes (tracking store, local or Ray) does not change what it computes
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in ("tracking", "cluster"))
    if changed:
        raise ConfigError(f"the config differs from the checkpoint's in {', '.join(changed)}; resume with the same config ({newest})")
    return newest


def _save(cfg: RunConfig, result: RunResult, done: int, models: ModelPolicies, baselines: dict, state_extra: dict) -> None:
    state = {
        "run_id": result.run_id,
        "rounds_done": done,
        "versions": {pid: learner.version for pid, learner in models.learners.items()},
        "baselines": {pid: b.state_dict() for pid, b in baselines.items()},
        "pool_versions": sorted(models.pool),
        "before_done": True,
        "before": [e.model_dump(mode="json") for e in state_extra["before"]],
        "config": cfg.model_dump(mode="json"),
    }
    directory = result.run_dir / "checkpoints" / f"round_{done:05d}"
    checkpoint.save(directory, state, models.learners, models.tokenizer)
    if models.pool:
        torch.save(models.pool, directory.parent / "snapshot_pool.pt")


def _restore(state: dict, ckpt: Path, models: ModelPolicies, baselines: dict) -> int:
    for pid, learner in models.learners.items():
        checkpoint.load_policy(ckpt, pid, learner)
        learner.version = int(state["versions"][pid])
        models.agents[pid].engine.update_weights(learner.model.state_dict(), learner.version)
    for pid, b in baselines.items():
        b.load_state_dict(state["baselines"].get(pid, {}))
    pool_file = ckpt.parent / "snapshot_pool.pt"
    if models.snapshot is not None and pool_file.is_file():
        saved = torch.load(pool_file, weights_only=True)
        models.pool = {v: saved[v] for v in state["pool_versions"] if v in saved}
    return int(state["rounds_done"])


def _logged_steps(run_id: str) -> set[int]:
    """Rounds whose metrics the run already holds (a resumed run does not log them twice)."""
    from mlflow.tracking import MlflowClient

    return {m.step for m in MlflowClient().get_metric_history(run_id, "train/round")}


def _evaluate(cfg, runtime, models, pools, matchups, labels, console, *, step: int, tag: str, logged: set) -> list[Episode]:
    import mlflow

    tokens0 = sum(a.engine.stats.completion_tokens for a in models.agents.values()) if models else 0
    t0 = time.perf_counter()
    eval_pools = pools
    if models is not None and models.snapshot is not None:
        models.snapshot.engine.update_weights(models.pool[0], 0)
        models.snapshot.policy_id = "main@0"
        eval_pools = {g: {**p, SNAPSHOT: models.snapshot} for g, p in pools.items()}
    episodes = runtime.play(matchups, eval_pools, [f"{tag}-{i:05d}" for i in range(len(matchups))], console, f"evaluation ({tag})", step=step, tag=tag)
    seconds = time.perf_counter() - t0
    metrics = {f"eval/{k}": v for k, v in round_metrics(episodes, labels).items()}
    metrics["eval/seconds"] = seconds
    metrics["eval/episodes_per_s"] = len(episodes) / seconds
    if models is not None:
        tokens = sum(a.engine.stats.completion_tokens for a in models.agents.values()) - tokens0
        metrics["eval/tokens_per_s"] = tokens / seconds
    mlflow.log_metrics(metrics, step=step)
    _log_traces(cfg, episodes, step, f"eval/{tag}.jsonl")
    return episodes


def _log_traces(cfg: RunConfig, episodes: list[Episode], step: int, artifact: str) -> None:
    rng = np.random.default_rng([cfg.seed, step, 0x7EACE])
    n = min(cfg.tracking.traces_per_round, len(episodes))
    for i in sorted(rng.choice(len(episodes), size=n, replace=False).tolist()):
        tracking.log_episode_trace(episodes[i])
    tracking.log_episodes_artifact(episodes, f"episodes/{artifact}")


def _play(matchups: list[Matchup], pools: Mapping[str, Mapping[str, Policy]] | Callable[[Matchup], Mapping[str, Policy]],
          ids: list[str], cfg: RunConfig, console: Console, label: str) -> list[Episode]:
    """Play with a progress bar; ``pools`` maps game id -> policies, or is a function of the matchup."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"{label}: episodes", total=len(matchups))
        return asyncio.run(
            play_many(
                matchups,
                pools if callable(pools) else (lambda m: pools[m.game]),
                concurrency=cfg.rollout.concurrency,
                episode_ids=ids,
                on_episode=lambda ep: progress.advance(task),
                max_steps=cfg.rollout.max_steps,
            )
        )


def _grow_trees(matchups: list[Matchup], labels: list[str], pools: Mapping[str, Mapping[str, Policy]], cfg: RunConfig, round_index: int, console: Console):
    """A DPO round: each training matchup is the trunk of one debate tree per model seat (arena.trainers.trees).
    Returns the trees, every episode played in them (trunks and rollouts) and each episode's game label."""
    from arena.trainers.trees import TreeConfig, grow_trees

    t = cfg.trainer
    tree_cfg = TreeConfig(branches=t.tree_branches, rollouts=t.tree_rollouts, turn=t.tree_turn)
    branch = {pid for m in matchups for pid in m.seats.values() if is_model_policy(pid)}
    ids = [f"train{round_index}-{i:05d}" for i in range(len(matchups))]
    with console.status(f"round {round_index + 1}/{t.rounds}: growing {len(matchups)} debate trees"):
        trees = asyncio.run(
            grow_trees(matchups, lambda m: pools[m.game], tree_cfg, branch_policies=branch, labels=labels, ids=ids,
                       concurrency=cfg.rollout.concurrency, max_steps=cfg.rollout.max_steps)
        )
    episodes = [ep for tree in trees for ep in tree.episodes()]
    return trees, episodes, [tree.label for tree in trees for _ in tree.episodes()]


def _log_reward_curve(run_id: str, cfg: RunConfig) -> None:
    """The trained seats' mean return per round, one line per game and policy, as an artifact."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    keys = [k for k in client.get_run(run_id).data.metrics if k.startswith("train/") and "/return/" in k and k.count("/") == 3]
    keys = [k for k in keys if is_model_policy(k.split("/return/", 1)[1])]
    if not keys:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in sorted(keys):
        hist = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        ax.plot([m.step + 1 for m in hist], [m.value for m in hist], marker=".", label=key.removeprefix("train/"))
    ax.set_xlabel("training round")
    ax.set_ylabel("mean return of the trained seat")
    ax.set_title(f"{cfg.name}: reward curve")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    mlflow.log_figure(fig, "reward_curve.png")
    plt.close(fig)


def metric_name(key: str) -> str:
    """MLflow accepts letters, digits, ``_ - . : /`` and spaces: ``main@3`` becomes ``main:3``."""
    return re.sub(r"[^\w\-. :/]", "_", key.replace("@", ":"))


def round_metrics(episodes: list[Episode], labels: list[str] | None = None) -> dict[str, float]:
    """Means per game entry: returns per (player, policy), group return, illegal-move rate, length, game metrics."""
    by_game: dict[str, list[Episode]] = defaultdict(list)
    for i, ep in enumerate(episodes):
        by_game[labels[i] if labels else ep.matchup.game].append(ep)
    out: dict[str, float] = {}
    for game, eps in by_game.items():
        name = game.replace("-", "_")
        seat_returns: dict[str, list[float]] = defaultdict(list)
        policy_returns: dict[str, list[float]] = defaultdict(list)
        extra: dict[str, list[float]] = defaultdict(list)
        for ep in eps:
            for player, r in ep.returns.items():
                seat_returns[f"{name}/return/{player}/{ep.matchup.seats[player]}"].append(r)
                policy_returns[f"{name}/return/{ep.matchup.seats[player]}"].append(r)
            for k, v in {**ep.metrics, **{f"reward/{c}": x for c, x in ep.reward_components.items()}}.items():
                extra[f"{name}/{k}"].append(v)
        for key, values in {**seat_returns, **policy_returns, **extra}.items():
            out[metric_name(key)] = float(np.mean(values))
        turns = [t for ep in eps for t in ep.turns]
        out[f"{name}/group_return"] = float(np.mean([ep.group_return for ep in eps]))
        out[f"{name}/illegal_move_rate"] = float(np.mean([t.illegal for t in turns])) if turns else 0.0
        out[f"{name}/episode_length"] = float(np.mean([ep.length for ep in eps]))
        out[f"{name}/episodes"] = float(len(eps))
    return out


def summary_table(episodes: list[Episode], labels: list[str] | None = None) -> Table:
    """One row per game, seating and player: its policy, the others, mean return (± 95% interval), illegal moves."""
    groups: dict[tuple[str, tuple], list[Episode]] = defaultdict(list)
    for i, ep in enumerate(episodes):
        groups[(labels[i] if labels else ep.matchup.game, tuple(ep.matchup.seats.items()))].append(ep)
    table = Table(title="Tournament summary")
    table.add_column("game")
    table.add_column("player")
    table.add_column("policy", style="bold")
    table.add_column("against")
    table.add_column("n", justify="right")
    table.add_column("return ± 95%", justify="right")
    table.add_column("illegal", justify="right")
    for (game, seats), eps in sorted(groups.items()):
        for player, pid in seats:
            vals = np.array([ep.returns[player] for ep in eps])
            mine = [t for ep in eps for t in ep.turns if t.player == player]
            illegal = np.mean([t.illegal for t in mine]) if mine else 0.0
            others = ", ".join(o for p, o in seats if p != player)
            table.add_row(game, player, pid, others, str(len(eps)), f"{vals.mean():+.2f} ± {_ci95(vals):.2f}", f"{illegal:.0%}")
        table.add_section()
    return table


def _ci95(values: np.ndarray) -> float:
    if len(values) < 2:
        return 0.0
    return float(1.96 * values.std(ddof=1) / np.sqrt(len(values)))


def before_after_table(result: RunResult) -> Table:
    """Per game, seating and model-played seat: mean return before and after training (± 95%), and the change."""
    before = _seat_returns(result.before, result.labels)
    after = _seat_returns(result.after, result.labels)
    table = Table(title="Before / after training (mean return ± 95% interval, same evaluation seeds)")
    for col in ("game", "player", "policy", "against", "n", "before", "after", "change"):
        table.add_column(col, justify="right" if col in ("n", "before", "after", "change") else "left")
    for key in sorted(before):
        label, seats, player = key
        pid = dict(seats)[player]
        if not (is_model_policy(pid) or pid == SNAPSHOT):
            continue
        b, a = np.array(before[key]), np.array(after.get(key, []))
        change = a.mean() - b.mean() if len(a) else float("nan")
        against = ", ".join(o for p, o in seats if p != player)
        table.add_row(
            label, player, pid, against, str(len(b)),
            f"{b.mean():+.3f} ± {_ci95(b):.3f}",
            f"{a.mean():+.3f} ± {_ci95(a):.3f}" if len(a) else "-",
            f"[{'green' if change > 0 else 'red'}]{change:+.3f}[/]",
        )
    return table


def _seat_returns(episodes: list[Episode], labels: list[str]) -> dict[tuple, list[float]]:
    out: dict[tuple, list[float]] = defaultdict(list)
    for ep, label in zip(episodes, labels):
        seats = tuple(ep.matchup.seats.items())
        for player in ep.matchup.seats:
            out[(label, seats, player)].append(ep.returns[player])
    return out
