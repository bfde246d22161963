"""The critic loop: in-context learning from AI feedback between games (Fu et al., 2023), for any game.

A config with a ``critic`` section runs it (``arena run configs/negotiation_critic.yaml``).
One *chain* per evaluation slot (``episodes_per_matchup`` per seating of the run's one game)
plays ``critic.rounds`` games in a row:

1. play a game; the coached side (``critic.side``) sees, above its usual
   observation, its memory: the transcripts of its last ``memory_games``
   games and every piece of feedback so far. Its opponents start fresh each
   game and never see the memory;
2. a critic (a scripted critic the game declares with ``critics=``, or a model
   policy) reads the finished game (:func:`critic_prompt`: the transcript, the
   returns and the game's metrics) and gives the coached side up to
   ``max_suggestions`` short suggestions (:func:`split_feedback`). Where the
   game declares a ``feedback_filter`` (``arena.register(..., feedback_filter=fn)``,
   ``fn(text) -> (text, n_cut)``), every suggestion goes through it first and
   what it cuts is counted (negotiation cuts every number, so that the coached
   side learns a way to bargain, not a figure). A filter may carry a ``rule``
   attribute (a sentence), which the critic's prompt states;
3. the suggestions join the chain's memory; the next game uses a new seed.

No weights change. Per feedback round the run logs to MLflow the game's
metrics (``critic/<game>/<metric>``, the same means as a training round's),
the coached side's return, the feedback (``critic/feedback_round_<r>.jsonl``)
and the episodes as traces; at the end a curve of the coached side's return
per round, and a table.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from rich.console import Console
from rich.table import Table

from arena import checkpoint, tracking
from arena.agents.base import Action, PlayerView, Policy
from arena.agents.catalog import make_critic
from arena.config import RunConfig, dump_config, is_model_policy
from arena.records import Episode, Matchup
from arena.registry import spec
from arena.reporting import RunResult, log_traces, metric_name, round_metrics
from arena.runtime import load_model_policies, play_with_progress, policy_pools
from arena.seeds import CRITIC, derive_seed

#: what a game's ``feedback_filter`` is: text -> (the text it may show, how many things were cut)
FeedbackFilter = Callable[[str], tuple[str, int]]

_BULLET = re.compile(r"^\s*(?:[-*•]|\(?[a-z]\)|[ivx]+\.|\d{1,2}[.)])\s*")


def split_feedback(text: str, max_suggestions: int, feedback_filter: FeedbackFilter | None = None) -> tuple[list[str], int]:
    """The critic's text as at most ``max_suggestions`` suggestions, passed through the game's filter.

    Each non-empty line is a suggestion, without its bullet (``-``, ``*``, ``a)``, ``1.`` ...); a
    single paragraph gives one suggestion per sentence. With ``feedback_filter`` every line goes
    through it first (a line it empties is dropped). Returns the suggestions and how many things the
    filter cut over the whole text (0 without a filter)."""
    cut = 0
    lines = []
    for line in text.splitlines():
        line = _BULLET.sub("", line).strip()
        if line and feedback_filter is not None:
            line, n = feedback_filter(line)
            cut += n
            line = line.strip()
        if line:
            lines.append(line)
    if len(lines) == 1:  # one paragraph: one suggestion per sentence
        lines = [s.strip() for s in re.split(r"(?<=[.!?])\s+", lines[0]) if s.strip()]
    return lines[:max_suggestions], cut


def transcript(ep: Episode) -> list[str]:
    return [f"{t.player}: {' '.join(t.action.split())}" for t in ep.turns]


def returns_line(ep: Episode) -> str:
    return ", ".join(f"{p} {r:+.2f}" for p, r in ep.returns.items())


def metrics_line(ep: Episode) -> str:
    """The game's episode metrics as ``name=value`` pairs (what a scripted critic parses)."""
    return ", ".join(f"{k}={v:g}" for k, v in ep.metrics.items()) or "none"


def critic_prompt(ep: Episode, side: str, max_suggestions: int, rule: str | None = None) -> str:
    """What the critic reads: the task, the coached role, the transcript and the outcome.

    The lines ``Coached role:``, ``Returns:``, ``Metrics:`` and ``Coached side's return:`` are stable,
    for scripted critics to parse."""
    task = (
        f"You are a coach. Read this {ep.matchup.game} game and give the {side} up to {max_suggestions} short suggestions, "
        "one per line starting with '- ', to do better next time."
    )
    return "\n".join(
        [
            f"{task} {rule}" if rule else task,
            f"Coached role: {side}",
            "Transcript:",
            *transcript(ep),
            f"Returns: {returns_line(ep)}",
            f"Metrics: {metrics_line(ep)}",
            f"Coached side's return: {ep.returns[side]:.2f}",
        ]
    )


@dataclass
class Memory:
    """One chain's memory: past games (transcript + outcome) and the feedback after each."""

    games: list[tuple[int, list[str], str]] = field(default_factory=list)
    feedback: list[tuple[int, list[str]]] = field(default_factory=list)

    def render(self, memory_games: int, max_chars: int) -> str:
        if not self.feedback and not self.games:
            return ""
        blocks: list[str] = []
        kept_games = {g for g, _, _ in self.games[-memory_games:]} if memory_games else set()
        for (g, lines, outcome), (_, tips) in zip(self.games, self.feedback):
            block = []
            if g in kept_games:
                block += [f"Game {g + 1} (outcome: {outcome}):", *(f"  {ln}" for ln in lines)]
            block += [f"Feedback after game {g + 1}:", *(f"- {t}" for t in tips)]
            blocks.append("\n".join(block))
        while blocks and sum(len(b) + 1 for b in blocks) > max_chars:
            blocks.pop(0)  # the oldest goes first
        if not blocks:
            return ""
        head = "Your earlier games, with a coach's feedback (your current opponent does not remember them):"
        return "\n".join([head, *blocks, "Now the current game:", ""])


class WithMemory:
    """A policy seen through a chain's memory: the memory goes above every observation."""

    def __init__(self, inner: Policy, memory: str):
        self.inner, self.memory = inner, memory
        self.policy_id = inner.policy_id

    @property
    def version(self) -> int:
        return int(getattr(self.inner, "version", 0))

    async def act(self, view: PlayerView) -> Action:
        if not self.memory:
            return await self.inner.act(view)
        view = PlayerView(**{**view.__dict__, "observation": self.memory + view.observation})
        action = await self.inner.act(view)
        action.observation = view.observation
        return action


def run_critic_loop(cfg: RunConfig, console: Console) -> RunResult:
    """Run the critic loop of ``cfg.critic`` on the config's one played game entry (see the module docstring)."""
    import mlflow

    c = cfg.critic
    if c is None:
        raise ValueError("run_critic_loop needs a config with a critic section")
    tracking.quiet_mlflow()
    mlflow.set_tracking_uri(tracking.tracking_uri(cfg.tracking.uri))
    mlflow.set_experiment(cfg.tracking.experiment)
    entry = next(g for g in cfg.games if not g.eval_only)
    feedback_filter = spec(entry.id).feedback_filter
    rule = getattr(feedback_filter, "rule", None)
    models = load_model_policies(cfg, console)
    pools = policy_pools(cfg, models)
    critic = models.agents[c.critic] if is_model_policy(c.critic) else make_critic(c.critic, entry.id)
    chains = [(m, k) for m in range(len(entry.matchups)) for k in range(cfg.episodes_per_matchup)]
    memories = [Memory() for _ in chains]
    curve: list[list[float]] = []
    rows: list[dict[str, float]] = []
    metric_keys: list[str] = []  # the game's episode metrics, in first-seen order
    started = time.perf_counter()

    with mlflow.start_run(run_name=cfg.tracking.run_name or cfg.name) as active:
        result = RunResult(run_id=active.info.run_id, run_dir=checkpoint.run_dir(cfg.runs_dir, cfg.name) / active.info.run_id)
        mlflow.log_text(dump_config(cfg), "config.yaml")
        mlflow.log_params(tracking.flat_params({k: v for k, v in cfg.model_dump(mode="json").items() if k != "games"}))
        mlflow.log_param("games", entry.label)
        console.print(f"MLflow run [bold]{result.run_id}[/bold] in {mlflow.get_tracking_uri()}")
        coached = f"coached:{c.side}"
        for r in range(c.rounds):
            matchups = [
                Matchup(game=entry.id, seed=derive_seed(cfg.seed, CRITIC, r, i), game_kwargs=entry.kwargs, seats={**entry.matchups[m], c.side: coached})
                for i, (m, _) in enumerate(chains)
            ]
            by_seed = {mu.seed: i for i, mu in enumerate(matchups)}

            def pool(mu: Matchup, by_seed: dict[int, int] = by_seed) -> dict[str, Policy]:
                i = by_seed[mu.seed]
                inner = pools[entry.id][entry.matchups[chains[i][0]][c.side]]
                return {**pools[entry.id], coached: WithMemory(inner, memories[i].render(c.memory_games, c.max_memory_chars))}

            ids = [f"critic{r}-{i:05d}" for i in range(len(matchups))]
            episodes = play_with_progress(matchups, pool, ids, cfg.rollout, console, f"game {r + 1}/{c.rounds}")
            metrics = {f"critic/{k}": v for k, v in round_metrics(episodes, [entry.label] * len(episodes)).items()}
            coached_returns = [ep.returns[c.side] for ep in episodes]
            curve.append(coached_returns)
            metrics["critic/coached_return"] = float(np.mean(coached_returns))
            metric_keys += [k for k in dict.fromkeys(k for ep in episodes for k in ep.metrics) if k not in metric_keys]
            if r + 1 < c.rounds:  # feedback after every game but the last
                views = [
                    PlayerView(
                        game=entry.id,
                        player="critic",
                        observation=critic_prompt(ep, c.side, c.max_suggestions, rule),
                        rng=np.random.default_rng([cfg.seed, CRITIC, r, i, 0xC]),
                    )
                    for i, ep in enumerate(episodes)
                ]
                actions = asyncio.run(_all(critic, views))
                cut_total, records = 0, []
                for i, (ep, act) in enumerate(zip(episodes, actions)):
                    tips, cut = split_feedback(act.text, c.max_suggestions, feedback_filter)
                    cut_total += cut
                    memories[i].games.append((r, transcript(ep), f"your return {ep.returns[c.side]:+.2f}"))
                    memories[i].feedback.append((r, tips))
                    records.append({"chain": i, "episode_id": ep.episode_id, "raw": act.text, "suggestions": tips, "cut": cut})
                metrics["critic/cut_per_feedback"] = cut_total / len(episodes)
                metrics["critic/suggestions_per_feedback"] = float(np.mean([len(x["suggestions"]) for x in records]))
                mlflow.log_text("\n".join(json.dumps(x) for x in records), f"critic/feedback_round_{r:03d}.jsonl")
            mlflow.log_metrics({metric_name(k): v for k, v in metrics.items()}, step=r)
            result.traces_logged += log_traces(
                episodes,
                [entry.label] * len(episodes),
                r,
                f"critic/round_{r:03d}.jsonl",
                phase="train",
                seed=cfg.seed,
                tracking_cfg=cfg.tracking,
                run_dir=result.run_dir,
            )
            rows.append({k.removeprefix("critic/"): v for k, v in metrics.items()})
            if r == 0:
                result.before = episodes
            result.after = episodes
            result.rounds_done = r + 1
        result.labels = [entry.label] * len(result.before)
        _log_curve(curve, cfg, c.side)
        tracking.flush_traces()
        result.seconds = time.perf_counter() - started
        mlflow.log_metric("run/seconds", result.seconds)
    game = entry.label.replace("-", "_")  # round_metrics' prefix for this entry
    measures = [(k, metric_name(f"{game}/{k}")) for k in metric_keys] + [("illegal moves", f"{game}/illegal_move_rate")]
    console.print(critic_table(rows, c.side, measures))
    console.print(
        f"{len(chains)} chains x {c.rounds} games, {result.traces_logged} episodes traced, in {result.seconds:.1f} s. "
        f"Read them: [bold]arena episodes {result.run_id}[/bold] or [bold]arena ui[/bold]"
    )
    return result


async def _all(policy: Policy, views: list[PlayerView]) -> list[Action]:
    return list(await asyncio.gather(*(policy.act(v) for v in views)))


def critic_table(rows: list[dict[str, float]], side: str, measures: list[tuple[str, str]] = ()) -> Table:
    """One column per game of the chains, one row per measure (mean over chains): the coached side's
    return, then each ``(name, key in rows)`` of ``measures`` (the game's metrics), then the
    feedback's suggestions and cuts. A measure no round has is left out."""
    table = Table(title=f"Critic loop: the coached {side} per game (mean over chains)")
    table.add_column("")
    for r in range(len(rows)):
        table.add_column(f"game {r + 1}", justify="right")
    rows_out = [(f"{side} return", "coached_return"), *measures, ("suggestions", "suggestions_per_feedback"), ("cut", "cut_per_feedback")]
    for name, key in rows_out:
        if any(key in row for row in rows):
            table.add_row(name, *(_cell(row.get(key)) for row in rows))
    return table


def _cell(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _log_curve(curve: list[list[float]], cfg: RunConfig, side: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    means = np.array([np.mean(x) for x in curve])
    errs = np.array([1.96 * np.std(x, ddof=1) / math.sqrt(len(x)) if len(x) > 1 else 0.0 for x in curve])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = np.arange(1, len(curve) + 1)
    ax.plot(xs, means, marker="o")
    ax.fill_between(xs, means - errs, means + errs, alpha=0.2)
    ax.set_xlabel("game (feedback rounds so far + 1)")
    ax.set_ylabel(f"{side} return")
    ax.set_title(f"{cfg.name}: the coached {side} across feedback rounds")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    mlflow.log_figure(fig, "critic_curve.png")
    plt.close(fig)
