"""An experiment: evaluate the model policies, train them by self-play, evaluate again.

``arena run`` calls :func:`run`. It reads top to bottom:

1. set up: the runtime, the model policies (engines, learners), the MLflow
   run; or resume one from its latest checkpoint;
2. evaluate every seating (the "before" tournament);
3. each training round: build the matchups (groups of episodes sharing a
   seed), let the recipe (``trainer.recipe``, an entry of
   :data:`arena.trainers.recipes.RECIPES`) play them and turn the episodes
   into what each trained policy learns from, update the policies, push the
   new weights to their engines with a version number, log, checkpoint;
4. evaluate again (the "after" tournament), print the before/after table, and
   hand each game's episodes to its package's ``report`` hook.

With ``trainer.recipe=none`` only step 2 runs: a tournament. A run with a
``critic`` section runs the in-context critic loop instead (:mod:`arena.critic_loop`).

Where it runs is ``cluster.mode``'s runtime (:mod:`arena.runtime`): one
process, or actors on a Ray cluster. The loop is the same for both. Nothing in
it names a game or a recipe.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from arena import checkpoint, tracking
from arena.agents.catalog import make_fixed_policy
from arena.config import SNAPSHOT, ConfigError, RunConfig, dump_config, is_model_policy
from arena.critic_loop import run_critic_loop
from arena.league import League
from arena.records import Episode, Matchup
from arena.registry import ReportInput, spec
from arena.reporting import RunResult, before_after_table, log_reward_curve, log_traces, ratings_table, round_metrics, summary_table
from arena.runtime import ModelPolicies, choose_snapshot, engine_weights, load_model_policies, make_runtime, policy_pools
from arena.seeds import EVAL, TRAIN, derive_seed
from arena.trainers.advantages import RoleBaseline
from arena.trainers.recipes import RECIPES, RoundContext, RoundPlay
from arena.trainers.staleness import fresh_episodes

log = logging.getLogger(__name__)


# ----- matchups ----------------------------------------------------------------------------------
def eval_matchups(cfg: RunConfig) -> tuple[list[Matchup], list[str]]:
    """Every seating, ``episodes_per_matchup`` times; the same seeds before and after training."""
    out, labels = [], []
    for gi, game in enumerate(cfg.games):
        for mi, seats in enumerate(game.matchups):
            for k in range(cfg.episodes_per_matchup):
                seed = derive_seed(cfg.seed, EVAL, gi, mi, k)
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
                seed = derive_seed(cfg.seed, TRAIN, round_index, gi, mi, g)
                for k in range(t.group_size):
                    out.append(Matchup(game=game.id, seed=seed, seats=dict(seats), game_kwargs=dict(game.kwargs), sample=k))
                    labels.append(game.label)
    return out, labels


# ----- the run -----------------------------------------------------------------------------------
def run(cfg: RunConfig, console: Console | None = None, *, resume: bool = False) -> RunResult:
    """Run an experiment. A tracking store that cannot be used fails here, before any work
    (:class:`ConfigError`); one that stops answering mid-run raises :class:`arena.tracking.TrackingLost`,
    which says where the episodes played so far are kept."""
    console = console or Console()
    uri = tracking.tracking_uri(cfg.tracking.uri)
    try:
        tracking.check_store(uri)
    except tracking.TrackingUnavailable as e:
        raise ConfigError(str(e)) from None
    if tracking.is_server(uri):
        tracking.bound_http_retries()
    if cfg.critic is not None and resume:
        raise ConfigError("a critic-loop run has no checkpoints to resume: run it again (it is seeded)")
    holder: list[RunResult] = []  # the run, once it has one: where its episodes are kept
    try:
        return run_critic_loop(cfg, console) if cfg.critic is not None else _run(cfg, console, resume, holder)
    except Exception as e:
        if not _tracking_lost(uri, e):
            raise
        run_dir = holder[0].run_dir if holder else None
        raise tracking.TrackingLost(uri, e, run_dir, resumable=bool(holder) and cfg.trainer.training) from e


def _tracking_lost(uri: str, error: Exception) -> bool:
    """Whether an error came from a tracking store that no longer answers (MLflow's client reports
    one as many kinds of error: ask the store)."""
    return not isinstance(error, (KeyboardInterrupt, ConfigError)) and not tracking.store_answers(uri)


def _run(cfg: RunConfig, console: Console, resume: bool, holder: list[RunResult]) -> RunResult:
    import mlflow

    # 1. set up
    tracking.quiet_mlflow()
    mlflow.set_tracking_uri(tracking.tracking_uri(cfg.tracking.uri))
    mlflow.set_experiment(cfg.tracking.experiment)
    t = cfg.trainer
    recipe = RECIPES.get(t.recipe) if t.training else None
    ckpt = _checkpoint_to_resume(cfg) if resume else None
    state: dict[str, Any] = checkpoint.read_state(ckpt) if ckpt else {}
    runtime = make_runtime(cfg)
    models = load_model_policies(cfg, console, runtime)
    pools = policy_pools(cfg, models)
    baselines = {pid: RoleBaseline(decay=t.baseline_decay) for pid in (models.learners if models else {})} if t.baseline != "none" else {}
    league = League(cfg, models.learners if models else None)
    started = time.perf_counter()

    with runtime, mlflow.start_run(run_id=state.get("run_id"), run_name=None if state else (cfg.tracking.run_name or cfg.name)) as active:
        result = RunResult(run_id=active.info.run_id, run_dir=checkpoint.run_dir(cfg.runs_dir, cfg.name) / active.info.run_id)
        runtime.run_id = result.run_id  # what the runtime logs from other threads (faults) goes to this run
        holder.append(result)
        logged = _logged_steps(result.run_id)
        start_round = _start(cfg, result, state, ckpt, models, baselines, league, console)

        # 2. evaluate
        matchups, result.labels = eval_matchups(cfg)
        if state.get("before_done") or (state and recipe is None):
            result.before = [Episode.model_validate(e) for e in state.get("before", [])]
        else:
            result.before, traced = _evaluate(cfg, result, runtime, models, pools, league, matchups, console, step=0, tag="before" if recipe else "eval")
            result.traces_logged += traced
            if recipe is not None:  # round 0's checkpoint: a run killed in its first round resumes too
                _save(cfg, result, 0, models, baselines, league)

        # 3. train
        ahead = _ahead_from_state(state)  # an asynchronous run's next round, played before its checkpoint
        for r in range(start_round, t.rounds if recipe else 0):
            metrics, played, ahead = _train_round(cfg, recipe, r, runtime, models, pools, baselines, league, console, ahead)
            # Log before checkpointing: a kill in between re-runs this round on resume, which then
            # finds its metrics already logged (same values: the round is deterministic) and skips them.
            if r not in logged:  # episodes first: they reach the disk before anything goes to the store
                result.traces_logged += log_traces(
                    played.episodes,
                    played.labels,
                    r,
                    f"train/round_{r:05d}.jsonl",
                    phase="train",
                    seed=cfg.seed,
                    tracking_cfg=cfg.tracking,
                    run_dir=result.run_dir,
                )
                mlflow.log_metrics(metrics, step=r)
            done = r + 1
            if done % t.checkpoint_every == 0 or done == t.rounds:
                tick = time.perf_counter()
                _save(cfg, result, done, models, baselines, league, ahead)
                mlflow.log_metric("time/checkpoint_s", time.perf_counter() - tick, step=r)
            result.rounds_done = done

        # 4. evaluate again, and each game's report
        if recipe is not None:
            result.after, traced = _evaluate(cfg, result, runtime, models, pools, league, matchups, console, step=t.rounds, tag="after")
            result.traces_logged += traced
            log_reward_curve(result.run_id, cfg.name)
        league.log_rating_curve(cfg.name)
        result.ratings = league.ratings
        reports = game_reports(cfg, result, run_models(cfg, result, models))
        tracking.flush_traces()
        result.seconds = time.perf_counter() - started
        mlflow.log_metric("run/seconds", result.seconds)

    console.print(before_after_table(result) if recipe is not None else summary_table(result.before, result.labels))
    if league.active:
        console.print(ratings_table(league.ratings))
    for renderable in reports:
        console.print(renderable)
    n = len(result.before) + len(result.after)
    console.print(
        f"{n} evaluation episodes, {result.rounds_done} training rounds, {result.traces_logged} episodes traced, in {result.seconds:.1f} s. "
        f"Read them: [bold]arena episodes {result.run_id}[/bold] or [bold]arena ui[/bold]"
    )
    return result


def _start(
    cfg: RunConfig, result: RunResult, state: dict, ckpt: Path | None, models: ModelPolicies | None, baselines: dict, league: League, console: Console
) -> int:
    """Log the config of a new run (and return 0), or restore a resumed one (and return its next round)."""
    import mlflow

    if state:
        start_round = _restore(state, ckpt, models, baselines)
        league.load(state.get("league", {}), ckpt)
        console.print(f"Resuming MLflow run [bold]{result.run_id}[/bold] after round {start_round} from {ckpt}")
        return start_round
    mlflow.log_text(dump_config(cfg), "config.yaml")
    mlflow.log_params(tracking.flat_params({k: v for k, v in cfg.model_dump(mode="json").items() if k != "games"}))
    mlflow.log_param("games", ",".join(g.label for g in cfg.games))
    if cfg.model.path and cfg.model.warm_start is not None:
        mlflow.set_tag("model.warm_start", f"skipped: {cfg.model.warm_start.recipe} builds the tiny model, and model.path is used as given")
    console.print(f"MLflow run [bold]{result.run_id}[/bold] in {mlflow.get_tracking_uri()}")
    return 0


def _play_round(
    cfg: RunConfig, recipe: Any, r: int, runtime: Any, models: ModelPolicies, pools: dict, league: League, console: Console
) -> tuple[RoundPlay, dict[str, float]]:
    """Play round ``r``'s training matchups (the recipe's way) with the weights the engines hold.
    Returns the episodes and the round's play metrics."""
    tick = time.perf_counter()
    snapshot_id = choose_snapshot(cfg, models, r)
    pools_r = {g: {**p, snapshot_id: models.snapshot} if models.snapshot else p for g, p in pools.items()}
    matchups, labels = train_matchups(cfg, r, snapshot_id)
    matchups = league.seat_training(matchups, r)
    for game, extra in league.policies(matchups, models.make_agent, make_fixed_policy).items():
        pools_r[game] = {**pools_r[game], **extra}
    tokens0 = _completion_tokens(models)
    ctx = RoundContext(
        round_index=r,
        matchups=matchups,
        labels=labels,
        pools=pools_r,
        model_policies=frozenset(models.agents),
        runtime=runtime,
        trainer=cfg.trainer,
        rollout=cfg.rollout,
        console=console,
    )
    played = recipe.play(ctx)
    seconds = time.perf_counter() - tick
    metrics = {f"train/{k}": v for k, v in round_metrics(played.episodes, played.labels).items()}
    metrics["train/rollout_tokens_per_s"] = (_completion_tokens(models) - tokens0) / seconds
    metrics["time/rollout_s"] = seconds
    return played, metrics


def _learn_round(cfg: RunConfig, recipe: Any, r: int, models: ModelPolicies, played: RoundPlay, baselines: dict) -> dict[str, float]:
    """Each trained policy learns from the round's episodes it may train on (at most
    ``trainer.max_staleness`` versions behind it; staler ones are dropped and counted)."""
    t = cfg.trainer
    tick = time.perf_counter()
    metrics: dict[str, float] = {}
    for pid, learner in models.learners.items():
        fresh = fresh_episodes(played.episodes, played.labels, pid, learner.version, t.max_staleness)
        metrics.update(fresh.metrics(pid))
        samples, extra = recipe.samples(RoundPlay(fresh.episodes, fresh.labels, played.extra), pid, t, baselines.get(pid))
        stats = learner.learn(samples, torch.Generator().manual_seed(derive_seed(cfg.seed, TRAIN, r, 0x1EA2)))
        metrics.update({f"learn/{pid}/{k}": v for k, v in {**stats, **extra}.items()})
    metrics["time/learn_s"] = time.perf_counter() - tick
    return metrics


def _sync_round(cfg: RunConfig, r: int, runtime: Any, models: ModelPolicies, played: RoundPlay, league: League) -> dict[str, float]:
    """Push each learner's new weights to its engines (versioned, probe-checked); the snapshot pool and the league take the round."""
    tick = time.perf_counter()
    metrics: dict[str, float] = {}
    for pid, learner in models.learners.items():
        metrics.update(runtime.sync(pid, models.agents[pid].engine, learner))
    if models.snapshot is not None and (r + 1) % cfg.trainer.snapshot_every == 0 and "main" in models.learners:
        models.pool[models.learners["main"].version] = {k: v.detach().clone() for k, v in engine_weights(models.learners["main"]).items()}
    league.record(played.episodes)
    league.snapshot(r + 1, models.learners)
    metrics["time/sync_s"] = time.perf_counter() - tick
    metrics.update(league.rate(played.episodes, r))
    return metrics


def _train_round(
    cfg: RunConfig,
    recipe: Any,
    r: int,
    runtime: Any,
    models: ModelPolicies,
    pools: dict,
    baselines: dict,
    league: League,
    console: Console,
    ahead: tuple[RoundPlay, dict[str, float]] | None = None,
) -> tuple[dict[str, float], RoundPlay, tuple[RoundPlay, dict[str, float]] | None]:
    """One round: play, learn, sync. Returns the round's metrics, its episodes, and the next round's
    play when it ran ahead.

    Synchronous (``trainer.max_staleness`` 0): play round ``r``, learn on it, sync. Asynchronous:
    round ``r``'s episodes are ``ahead`` (played while round ``r-1`` learned) or played now; then
    the learner trains on them in a thread while the engines play round ``r+1`` with the weights
    they hold, and the new weights reach the engines once both are done (one step off-policy).
    """
    t = cfg.trainer
    tick = time.perf_counter()
    played, play_metrics = ahead if ahead is not None else _play_round(cfg, recipe, r, runtime, models, pools, league, console)
    generating = 0.0 if ahead is not None else play_metrics["time/rollout_s"]
    next_round: tuple[RoundPlay, dict[str, float]] | None = None
    if t.max_staleness > 0 and r + 1 < t.rounds:
        with ThreadPoolExecutor(1, thread_name_prefix="arena-learner") as learner_thread:
            learning = learner_thread.submit(_learn_round, cfg, recipe, r, models, played, baselines)
            next_round = _play_round(cfg, recipe, r + 1, runtime, models, pools, league, console)
            learn_metrics = learning.result()
        generating += next_round[1]["time/rollout_s"]
    else:
        learn_metrics = _learn_round(cfg, recipe, r, models, played, baselines)
    metrics = {**play_metrics, **learn_metrics, **_sync_round(cfg, r, runtime, models, played, league)}
    round_s = time.perf_counter() - tick
    metrics.update(
        {
            "time/round_s": round_s,
            "time/engine_idle_s": max(round_s - generating, 0.0),
            "time/learner_idle_s": max(round_s - learn_metrics["time/learn_s"], 0.0),
        }
    )
    metrics["train/round"] = float(r)
    return metrics, played, next_round


def _completion_tokens(models: ModelPolicies | None) -> int:
    """Tokens the model policies' engines generated so far (an engine that serves several policies' adapters counts once)."""
    if not models:
        return 0
    return sum(st.completion_tokens for st in {id(a.engine.stats): a.engine.stats for a in models.agents.values()}.values())


def run_models(cfg: RunConfig, result: RunResult, models: ModelPolicies | None) -> dict[str, str]:
    """:attr:`arena.registry.ReportInput.models`: ``start`` (the model the policies started from) and each
    trained policy's directory in the run's last checkpoint."""
    if models is None:
        return {}
    from arena.models import run_model_path

    out = {"start": run_model_path(cfg)}  # built already: cached
    last = checkpoint.latest(result.run_dir.parent, result.run_dir.name) if result.after else None
    for pid in models.learners if last is not None else ():
        d = last / "policies" / checkpoint.policy_dirname(pid)
        if d.is_dir():
            out[pid] = str(d)
    return out


def game_reports(cfg: RunConfig, result: RunResult, models: dict[str, str] | None = None) -> list[Any]:
    """Each game's ``report`` hook, on that game's evaluation episodes; returns what to print. ``models``:
    :func:`run_models`."""
    import mlflow

    out: list[Any] = []
    kwargs_by_game: dict[str, dict[str, dict]] = defaultdict(dict)
    for g in cfg.games:
        kwargs_by_game[g.id][g.label] = dict(g.kwargs)
    for game_id, entries in kwargs_by_game.items():
        hook = spec(game_id).report
        if hook is None:
            continue
        if not any(label in entries for label in result.labels):
            continue
        before = [(e, label) for e, label in zip(result.before, result.labels) if label in entries]
        after = [(e, label) for e, label in zip(result.after, result.labels) if label in entries]
        inp = ReportInput(
            game=game_id,
            before=[e for e, _ in before],
            labels_before=[label for _, label in before],
            after=[e for e, _ in after],
            labels_after=[label for _, label in after],
            entries=entries,
            run_name=cfg.name,
            step=cfg.trainer.rounds if result.after else 0,
            models=dict(models or {}),
        )
        try:
            report = hook(inp)
        except Exception as e:  # the run's results are logged already: a broken report loses nothing
            log.exception("the report of %s failed", game_id)
            out.append(f"[red]The report of {game_id} failed:[/red] {type(e).__name__}: {e}")
            continue
        if report is not None:
            out += report.renderables
            if report.metrics:
                mlflow.log_metrics(report.metrics, step=cfg.trainer.rounds if result.after else 0)
    return out


# ----- checkpoints -------------------------------------------------------------------------------
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


def _ahead_from_state(state: dict) -> tuple[RoundPlay, dict[str, float]] | None:
    """The round an asynchronous run had played ahead when it saved its checkpoint (None: none)."""
    ahead = state.get("ahead")
    if not ahead:
        return None
    episodes = [Episode.model_validate(e) for e in ahead["episodes"]]
    return RoundPlay(episodes, list(ahead["labels"])), {k: float(v) for k, v in ahead["metrics"].items()}


def _save(
    cfg: RunConfig,
    result: RunResult,
    done: int,
    models: ModelPolicies,
    baselines: dict,
    league: League,
    ahead: tuple[RoundPlay, dict[str, float]] | None = None,
) -> None:
    state = {
        "run_id": result.run_id,
        "rounds_done": done,
        "versions": {pid: learner.version for pid, learner in models.learners.items()},
        "baselines": {pid: b.state_dict() for pid, b in baselines.items()},
        "pool_versions": sorted(models.pool),
        "before_done": True,
        "before": [e.model_dump(mode="json") for e in result.before],
        "config": cfg.model_dump(mode="json"),
        "league": league.state_dict(),
        # an asynchronous run has played the next round already (with the weights before this
        # checkpoint's): a resumed run learns from those episodes instead of playing them again
        "ahead": ({"episodes": [e.model_dump(mode="json") for e in ahead[0].episodes], "labels": ahead[0].labels, "metrics": ahead[1]} if ahead else None),
    }
    directory = result.run_dir / "checkpoints" / f"round_{done:05d}"
    checkpoint.save(directory, state, models.learners, models.tokenizer)
    league.save(directory)
    if models.pool:
        torch.save(models.pool, directory.parent / "snapshot_pool.pt")


def _restore(state: dict, ckpt: Path, models: ModelPolicies, baselines: dict) -> int:
    for pid, learner in models.learners.items():
        checkpoint.load_policy(ckpt, pid, learner)
        learner.version = int(state["versions"][pid])
        models.agents[pid].engine.update_weights(engine_weights(learner), learner.version)
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


# ----- evaluation --------------------------------------------------------------------------------
def _evaluate(
    cfg: RunConfig,
    result: RunResult,
    runtime: Any,
    models: ModelPolicies | None,
    pools: dict,
    league: League,
    matchups: list[Matchup],
    console: Console,
    *,
    step: int,
    tag: str,
) -> tuple[list[Episode], int]:
    """Play every evaluation seating (snapshot seats by the starting weights), log metrics and traces.
    Returns the episodes and how many were traced."""
    labels = result.labels
    import mlflow

    tokens0 = _completion_tokens(models)
    t0 = time.perf_counter()
    eval_pools = pools
    if models is not None and models.snapshot is not None:
        models.snapshot.engine.update_weights(models.pool[0], 0)
        models.snapshot.policy_id = "main@0"
        eval_pools = {g: {**p, SNAPSHOT: models.snapshot} for g, p in pools.items()}
    matchups = league.seat_evaluation(matchups)
    for game, extra in league.policies(matchups, models.make_agent if models else None, make_fixed_policy).items():
        eval_pools = {**eval_pools, game: {**eval_pools[game], **extra}}
    episodes = runtime.play(matchups, eval_pools, [f"{tag}-{i:05d}" for i in range(len(matchups))], console, f"evaluation ({tag})", step=step, tag=tag)
    seconds = time.perf_counter() - t0
    metrics = {f"eval/{k}": v for k, v in round_metrics(episodes, labels).items()}
    metrics["eval/seconds"] = seconds
    metrics["eval/episodes_per_s"] = len(episodes) / seconds
    if models is not None:
        metrics["eval/tokens_per_s"] = (_completion_tokens(models) - tokens0) / seconds
    metrics.update(league.rate(episodes, step))
    traced = log_traces(episodes, labels, step, f"eval/{tag}.jsonl", phase="eval", seed=cfg.seed, tracking_cfg=cfg.tracking, run_dir=result.run_dir)
    mlflow.log_metrics(metrics, step=step)
    return episodes, traced
