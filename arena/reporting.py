"""What a run reports: metrics per round, the tournament and before/after tables, the reward
curve, and the sampled episodes logged as MLflow traces."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from arena import tracking
from arena.config import SNAPSHOT, is_model_policy
from arena.records import Episode


@dataclass
class RunResult:
    """What a run gives back: its MLflow run id, the evaluation episodes before and after (for the
    critic loop: the first and the last game of every chain) with each one's game-entry label, and
    how far it got."""

    run_id: str
    before: list[Episode] = field(default_factory=list)
    after: list[Episode] = field(default_factory=list)
    #: the game-entry label of each evaluation episode
    labels: list[str] = field(default_factory=list)
    rounds_done: int = 0
    traces_logged: int = 0
    seconds: float = 0.0
    run_dir: Path | None = None
    #: the ratings of every policy version that played (arena.ratings.Ratings)
    ratings: Any = None


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


def before_after_table(result: Any) -> Table:
    """Per game, seating and model-played seat: mean return before and after training (± 95%), and the change.
    ``result`` is a :class:`RunResult` (``before``, ``after``, ``labels``)."""
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
            label,
            player,
            pid,
            against,
            str(len(b)),
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


def log_reward_curve(run_id: str, title: str) -> None:
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
    ax.set_title(f"{title}: reward curve")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    mlflow.log_figure(fig, "reward_curve.png")
    plt.close(fig)


def ratings_table(ratings: Any, limit: int = 20) -> Table:
    """The best-rated policy versions: OpenSkill mu ± sigma and the ordinal (mu - 3 sigma) they are sorted by."""
    table = Table(title=f"Ratings (OpenSkill, {ratings.episodes} rated episodes)")
    for col in ("policy", "mu ± sigma", "ordinal", "episodes"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for key, r in ratings.ranked()[:limit]:
        table.add_row(key, f"{r.mu:.2f} ± {r.sigma:.2f}", f"{r.ordinal:.2f}", str(r.games))
    return table


def trace_score(ep: Episode) -> float:
    """What "best" and "worst" mean when choosing episodes to trace: the mean return of the model
    seats, or the group return where no model plays."""
    model = [ep.returns[p] for p, pid in ep.matchup.seats.items() if is_model_policy(pid) and p in ep.returns]
    return float(np.mean(model)) if model else float(ep.group_return)


def select_traces(
    episodes: list[Episode], labels: list[str], *, step: int, seed: int, sample: int, extremes: bool, illegal: bool
) -> dict[int, tuple[str, ...]]:
    """Which of a round's episodes to trace, and why: index -> reasons.

    ``sample``: a random sample of that many (drawn by a generator of ``seed`` and ``step``);
    ``best`` / ``worst``: each config entry's highest- and lowest-scoring episode (:func:`trace_score`;
    none where all scored alike); ``illegal`` / ``forfeit``: every episode with an illegal move or
    a forfeit."""
    rng = np.random.default_rng([seed, step, 0x7EACE])
    reasons: dict[int, list[str]] = defaultdict(list)
    for i in rng.choice(len(episodes), size=min(sample, len(episodes)), replace=False).tolist():
        reasons[i].append("sample")
    if extremes:
        by_entry: dict[str, list[int]] = defaultdict(list)
        for i, label in enumerate(labels):
            by_entry[label].append(i)
        for idx in by_entry.values():
            scores = [trace_score(episodes[i]) for i in idx]
            if max(scores) > min(scores):
                reasons[idx[int(np.argmax(scores))]].append("best")
                reasons[idx[int(np.argmin(scores))]].append("worst")
    if illegal:
        for i, ep in enumerate(episodes):
            if ep.forfeit is not None:
                reasons[i].append("forfeit")
            elif ep.illegal_moves:
                reasons[i].append("illegal")
    return {i: tuple(r) for i, r in sorted(reasons.items())}


def log_traces(episodes: list[Episode], labels: list[str], step: int, artifact: str, *, phase: str, seed: int, tracking_cfg: Any, run_dir: Path | None) -> int:
    """Keep a round's episodes and trace the chosen ones; returns how many were traced.

    Every episode goes first to ``<run_dir>/episodes/<artifact>`` (JSON lines: entry, phase, round,
    why it was traced, the episode), then to the MLflow run as the same artifact; the episodes that
    :func:`select_traces` picks become traces. What reached the disk survives a tracking server that
    dies: ``arena log-episodes RUN_DIR`` logs it later."""
    chosen = select_traces(
        episodes,
        labels,
        step=step,
        seed=seed,
        sample=tracking_cfg.traces_per_round,
        extremes=tracking_cfg.trace_extremes,
        illegal=tracking_cfg.trace_illegal,
    )
    contexts = [tracking.TraceContext(entry=label, phase=phase, round=step, reasons=chosen.get(i, ())) for i, label in enumerate(labels)]
    path = tracking.write_journal(episodes, contexts, run_dir, artifact)
    tracking.log_journal_artifact(path, artifact)
    tracking.log_episode_traces([(episodes[i], contexts[i]) for i in chosen])
    return len(chosen)
