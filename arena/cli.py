"""The ``arena`` command line."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Arena: multi-agent self-play with language-model policies.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
# Logs and CI output are not terminals; give tables room there instead of Rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True)

# Exit status for a request that cannot start: a bad config, an unknown game or run.
USAGE_ERROR = 2


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/bold red] {message}", highlight=False)
    raise typer.Exit(USAGE_ERROR)


@app.command()
def run(
    args: Optional[list[str]] = typer.Argument(None, help="[CONFIG.yaml] [key=value ...] — both optional; no arguments runs the embedded default."),
    resume: bool = typer.Option(False, "--resume", help="continue this config's latest unfinished run from its last checkpoint, in the same MLflow run"),
) -> None:
    """Run an experiment from a YAML config and/or key=value overrides."""
    from arena.config import ConfigError, load_config

    args = list(args or [])
    path = args.pop(0) if args and "=" not in args[0] else None
    try:
        cfg = load_config(path, args)
    except ConfigError as e:
        _fail(str(e))
    from arena.experiment import run as run_experiment

    try:
        run_experiment(cfg, console, resume=resume)
    except ConfigError as e:  # e.g. nothing to resume, or a config that differs from the checkpoint's
        _fail(str(e))


@app.command("eval")
def eval_command(
    args: list[str] = typer.Argument(..., help="CONFIG.yaml [key=value ...], or MODEL_DIR (a trained model, e.g. a checkpoint's policies/main)."),
    model: Optional[list[str]] = typer.Option(None, "--model", help="a trained model directory to evaluate as well (repeatable)"),
    split: Optional[list[str]] = typer.Option(None, "--split", help="question split (repeatable; default: test and ood)"),
    setting: Optional[list[str]] = typer.Option(None, "--setting", help="isolated or collaborative (repeatable; default: both)"),
    limit: Optional[int] = typer.Option(None, min=1, help="only the first N questions of each split"),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="also evaluate the untrained model, the bots and the action-supervised model"),
    temperature: float = typer.Option(0.0, min=0.0, help="model sampling temperature (0: greedy)"),
) -> None:
    """Evaluate collaborative-QA policies alone (isolated) and in a group: F1, searches, selective prediction."""
    from arena.config import ConfigError
    from arena.environments.collab_qa.evaluation import SETTINGS, run_eval

    target, overrides = args[0], args[1:]
    try:
        run_eval(target, overrides, models=model or [], splits=split or ("test", "ood"), settings=setting or SETTINGS,
                 limit=limit, baselines=baselines, temperature=temperature, console=console)
    except (ConfigError, ValueError) as e:
        _fail(str(e))


@app.command()
def games() -> None:
    """List the registered games."""
    from rich.table import Table

    from arena.registry import registered_games

    table = Table(title="Registered games")
    table.add_column("id", style="bold")
    table.add_column("description")
    for gid, spec in registered_games().items():
        table.add_row(gid, spec.description)
    console.print(table)


@app.command()
def play(
    game: str = typer.Argument(..., help="game id, e.g. negotiation-v0"),
    seat: Optional[str] = typer.Option(None, help="the player you sit in (default: the first player)"),
    opponent: Optional[str] = typer.Option(None, help="policy id for the other seats (default: the game's first scripted bot)"),
    seed: int = typer.Option(0, help="episode seed"),
) -> None:
    """Play a game by hand against scripted bots."""
    from arena.agents.catalog import fixed_policy_ids, make_fixed_policy
    from arena.agents.human import HumanPolicy
    from arena.records import Matchup
    from arena.registry import make, registered_games
    from arena.rollout import play_episode

    if game not in registered_games():
        _fail(f"unknown game {game!r}; registered: {', '.join(registered_games())}")
    players = list(make(game).possible_agents)
    seat = seat or players[0]
    if seat not in players:
        _fail(f"{game} has no player {seat!r}; players: {', '.join(players)}")
    choices = fixed_policy_ids(game)
    opponent = opponent or next((c for c in choices if c.startswith("scripted/")), "random")
    try:
        bot = make_fixed_policy(opponent, game)
    except ValueError as e:
        _fail(str(e))
    human = HumanPolicy()
    seats = {p: (human.policy_id if p == seat else opponent) for p in players}
    ep = asyncio.run(play_episode(Matchup(game=game, seed=seed, seats=seats), {human.policy_id: human, opponent: bot}))
    console.print(f"\n[bold]Game over.[/bold] Returns: " + ", ".join(f"{p} {r:+.3f}" for p, r in ep.returns.items()))
    if ep.metrics:
        console.print("Metrics: " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(ep.metrics.items())))


@app.command()
def episodes(
    run_id: str = typer.Argument(..., help="an MLflow run id"),
    limit: int = typer.Option(5, help="episodes to print (0 = all)"),
    tracking_uri: Optional[str] = typer.Option(None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db here"),
) -> None:
    """Print a run's logged episodes turn by turn, read back from MLflow."""
    from mlflow.exceptions import MlflowException

    from arena.tracking import episodes_from_run

    try:
        eps = episodes_from_run(run_id, tracking_uri, max_results=limit or None)
    except MlflowException as e:
        _fail(f"cannot read run {run_id!r}: {e.message}")
    if not eps:
        _fail(f"run {run_id} has no episode traces")
    for ep in eps:
        seats = ", ".join(f"{p}={pid}" for p, pid in ep.matchup.seats.items())
        console.rule(f"[bold]{ep.episode_id}[/bold]  {ep.matchup.game}  seed {ep.matchup.seed}  ({seats})")
        for t in ep.turns:
            flag = f"  [red]illegal: {t.illegal_reason}[/red]" if t.illegal else ""
            console.print(f"[bold cyan]#{t.index} {t.player}[/bold cyan] ({t.policy_id}@{t.policy_version}){flag}", highlight=False)
            console.print(f"[dim]{_indent(t.observation)}[/dim]", highlight=False)
            console.print(f"  → {t.action!r}", highlight=False)
        console.print(
            "returns: " + ", ".join(f"{p} {r:+.3f}" for p, r in ep.returns.items()) + f"   group {ep.group_return:+.3f}",
            highlight=False,
        )
        if ep.reward_components:
            console.print("reward components: " + ", ".join(f"{k} {v:+.3f}" for k, v in ep.reward_components.items()), highlight=False)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


@app.command()
def ui(
    port: int = typer.Option(5000, help="port for the MLflow UI"),
    host: str = typer.Option("127.0.0.1"),
    tracking_uri: Optional[str] = typer.Option(None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db here"),
) -> None:
    """Open the MLflow UI on the run store."""
    from arena.tracking import tracking_uri as resolve

    uri = resolve(tracking_uri)
    if uri.startswith(("http://", "https://")):
        console.print(f"The tracking server is already a UI: open {uri}")
        return
    mlflow_bin = shutil.which("mlflow") or os.path.join(os.path.dirname(sys.executable), "mlflow")
    cmd = [mlflow_bin, "server", "--backend-store-uri", uri, "--host", host, "--port", str(port), "--workers", "1"]
    # Background job execution is not needed to browse runs and traces, and costs ~2 GB and ~10 s at start.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    console.print(f"MLflow UI on http://{host}:{port}  (store: {uri}); Ctrl-C stops it")
    sys.stdout.flush()
    # Become the server (no wrapper process left behind): signals reach it and its workers directly.
    os.execve(cmd[0], cmd, env)


def main() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-file load/save bars drown the run's own progress
    app()


if __name__ == "__main__":
    main()
