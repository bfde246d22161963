"""The evaluation tournament: the run's model against scripted bots, logged to MLflow.

Reads top to bottom: prepare the model and engine, then for each round build
the matchups, play them concurrently, log metrics, traces and episodes, and
finally print a summary table.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from arena.agents.base import Policy
from arena.agents.catalog import make_fixed_policy
from arena.agents.llm import LLMAgent
from arena.config import LLM_POLICIES, RunConfig, dump_config
from arena.engines.base import SamplingParams
from arena.records import Episode, Matchup
from arena.rollout import play_many
from arena import tracking


@dataclass
class RunResult:
    run_id: str
    episodes: list[Episode] = field(default_factory=list)
    #: the game-entry label of each episode
    labels: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    traces_logged: int = 0
    seconds: float = 0.0


def episode_seed(run_seed: int, *path: int) -> int:
    """A seed for one episode from the run seed and its place in the run (round, game, matchup, index)."""
    return int(np.random.SeedSequence([run_seed, *path]).generate_state(1)[0])


def build_matchups(cfg: RunConfig, round_index: int) -> tuple[list[Matchup], list[str]]:
    """The round's matchups, and for each the label of its game entry."""
    out, labels = [], []
    for gi, game in enumerate(cfg.games):
        for mi, seats in enumerate(game.matchups):
            for k in range(cfg.episodes_per_matchup):
                seed = episode_seed(cfg.seed, round_index, gi, mi, k)
                out.append(Matchup(game=game.id, seed=seed, seats=dict(seats), game_kwargs=dict(game.kwargs)))
                labels.append(game.label)
    return out, labels


def build_policies(cfg: RunConfig, llm: Policy | None) -> dict[str, dict[str, Policy]]:
    """Per game: policy id -> policy. The model serves the ids in LLM_POLICIES."""
    pools: dict[str, dict[str, Policy]] = {}
    for game in cfg.games:
        pool = pools.setdefault(game.id, {})
        for seats in game.matchups:
            for pid in seats.values():
                if pid in pool:
                    continue
                pool[pid] = llm if pid in LLM_POLICIES else make_fixed_policy(pid, game.id)
    return pools


def needs_model(cfg: RunConfig) -> bool:
    return any(pid in LLM_POLICIES for g in cfg.games for seats in g.matchups for pid in seats.values())


def load_llm(cfg: RunConfig, console: Console) -> LLMAgent:
    from arena.engines.hf import HFEngine
    from arena.models import resolve_model_path

    with console.status("Preparing the model (the tiny model is built once and cached)"):
        path = resolve_model_path(cfg.model.path, cfg.model.tiny)
        engine = HFEngine(path, device=cfg.model.device, dtype=cfg.model.dtype, max_batch_size=cfg.engine.max_batch_size)
    console.print(f"model: [bold]{path}[/bold]")
    sampling = SamplingParams(
        max_new_tokens=cfg.sampling.max_new_tokens, temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p
    )
    return LLMAgent(
        engine, "main", sampling=sampling, history_turns=cfg.agent.history_turns, max_prompt_tokens=cfg.agent.max_prompt_tokens
    )


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
            out[key] = float(np.mean(values))
        turns = [t for ep in eps for t in ep.turns]
        out[f"{name}/group_return"] = float(np.mean([ep.group_return for ep in eps]))
        out[f"{name}/illegal_move_rate"] = float(np.mean([t.illegal for t in turns])) if turns else 0.0
        out[f"{name}/episode_length"] = float(np.mean([ep.length for ep in eps]))
        out[f"{name}/episodes"] = float(len(eps))
    return out


def run(cfg: RunConfig, console: Console | None = None) -> RunResult:
    import mlflow

    console = console or Console()
    tracking.quiet_mlflow()
    mlflow.set_tracking_uri(tracking.tracking_uri(cfg.tracking.uri))
    mlflow.set_experiment(cfg.tracking.experiment)
    llm = load_llm(cfg, console) if needs_model(cfg) else None
    pools = build_policies(cfg, llm)
    started = time.perf_counter()

    with mlflow.start_run(run_name=cfg.tracking.run_name or cfg.name) as active:
        result = RunResult(run_id=active.info.run_id)
        mlflow.log_text(dump_config(cfg), "config.yaml")
        mlflow.log_params(tracking.flat_params({k: v for k, v in cfg.model_dump(mode="json").items() if k != "games"}))
        mlflow.log_param("games", ",".join(g.id for g in cfg.games))
        console.print(f"MLflow run [bold]{result.run_id}[/bold] in {mlflow.get_tracking_uri()}")

        for round_index in range(cfg.rounds):
            matchups, labels = build_matchups(cfg, round_index)
            ids = [f"r{round_index}-{i:05d}" for i in range(len(matchups))]
            tokens_before = llm.engine.stats.completion_tokens if llm else 0
            t0 = time.perf_counter()
            episodes = _play_with_progress(matchups, pools, ids, cfg, console, f"round {round_index + 1}/{cfg.rounds}")
            seconds = time.perf_counter() - t0

            metrics = round_metrics(episodes, labels)
            metrics["rollout/seconds"] = seconds
            metrics["rollout/episodes_per_s"] = len(episodes) / seconds
            if llm is not None:
                tokens = llm.engine.stats.completion_tokens - tokens_before
                metrics["rollout/tokens_per_s"] = tokens / seconds
                metrics["engine/mean_batch_size"] = llm.engine.stats.mean_batch_size
            mlflow.log_metrics(metrics, step=round_index)

            rng = np.random.default_rng([cfg.seed, round_index, 0x7EACE])
            n = min(cfg.tracking.traces_per_round, len(episodes))
            for i in sorted(rng.choice(len(episodes), size=n, replace=False).tolist()):
                tracking.log_episode_trace(episodes[i])
            result.traces_logged += n
            tracking.log_episodes_artifact(episodes, f"episodes/round_{round_index:04d}.jsonl")
            result.episodes += episodes
            result.labels += labels
            result.metrics = metrics

        tracking.flush_traces()
        result.seconds = time.perf_counter() - started
        mlflow.log_metric("run/seconds", result.seconds)
    console.print(summary_table(result.episodes, result.labels))
    console.print(
        f"{len(result.episodes)} episodes, {result.traces_logged} traced, in {result.seconds:.1f} s. "
        f"Read them: [bold]arena episodes {result.run_id}[/bold] or [bold]arena ui[/bold]"
    )
    return result


def _play_with_progress(
    matchups: list[Matchup], pools: Mapping[str, Mapping[str, Policy]], ids: list[str], cfg: RunConfig, console: Console, label: str
) -> list[Episode]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"{label}: episodes", total=len(matchups))
        return asyncio.run(
            play_many(
                matchups,
                lambda m: pools[m.game],
                concurrency=cfg.rollout.concurrency,
                episode_ids=ids,
                on_episode=lambda ep: progress.advance(task),
                max_steps=cfg.rollout.max_steps,
            )
        )


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
