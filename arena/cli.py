"""The ``arena`` command line."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path
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
    from arena.tracking import TrackingLost

    try:
        run_experiment(cfg, console, resume=resume)
    except ConfigError as e:  # e.g. nothing to resume, or a config that differs from the checkpoint's
        _fail(str(e))
    except TrackingLost as e:
        err.print(f"[bold red]error:[/bold red] {e}", highlight=False)
        raise typer.Exit(1) from None


@app.command("log-episodes")
def log_episodes(
    run_dir: str = typer.Argument(..., help="a run's directory, <runs_dir>/<name>/<run_id> (the run's error message names it)"),
    everything: bool = typer.Option(False, "--all", help="trace every kept episode, not only those the run chose to trace"),
    tracking_uri: Optional[str] = typer.Option(None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db here"),
) -> None:
    """Log the episodes a run kept on disk to its MLflow run (after the tracking server was down); safe to repeat."""
    from mlflow.exceptions import MlflowException

    from arena.tracking import TrackingUnavailable, check_store, log_journals
    from arena.tracking import tracking_uri as resolve

    uri = resolve(tracking_uri)
    try:
        check_store(uri)
        traces, files = log_journals(Path(run_dir), uri, everything=everything)
    except TrackingUnavailable as e:
        _fail(str(e))
    except FileNotFoundError as e:
        _fail(str(e))
    except MlflowException as e:
        _fail(f"cannot log to the run of {run_dir}: {e.message}")
    console.print(f"Logged {traces} episode traces and {files} episode files to MLflow run {Path(run_dir).name} in {uri}")


@app.command("eval")
def eval_command(
    args: list[str] = typer.Argument(..., help="CONFIG.yaml [key=value ...], or MODEL_DIR (a trained model, e.g. a checkpoint's policies/main)."),
    game: Optional[str] = typer.Option(None, "--game", help="the game whose evaluation to run (default: the config's one game with an evaluation)"),
    model: Optional[list[str]] = typer.Option(None, "--model", help="a trained model directory to evaluate as well (repeatable)"),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="the game's own option, key=value (repeatable), e.g. -o split=test"),
    limit: Optional[int] = typer.Option(None, min=1, help="only the first N questions or episodes of each split"),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="also evaluate the game's baselines (untrained model, bots, ...)"),
    temperature: float = typer.Option(0.0, min=0.0, help="model sampling temperature (0: greedy)"),
    imports: Optional[list[str]] = typer.Option(None, "--import", "-i", help="a module to import first (your game package); repeatable"),
) -> None:
    """Evaluate trained policies with a game's own evaluation (the games that declare one: see `arena games`)."""
    from arena.config import ConfigError, load_config
    from arena.registry import EvalRequest, registered_games

    _imports(imports)
    target, overrides = args[0], args[1:]
    options: dict[str, list[str]] = {}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--option {item!r} must look like key=value")
        options.setdefault(key, []).append(value)
    evaluable = {gid: s for gid, s in registered_games().items() if s.evaluate is not None}
    if game is None:
        candidates = sorted(evaluable)
        if target.endswith((".yaml", ".yml")):
            try:
                cfg = load_config(target, overrides)
            except ConfigError as e:
                _fail(str(e))
            candidates = sorted({g.id for g in cfg.games} & set(evaluable))
        if len(candidates) != 1:
            _fail(f"name the game to evaluate with --game; games with an evaluation: {', '.join(candidates or sorted(evaluable)) or 'none'}")
        game = candidates[0]
    if game not in evaluable:
        _fail(f"{game!r} declares no evaluation; games with one: {', '.join(sorted(evaluable)) or 'none'}")
    request = EvalRequest(
        target=target, overrides=list(overrides), models=list(model or []), options=options, limit=limit, baselines=baselines, temperature=temperature
    )
    try:
        evaluable[game].evaluate(request, console)
    except (ConfigError, ValueError) as e:
        _fail(str(e))


def _imports(modules: Optional[list[str]]) -> None:
    """Import a user's game modules (from the working directory too) before games are listed or played."""
    from arena.registry import import_modules

    if modules:
        try:
            import_modules(modules, [os.getcwd()])
        except ImportError as e:
            _fail(str(e))


@app.command()
def games(
    imports: Optional[list[str]] = typer.Option(None, "--import", "-i", help="a module to import first (your game package); repeatable"),
) -> None:
    """List the registered games: shipped, installed (entry points in `arena.games`) and imported."""
    from rich.table import Table

    from arena.registry import registered_games

    _imports(imports)
    table = Table(title="Registered games")
    table.add_column("id", style="bold")
    table.add_column("description")
    table.add_column("bots (scripted/<name>)")
    table.add_column("from")
    for gid, spec in registered_games().items():
        extras = [name for name, hook in (("report", spec.report), ("eval", spec.evaluate), ("critics", spec.critics), ("tree", spec.tree)) if hook]
        origin = getattr(spec.load(), "__module__", "?").removeprefix("arena.environments.").split(".")[0]
        table.add_row(gid, spec.description, ", ".join(spec.bots) or "-", origin + (f" ({', '.join(extras)})" if extras else ""))
    console.print(table)


@app.command()
def play(
    game: str = typer.Argument(..., help="a registered game id (see `arena games`)"),
    seat: Optional[str] = typer.Option(None, help="the player you sit in (default: the first player)"),
    opponent: Optional[str] = typer.Option(
        None,
        help="the policy in the other seats: scripted/BOT, random, a model directory, a checkpoint round directory or RUN_ID:policy@version "
        "(default: the game's first scripted bot)",
    ),
    seed: int = typer.Option(0, help="episode seed"),
    tracking_uri: Optional[str] = typer.Option(
        None, help="where RUN_ID:policy@version is looked up; default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db here"
    ),
    imports: Optional[list[str]] = typer.Option(None, "--import", "-i", help="a module to import first (your game package); repeatable"),
) -> None:
    """Play a game by hand against scripted bots or a trained model."""
    from arena.agents.catalog import fixed_policy_ids
    from arena.agents.human import HumanPolicy
    from arena.crossplay import resolve_policy
    from arena.records import Matchup
    from arena.registry import make, registered_games
    from arena.rollout import play_episode

    _imports(imports)
    if game not in registered_games():
        _fail(f"unknown game {game!r}; registered: {', '.join(registered_games())} (a game of your own: --import MODULE)")
    players = list(make(game).possible_agents)
    seat = seat or players[0]
    if seat not in players:
        _fail(f"{game} has no player {seat!r}; players: {', '.join(players)}")
    choices = fixed_policy_ids(game)
    opponent = opponent or next((c for c in choices if c.startswith("scripted/")), "random")
    try:
        bot = resolve_policy(opponent, game, tracking_uri=tracking_uri)
    except ValueError as e:
        _fail(str(e))
    model = hasattr(bot, "engine")
    if model:
        console.print(f"Your opponent: the model {opponent} (weights version {bot.version})", highlight=False, markup=False)
    human = HumanPolicy()
    seats = {p: (human.policy_id if p == seat else opponent) for p in players}
    ep = asyncio.run(play_episode(Matchup(game=game, seed=seed, seats=seats), {human.policy_id: human, opponent: bot}))
    console.print("\n[bold]Game over.[/bold] Returns: " + ", ".join(f"{p} {r:+.3f}" for p, r in ep.returns.items()))
    if ep.metrics:
        console.print("Metrics: " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(ep.metrics.items())))
    if model:  # what the model actually wrote, retries and illegal moves included
        moves = [f"{t.player}: {t.action!r}" + (" (illegal)" if t.illegal else "") for t in ep.turns if t.player != seat]
        console.print("The model's moves: " + " | ".join(moves), highlight=False, markup=False)


def _game_kwargs(items: Optional[list[str]]) -> dict:
    """``-o key=value`` game options; each value read as YAML (``rounds=5`` is a number, ``shuffle_labels=true`` a bool)."""
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--option {item!r} must look like key=value, e.g. -o rounds=5")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key] = value
    return out


@app.command("crossplay")
def crossplay_command(
    game: str = typer.Argument(..., help="a registered game id (see `arena games`)"),
    policies: list[str] = typer.Argument(..., help="two or more: scripted/BOT, random, a model directory, a checkpoint round directory, RUN_ID:policy@version"),
    episodes: int = typer.Option(8, min=1, help="episodes per pairing and seating"),
    seed: int = typer.Option(0, help="seed of the episodes (each derived from it, the pairing, the seating and its number)"),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="a game option, key=value (repeatable), e.g. -o rounds=5"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout (progress and the run id go to stderr)"),
    log: bool = typer.Option(True, "--log/--no-log", help="log the result to MLflow (experiment 'crossplay')"),
    tracking_uri: Optional[str] = typer.Option(None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db here"),
    temperature: float = typer.Option(1.0, min=0.0, help="models' sampling temperature (0: greedy)"),
    max_new_tokens: int = typer.Option(24, min=1, help="models' longest move, in tokens"),
    device: str = typer.Option("cpu", help="where models run: cpu, cuda, cuda:1, ..."),
    imports: Optional[list[str]] = typer.Option(None, "--import", "-i", help="a module to import first (your game package); repeatable"),
) -> None:
    """Play every policy against every other in every seating; rate them (OpenSkill) and show the mean-return matrix."""
    import json

    from arena.crossplay import crossplay, log_crossplay, resolve_policy
    from arena.engines.base import SamplingParams
    from arena.registry import make, registered_games
    from arena.tracking import TrackingUnavailable, check_store, quiet_mlflow
    from arena.tracking import tracking_uri as resolve

    _imports(imports)
    if game not in registered_games():
        _fail(f"unknown game {game!r}; registered: {', '.join(registered_games())} (a game of your own: --import MODULE)")
    twice = sorted({p for p in policies if policies.count(p) > 1})
    if twice:
        _fail(f"policy {', '.join(twice)} is named more than once; cross-play needs distinct policies")
    if len(policies) < 2:
        _fail(f"cross-play needs at least 2 distinct policies, got {len(policies)}: {', '.join(policies)}")
    game_kwargs = _game_kwargs(option)
    try:
        make(game, **game_kwargs).close()
    except (TypeError, ValueError) as e:
        _fail(f"bad option for {game}: {e}")
    uri = resolve(tracking_uri)
    quiet_mlflow()
    sampling = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens)
    pool = {}
    for spec in policies:
        try:
            pool[spec] = resolve_policy(spec, game, sampling=sampling, device=device, tracking_uri=uri)
        except ValueError as e:
            _fail(str(e))
    if log:  # before playing: a store that cannot be used fails now, not after the episodes
        try:
            check_store(uri)
        except TrackingUnavailable as e:
            _fail(str(e))
    out = err if as_json else console
    result = crossplay(game, policies, episodes=episodes, seed=seed, game_kwargs=game_kwargs, policies=pool, console=out)
    run_id = log_crossplay(result, uri) if log else None
    if as_json:
        print(json.dumps({**result.as_json(), "mlflow_run_id": run_id}))
    else:
        _crossplay_tables(result)
    if run_id:
        (err if as_json else console).print(f"Logged to MLflow run [bold]{run_id}[/bold] (experiment crossplay) in {uri}", highlight=False)


def _crossplay_tables(result) -> None:
    """The ranking (best rated first) and the mean-return matrix, rows and columns in rating order."""
    from rich.table import Table

    from arena.crossplay import short_label

    order = result.ranking()
    table = Table(title=f"Cross-play: {result.game}, {result.episodes_per_pairing} episodes per pairing and seating")
    for name, justify in (("#", "right"), ("policy", "left"), ("mean return", "right"), ("W/D/L", "right"), ("mu ± sigma", "right"), ("ordinal", "right")):
        table.add_column(name, justify=justify)
    for i, p in enumerate(order, 1):
        w, d, l = (sum(t[p].values()) for t in (result.wins, result.draws, result.losses))
        r = result.ratings[p]
        table.add_row(str(i), p, f"{result.mean_return(p):+.3f}", f"{w}/{d}/{l}", f"{r['mu']:.2f} ± {r['sigma']:.2f}", f"{r['ordinal']:+.2f}")
    console.print(table)
    matrix = Table(title="Mean return of the row policy against the column policy", caption="rows and columns by rating, best first")
    matrix.add_column("row \\ column")
    for c in order:
        matrix.add_column(short_label(c, 24), justify="right")
    for r in order:
        matrix.add_row(short_label(r, 40), *("—" if r == c else f"{result.matrix[r][c]:+.2f}" for c in order))
    console.print(matrix)


def _player_values(items: Optional[list[str]], option: str) -> list[tuple[str, float]]:
    out = []
    for item in items or []:
        player, sep, value = item.partition("=")
        try:
            out.append((player, float(value)))
        except ValueError:
            sep = ""
        if not sep or not player:
            _fail(f"{option} {item!r} must look like PLAYER=NUMBER, e.g. {option} seller=0.5")
    return out


@app.command()
def episodes(
    run_id: str = typer.Argument(..., help="an MLflow run id"),
    game: Optional[str] = typer.Option(None, help="only this game's episodes (a game id, as `arena games` lists them)"),
    entry: Optional[str] = typer.Option(None, help="only this config entry's episodes (its name)"),
    phase: Optional[str] = typer.Option(None, help="train or eval"),
    policy: Optional[str] = typer.Option(None, help="only episodes where this policy sat: main (any version), main@3, scripted/fair_buyer"),
    min_return: Optional[list[str]] = typer.Option(None, "--min-return", help="PLAYER=X: that player's return at least X (repeatable)"),
    max_return: Optional[list[str]] = typer.Option(None, "--max-return", help="PLAYER=X: that player's return at most X (repeatable)"),
    illegal: bool = typer.Option(False, "--illegal", help="only episodes with an illegal move"),
    limit: int = typer.Option(5, help="episodes to print (0 = all)"),
    ids_only: bool = typer.Option(False, "--ids", help="print only the matching episode ids, one a line"),
    tracking_uri: Optional[str] = typer.Option(None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db here"),
) -> None:
    """Print a run's logged episodes turn by turn, read back from MLflow; the filters run in the tracking store."""
    from mlflow.exceptions import MlflowException

    from arena.tracking import EpisodeFilter, episodes_from_run

    if phase is not None and phase not in ("train", "eval"):
        _fail(f"--phase must be train or eval, not {phase!r}")
    where = EpisodeFilter(
        game=game,
        entry=entry,
        phase=phase,
        policy=policy,
        min_return=_player_values(min_return, "--min-return"),
        max_return=_player_values(max_return, "--max-return"),
        illegal=illegal,
    )
    try:
        eps = episodes_from_run(run_id, tracking_uri, max_results=limit or None, where=where)
    except MlflowException as e:
        _fail(f"cannot read run {run_id!r}: {e.message}")
    except ValueError as e:
        _fail(str(e))
    if not eps:
        _fail(f"run {run_id} has no episode traces" + (f" matching {where.filter_string()}" if where.filter_string() else ""))
    if ids_only:
        for ep in eps:
            console.print(ep.episode_id, highlight=False)
        return
    for ep in eps:
        seats = ", ".join(f"{p}={pid}" for p, pid in ep.matchup.seats.items())
        console.rule(f"[bold]{ep.episode_id}[/bold]  {ep.matchup.game}  seed {ep.matchup.seed}  ({seats})")
        for t in ep.turns:
            flag = f"  [red]illegal: {t.illegal_reason}[/red]" if t.illegal else ""
            console.print(f"[bold cyan]#{t.index} {t.player}[/bold cyan] ({t.policy_id}@{t.policy_version}){flag}", highlight=False)
            console.print(f"[dim]{_indent(t.observation)}[/dim]", highlight=False)
            console.print(f"  → {t.action!r}", highlight=False)
            for call in t.tool_calls:
                console.print(f"    [magenta]{call.name}[/magenta] {call.input} → {_short(call.output)}", highlight=False)
        ending = f"   ({ep.outcome})" if ep.outcome else ""
        console.print(
            "returns: " + ", ".join(f"{p} {r:+.3f}" for p, r in ep.returns.items()) + f"   group {ep.group_return:+.3f}{ending}",
            highlight=False,
        )
        if ep.reward_components:
            console.print("reward components: " + ", ".join(f"{k} {v:+.3f}" for k, v in ep.reward_components.items()), highlight=False)


def _short(value: object, n: int = 160) -> str:
    text = str(value)
    return text if len(text) <= n else text[: n - 1] + "…"


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
