"""The critic loop: in-context learning from AI feedback between games (Fu et al., 2023).

``arena run configs/negotiation_critic.yaml`` runs it. One *chain* per
evaluation slot (``episodes_per_matchup`` per seating of the run's one game)
plays ``critic.rounds`` games in a row:

1. play a game; the coached side (``critic.side``) sees, above its usual
   observation, its memory: the transcripts of its last ``memory_games``
   games and every piece of feedback so far. Its opponent starts fresh each
   game and never sees the memory;
2. a critic (a scripted critic of the game, or a model policy) reads the
   finished game and gives the coached side up to ``max_suggestions`` short
   suggestions. Feedback must never name a price: numbers are cut from it
   (and counted), so the coached side learns a way to bargain, not a figure;
3. the suggestions join the chain's memory; the next game uses a new seed.

No weights change. Per feedback round the run logs to MLflow the game's
metrics (for negotiation: price per role, deal rate, broken deals, invalid
deals), the coached side's return, the feedback, and the episodes as traces;
at the end a curve of the coached side's return per round, and a table.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from dataclasses import dataclass, field

import numpy as np
from rich.console import Console
from rich.table import Table

from arena import tracking
from arena.agents.base import Action, PlayerView, Policy
from arena.agents.catalog import make_critic
from arena.config import RunConfig, dump_config, is_model_policy
from arena.records import Episode, Matchup

CRITIC = 2  # seed-path tag: critic-loop games share no seeds with evaluation (0) or training (1)
#: a number, with an optional currency sign and decimals: what feedback may not contain
_NUMBER = re.compile(r"(?:\$\s?)?\d+(?:,\d{3})*(?:\.\d+)?")
CUT = "[number cut]"


def sanitize_feedback(text: str, max_suggestions: int) -> tuple[list[str], int]:
    """The critic's text as at most ``max_suggestions`` suggestion lines, with every number cut.

    Returns the suggestions (each without its bullet) and how many numbers were cut."""
    cut = len(_NUMBER.findall(text))
    text = _NUMBER.sub(CUT, text)
    lines = [re.sub(r"^\s*(?:[-*•]|\(?[a-z]\)|[ivx]+\.)\s*", "", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and ln != CUT]
    if len(lines) == 1:  # one paragraph: one suggestion per sentence
        lines = [s.strip() for s in re.split(r"(?<=[.!?])\s+", lines[0]) if s.strip()]
    return lines[:max_suggestions], cut


def transcript(ep: Episode) -> list[str]:
    return [f"{t.player}: {' '.join(t.action.split())}" for t in ep.turns]


def outcome_line(ep: Episode) -> str:
    """One line on how the game ended: a deal and its price where the game has deals, else the returns."""
    m = ep.metrics
    if "deal" in m:
        if m["deal"]:
            return f"deal at ${m['price']:.2f}"
        if m.get("invalid_deal"):
            return "invalid deal (outside the valid range), scored as no deal"
        return "no deal" + (" (walked away)" if m.get("walked") else "")
    return "returns " + ", ".join(f"{p} {r:+.2f}" for p, r in ep.returns.items())


def critic_prompt(ep: Episode, side: str, max_suggestions: int) -> str:
    return "\n".join(
        [
            f"You are a coach. Read this {ep.matchup.game} game and give the {side} up to {max_suggestions} short suggestions, "
            "one per line starting with '- ', to do better next time. Never name a price or any number.",
            f"Coached role: {side}",
            "Transcript:",
            *transcript(ep),
            f"Outcome: {outcome_line(ep)}",
            f"Coached side's share: {ep.returns[side]:.2f}",
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


def run_critic_loop(cfg: RunConfig, console: Console):
    import mlflow

    from arena.experiment import RunResult, _log_traces, _play, episode_seed, load_model_policies, metric_name, policy_pools, round_metrics

    c = cfg.critic
    assert c is not None
    tracking.quiet_mlflow()
    mlflow.set_tracking_uri(tracking.tracking_uri(cfg.tracking.uri))
    mlflow.set_experiment(cfg.tracking.experiment)
    entry = next(g for g in cfg.games if not g.eval_only)
    models = load_model_policies(cfg, console)
    pools = policy_pools(cfg, models)
    critic = models.agents[c.critic] if is_model_policy(c.critic) else make_critic(c.critic, entry.id)
    chains = [(m, k) for m in range(len(entry.matchups)) for k in range(cfg.episodes_per_matchup)]
    memories = [Memory() for _ in chains]
    curve: list[list[float]] = []
    rows: list[dict[str, float]] = []
    started = time.perf_counter()

    with mlflow.start_run(run_name=cfg.tracking.run_name or cfg.name) as active:
        result = RunResult(run_id=active.info.run_id)
        mlflow.log_text(dump_config(cfg), "config.yaml")
        mlflow.log_params(tracking.flat_params({k: v for k, v in cfg.model_dump(mode="json").items() if k != "games"}))
        mlflow.log_param("games", entry.label)
        console.print(f"MLflow run [bold]{result.run_id}[/bold] in {mlflow.get_tracking_uri()}")
        for r in range(c.rounds):
            coached = f"coached:{c.side}"
            matchups = [
                Matchup(game=entry.id, seed=episode_seed(cfg.seed, CRITIC, r, i), game_kwargs=entry.kwargs,
                        seats={**entry.matchups[m], c.side: coached})
                for i, (m, _) in enumerate(chains)
            ]
            by_seed = {mu.seed: i for i, mu in enumerate(matchups)}

            def pool(mu: Matchup, r=r) -> dict[str, Policy]:
                i = by_seed[mu.seed]
                inner = pools[entry.id][entry.matchups[chains[i][0]][c.side]]
                return {**pools[entry.id], coached: WithMemory(inner, memories[i].render(c.memory_games, c.max_memory_chars))}

            episodes = _play(matchups, pool, [f"critic{r}-{i:05d}" for i in range(len(matchups))], cfg, console, f"game {r + 1}/{c.rounds}")
            metrics = {f"critic/{k}": v for k, v in round_metrics(episodes, [entry.label] * len(episodes)).items()}
            coached_returns = [ep.returns[c.side] for ep in episodes]
            curve.append(coached_returns)
            metrics["critic/coached_return"] = float(np.mean(coached_returns))
            deals = [ep.metrics.get("deal") for ep in episodes if "deal" in ep.metrics]
            if deals:
                metrics["critic/deal_rate"] = float(np.mean(deals))
                metrics["critic/broken_deal_rate"] = 1.0 - metrics["critic/deal_rate"]
            if r + 1 < c.rounds:  # feedback after every game but the last
                views = [PlayerView(game=entry.id, player="critic", observation=critic_prompt(ep, c.side, c.max_suggestions),
                                    rng=np.random.default_rng([cfg.seed, CRITIC, r, i, 0xC])) for i, ep in enumerate(episodes)]
                actions = asyncio.run(_all(critic, views))
                cut_total, records = 0, []
                for i, (ep, act) in enumerate(zip(episodes, actions)):
                    tips, cut = sanitize_feedback(act.text, c.max_suggestions)
                    cut_total += cut
                    memories[i].games.append((r, transcript(ep), outcome_line(ep)))
                    memories[i].feedback.append((r, tips))
                    records.append({"chain": i, "episode_id": ep.episode_id, "raw": act.text, "suggestions": tips, "numbers_cut": cut})
                metrics["critic/numbers_cut_per_feedback"] = cut_total / len(episodes)
                metrics["critic/suggestions_per_feedback"] = float(np.mean([len(x["suggestions"]) for x in records]))
                mlflow.log_text("\n".join(json.dumps(x) for x in records), f"critic/feedback_round_{r:03d}.jsonl")
            mlflow.log_metrics({metric_name(k): v for k, v in metrics.items()}, step=r)
            _log_traces(cfg, episodes, r, f"critic/round_{r:03d}.jsonl")
            result.traces_logged += min(cfg.tracking.traces_per_round, len(episodes))
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
    console.print(critic_table(rows, c.side, entry.label.replace("-", "_")))
    console.print(f"{len(chains)} chains x {c.rounds} games, {result.traces_logged} episodes traced, in {result.seconds:.1f} s. "
                  f"Read them: [bold]arena episodes {result.run_id}[/bold] or [bold]arena ui[/bold]")
    return result


async def _all(policy: Policy, views: list[PlayerView]) -> list[Action]:
    return list(await asyncio.gather(*(policy.act(v) for v in views)))


def critic_table(rows: list[dict[str, float]], side: str, game: str) -> Table:
    table = Table(title=f"Critic loop: the coached {side} per feedback round (mean over chains)")
    cols = [("round", None), (f"{side} return", "coached_return"), ("price", f"{game}/price"), ("deal rate", "deal_rate"),
            ("broken deals", "broken_deal_rate"), ("invalid deals", f"{game}/invalid_deal"), ("numbers cut", "numbers_cut_per_feedback")]
    cols = [(name, key) for name, key in cols if key is None or any(key in row for row in rows)]
    for name, _ in cols:
        table.add_column(name, justify="right")
    for r, row in enumerate(rows):
        cells = [str(r + 1)] + [("-" if (v := row.get(key)) is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}") for _, key in cols[1:]]
        table.add_row(*cells)
    return table


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
