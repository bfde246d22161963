"""Collaborative self-play for QA (Eisenstein et al. 2025), reproduced in shape: prints one JSON object.

For each seed: the quick-start config (``arena run`` with no arguments, i.e.
arena.config.QUICK_START) with that seed for the run, the world's training
data draws and the knowledge model, trained by collaborative self-play
(anonymous helpers); and again with ``reveal_helpers=true`` in every
collaborative entry (the de-anonymised variant). Then the *isolated*
evaluation (one agent alone with the search tool of the question's corpus,
every question of the split once, greedy decoding) of the model before
self-play (the warm start) and after it, on the in-distribution ``test`` split
and the ``ood`` split (arena.environments.collab_qa.evaluation).

Per variant and split: ``searches_per_question``, ``f1`` and
``selective_auc`` (area under the accuracy-coverage curve by stated
confidence; higher is better), and ``searches_known`` / ``searches_unknown``
(searches per question on facts the model was / was not pre-trained on),
before and after, each as the mean over seeds
with a 95% t-interval, plus the per-seed values. ``checks`` compares with the
paper's shape: searches fall by at least 2x, F1 is not lower (the mean paired
change over seeds, ``f1_change``, is not negative), selective AUC improves.
Beside it, for the model before and after: ``collaborative_test``, the same
game self-play trains in (every seat the model, test split), and
``relay_probe``, exact match per hop of a search's answer on its way through
a helper (environments.collab_qa.reading.relay_probe), asked in the trained
wordings, and ``relay_probe_held_out_wording`` in the ood split's. Per split,
``*_action_supervised``: the paper's supervised-actions baseline alone with a
tool (the warm start fine-tuned to search exactly where its own closed-book
answer is wrong; ``--no-action-supervised`` skips it).

    python benchmarks/csp_reproduction.py                 # 3 seeds, the quick start's settings
    python benchmarks/csp_reproduction.py --quick         # 1 seed, 2 rounds: checks that it works
    python benchmarks/csp_reproduction.py --seeds 5 trainer.rounds=8 trainer.recipe=rest
    python benchmarks/csp_reproduction.py --keep csp-runs ...  # keep every run's episodes and checkpoints
    python benchmarks/csp_reproduction.py --keep csp-runs --evaluate-kept ...  # evaluate those runs again, no training
    python benchmarks/csp_reproduction.py --config configs/collab_qa_asker_tool.yaml --no-deanonymised
    python benchmarks/csp_reproduction.py --select-checkpoint ...  # "after": the checkpoint best on the train split

With ``--select-checkpoint`` the trained model is not the run's last checkpoint but the one whose isolated
reward on the train split (the questions self-play trained on) is highest, round 0 (the warm start)
included: model selection that never sees a test or ood question. ``selected_round`` says which, each
run's ``selection`` has every checkpoint's train reward, and the last checkpoint's figures are in the
rows with a ``_last`` suffix.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METRICS = {
    "n_questions": "n",
    "searches_per_question": "searches",
    "f1": "f1",
    "selective_auc": "selective_auc",
    # the same area with the probability the model gave its own move as the confidence: a model that never
    # hedges or abstains has a selective AUC by stated confidence equal to its F1; this one still ranks
    "selective_auc_p": "selective_auc_p",
    # the same searches on questions whose fact the model was pre-trained on / not: learning *what you
    # know* means searching less on the first without giving up the second
    "searches_known": "searches_known",
    "searches_unknown": "searches_unknown",
    # the game's shared reward: answer score (F1; hedge and abstain scores) minus the search cost
    "reward": "reward",
}
#: the model's own fixed strategies (environments.collab_qa.reading.fixed_strategy_rewards), after training
#: (and, with a _before suffix, of the warm start): what learning when to search must beat
BASELINES = ("reward_never_search", "reward_always_search", "reward_oracle")
SPLITS = {"test": "in_distribution", "ood": "ood"}
#: each run's figures, in its directory: ``--evaluate-kept`` measures only what they lack
RESULT_FILE = "csp_result.json"
#: the action-supervised baseline's isolated figures in the report, per split (with an _action_supervised suffix)
ACTION_SUPERVISED = ("searches_per_question", "searches_known", "searches_unknown", "f1", "selective_auc", "reward")
#: the last checkpoint's isolated figures in the report with ``--select-checkpoint`` (with a _last suffix)
LAST = ("searches_per_question", "searches_known", "searches_unknown", "f1", "reward")
#: the search decision's figures (:func:`search_decision`) in the report, before, after and of the
#: action-supervised baseline: P(SEARCH) on known and unknown facts, and its AUROC between them
DECISION = ("p_search_known", "p_search_unknown", "search_auroc")
#: the reading probes of the model self-play starts from (environments.collab_qa.reading.reading_probe)
PROBES = {"reading_probe_unseen": "redrawn", "reading_probe_fresh_worlds": "held_out", "reading_probe_unknown_facts": "unknown"}


def ci95(values: list[float]) -> float:
    """Half-width of the 95% t-interval of the mean (0 for one value)."""
    if len(values) < 2:
        return 0.0
    df = len(values) - 1
    t = _T975[df - 1] if df <= len(_T975) else 1.96
    return float(t * np.std(values, ddof=1) / math.sqrt(len(values)))


#: Student's t 0.975 quantiles for 1..10 degrees of freedom (more seeds: the normal 1.96, slightly narrow)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def played_eval(model_dir: str, cfg, splits: list[str], limit: int | None, setting: str = "isolated") -> dict[str, dict[str, float]]:
    """split -> arena.environments.collab_qa.evaluation.summarize of the model alone with one tool
    (``isolated``) or in every seat of the collaborative game (``collaborative``), greedy."""
    from arena.agents.llm import LLMAgent
    from arena.engines.base import SamplingParams
    from arena.engines.hf import HFEngine
    from arena.environments.collab_qa.evaluation import evaluate, qa_game_kwargs, summaries

    agent = LLMAgent(
        HFEngine(model_dir, max_batch_size=cfg.engine.max_batch_size), "m", sampling=SamplingParams(max_new_tokens=cfg.sampling.max_new_tokens, temperature=0.0)
    )
    results = evaluate({"m": agent}, [setting], splits, qa_game_kwargs(cfg), limit=limit, seed=cfg.seed)
    return {split: dict(s) for (_, _, split), s in summaries(results).items()}


def isolated_eval(model_dir: str, cfg, splits: list[str], limit: int | None) -> dict[str, dict[str, float]]:
    """:func:`played_eval` alone with one tool, with the model's own fixed strategies beside it."""
    out = played_eval(model_dir, cfg, splits, limit)
    for split, rewards in fixed_strategies(model_dir, cfg, splits, limit).items():
        out[split].update(rewards)  # beside the split's summary, not instead of it
    return out


def _world_and_game(cfg):
    """The world the run config's collab_qa entries play, and their other options (search cost, ...): the
    prompts the isolated evaluation plays, for what reads the model outside a game."""
    from arena.environments.collab_qa.evaluation import qa_game_kwargs
    from arena.environments.collab_qa.world import WorldConfig

    kwargs = qa_game_kwargs(cfg)
    return WorldConfig.model_validate(kwargs.pop("world", None) or {}), kwargs


def fixed_strategies(model_dir: str, cfg, splits: list[str], limit: int | None) -> dict[str, dict[str, float]]:
    """split -> the rewards of the model made to never search, always search, or search exactly where the
    fact is unknown (merged into :func:`isolated_eval`'s summaries)."""
    from arena.environments.collab_qa.reading import fixed_strategy_rewards, forced_answers
    from arena.environments.collab_qa.world import cached_world

    world, kwargs = _world_and_game(cfg)
    cost = float(kwargs.get("search_cost", 0.05))
    ds = cached_world(world)
    # the prompts the entries play (their search cost, results per search, ...), as the isolated evaluation does
    return {split: fixed_strategy_rewards(forced_answers(model_dir, world, ds.split(split)[:limit], cfg.seed, game_kwargs=kwargs), cost) for split in splits}


def search_decision(model_dir: str, cfg, splits: list[str], limit: int | None) -> dict[str, dict[str, float]]:
    """split -> the probability the model gives ``SEARCH`` as its first move alone with the question's tool
    (arena.environments.collab_qa.reading.search_probabilities), averaged over the facts it knows and those it
    does not, and its AUROC between them (1: every unknown fact searched more readily than every known one;
    0.5: no lean). Greedy play shows only the move that wins; this shows whether the choice leans on what
    the model knows, wherever the threshold falls."""
    from arena.environments.collab_qa.evaluation import auroc
    from arena.environments.collab_qa.reading import search_probabilities
    from arena.environments.collab_qa.world import cached_world

    world, kwargs = _world_and_game(cfg)
    out = {}
    for split in splits:
        questions = cached_world(world).split(split)[:limit]
        p = search_probabilities(model_dir, world, questions, cfg.seed, game_kwargs=kwargs)
        unknown = [0.0 if q.meta.get("known") else 1.0 for q in questions]
        out[split] = {
            "p_search_known": float(np.mean([x for x, u in zip(p, unknown) if not u] or [np.nan])),
            "p_search_unknown": float(np.mean([x for x, u in zip(p, unknown) if u] or [np.nan])),
            "search_auroc": auroc(p, unknown),
        }
    return out


def _main_policy(ckpt: Path) -> Path:
    """The trained policy ``main`` as a checkpoint directory holds it."""
    from arena import checkpoint

    return ckpt / "policies" / checkpoint.policy_dirname("main")


def _after_dir(run_dir: Path) -> str:
    """The trained policy of a run: its last checkpoint's ``main``."""
    from arena import checkpoint

    last = checkpoint.latest(run_dir.parent, run_dir.name)
    if last is None:
        raise SystemExit(f"no checkpoint under {run_dir}")
    return str(_main_policy(last))


def checkpoint_rewards(run_dir: Path, cfg, limit: int | None) -> dict[int, float]:
    """Round -> the isolated reward on the *train* split of the policy each checkpoint of the run saved
    (round 0: the warm start): the questions self-play trained on, never the test or ood questions."""
    out = {}
    for ckpt in sorted((run_dir / "checkpoints").glob("round_*")):
        policy = _main_policy(ckpt)
        if policy.is_dir():
            out[int(ckpt.name.removeprefix("round_"))] = played_eval(str(policy), cfg, ["train"], limit)["train"]["reward"]
    if not out:
        raise SystemExit(f"no checkpoint under {run_dir}")
    return out


def selected_dir(run_dir: Path, rewards: dict[int, float]) -> tuple[int, str]:
    """The checkpoint with the best train-split reward (the latest of equals) and its ``main``."""
    best = max(rewards, key=lambda r: (rewards[r], r))
    return best, str(_main_policy(run_dir / "checkpoints" / f"round_{best:05d}"))


def _stderr_progress(every_s: float = 30.0):
    """A build-progress callback (arena.progress) printing to stderr at most every ``every_s`` seconds,
    and each stage's last step: a first build's stages run for minutes each."""
    last = [-every_s]

    def report(line: str) -> None:
        done = re.search(r"step (\d+)/(\d+)", line)
        now = time.perf_counter()
        if now - last[0] >= every_s or (done and done[1] == done[2]):
            print(f"  building: {line}", file=sys.stderr, flush=True)
            last[0] = now

    return report


def one_run(
    overrides: list[str],
    splits: list[str],
    limit: int | None,
    workdir: Path,
    config: str | None = None,
    kept: bool = False,
    action_supervised: bool = True,
    select: bool = False,
) -> dict:
    """Train one variant (overrides on the quick start), evaluate before and after; the per-split summaries.
    ``kept``: evaluate the run ``workdir`` already holds (from ``--keep``) instead of training; where that
    run's figures were saved (:data:`RESULT_FILE`), only what they lack is measured.
    ``action_supervised``: also the action-supervised baseline (the warm start fine-tuned to search exactly
    where its own closed-book answer is wrong), alone with a tool like the trained model.
    ``select``: the trained model is the checkpoint with the best train-split reward, not the last one."""
    from arena.config import load_config
    from arena.environments.collab_qa.evaluation import demonstration_game
    from arena.environments.collab_qa.knowledge import KnowledgeConfig, cached_action_supervised
    from arena.models import run_model_path
    from arena.progress import build_progress
    from arena.tiny import default_cache_dir

    cfg = load_config(config, [*overrides, f"runs_dir={workdir / 'runs'}", "tracking.traces_per_round=0"])
    run_dir = None
    if kept:  # the run this directory kept (--evaluate-kept): evaluated again, not trained again
        found = sorted(d for d in (workdir / "runs" / cfg.name).glob("*") if (d / "checkpoints").is_dir())
        if len(found) != 1:
            raise SystemExit(f"--evaluate-kept: expected one run of {cfg.name!r} under {workdir / 'runs'}, found {len(found)}")
        run_dir = found[0]
    tick = time.perf_counter()
    with build_progress(_stderr_progress()):  # a first build takes tens of minutes: say where it is
        before_dir = run_model_path(cfg)  # the model the run starts from: the knowledge model (its warm start)
    build_s = time.perf_counter() - tick
    saved = workdir / RESULT_FILE
    out = json.loads(saved.read_text()) if kept and saved.is_file() else _trained_and_evaluated(cfg, splits, limit, before_dir, build_s, run_dir, select)
    if select and "selection" not in out:  # a kept run evaluated at its last checkpoint: every "after" figure again
        again = _trained_and_evaluated(cfg, splits, limit, before_dir, build_s, run_dir, select)
        out = {**out, **again, "seconds": {**out["seconds"], "eval": again["seconds"]["eval"]}}
        out["search_decision"] = {**out.get("search_decision", {}), **again["search_decision"]}
    if "search_decision" not in out:  # a kept run measured before the decision was
        after_dir = _after_dir(workdir / "runs" / cfg.name / out["run_id"])
        out["search_decision"] = {tag: search_decision(d, cfg, splits, limit) for tag, d in (("before", before_dir), ("after", after_dir))}
    if action_supervised and isinstance(cfg.model.warm_start, KnowledgeConfig):
        if "action_supervised" not in out or "action_supervised" not in out["search_decision"]:
            tick = time.perf_counter()
            with build_progress(_stderr_progress()):
                supervised = str(cached_action_supervised(before_dir, cfg.model.warm_start, default_cache_dir(), demonstration_game(cfg)))
            if "action_supervised" not in out:
                out["action_supervised"] = played_eval(supervised, cfg, splits, limit)
            out["search_decision"]["action_supervised"] = search_decision(supervised, cfg, splits, limit)
            out["seconds"]["action_supervised"] = out["seconds"].get("action_supervised", 0.0) + time.perf_counter() - tick
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(out) + "\n")  # --evaluate-kept measures only what a later version adds
    return out


def _trained_and_evaluated(cfg, splits: list[str], limit: int | None, before_dir: str, build_s: float, run_dir: Path | None, select: bool = False) -> dict:
    """:func:`one_run`'s training (none where ``run_dir`` holds the kept run) and its evaluation before and after.
    ``select``: "after" is the checkpoint with the best isolated reward on the train split
    (:func:`checkpoint_rewards`), and the last checkpoint's isolated figures are kept as "last"."""
    from rich.console import Console

    from arena.environments.collab_qa.reading import reading_probe, relay_probe
    from arena.experiment import run

    tick = time.perf_counter()
    if run_dir is None:
        result = run(cfg, Console(file=io.StringIO(), width=160))
        run_dir = result.run_dir
    run_id = run_dir.name
    train_s = time.perf_counter() - tick
    after_dir = _after_dir(run_dir)
    tick = time.perf_counter()
    out: dict = {}
    if select:
        rewards = checkpoint_rewards(run_dir, cfg, limit)
        last_dir, (chosen, after_dir) = after_dir, selected_dir(run_dir, rewards)
        out["selection"] = {"train_reward": {str(r): v for r, v in rewards.items()}, "round": chosen}
        out["last"] = played_eval(last_dir, cfg, splits, limit)
    out.update(before=isolated_eval(before_dir, cfg, splits, limit), after=isolated_eval(after_dir, cfg, splits, limit))
    out["search_decision"] = {tag: search_decision(d, cfg, splits, limit) for tag, d in (("before", before_dir), ("after", after_dir))}
    # unseen pages of the world (its names, every value drawn anew), fresh worlds (names in pieces), its unknown facts
    for key, facts in PROBES.items():
        out[key] = reading_probe(before_dir, cfg.model.warm_start, facts=facts)
    # the game self-play trains in (every seat the model), and each hop of a search's answer through a helper
    out["collaborative"] = {tag: played_eval(d, cfg, ["test"], limit, "collaborative")["test"] for tag, d in (("before", before_dir), ("after", after_dir))}
    for wording in ("trained", "held_out"):  # the test split's wordings, and the ood split's
        key = "relay_probe" if wording == "trained" else "relay_probe_held_out_wording"
        out[key] = {tag: relay_probe(d, cfg.model.warm_start, wording=wording) for tag, d in (("before", before_dir), ("after", after_dir))}
    return {**out, "seconds": {"build": build_s, "train": train_s, "eval": time.perf_counter() - tick}, "run_id": run_id}


def aggregate(runs: list[dict], splits: list[str]) -> dict:
    out: dict = {}
    for split in splits:
        row: dict = {}
        for name, key in METRICS.items():
            for tag in ("before", "after"):
                row[f"{name}_{tag}"] = interval([r[tag][split][key] for r in runs])
        for name in BASELINES:
            row[name] = interval([r["after"][split][name] for r in runs])
            row[f"{name}_before"] = interval([r["before"][split][name] for r in runs])
        row["selectivity_after"] = interval([r["after"][split]["searches_unknown"] - r["after"][split]["searches_known"] for r in runs])
        row["f1_change"] = interval([r["after"][split]["f1"] - r["before"][split]["f1"] for r in runs])  # paired, per seed
        if all(split in r.get("action_supervised", {}) for r in runs):  # the baseline taught the oracle's choice
            for name in ACTION_SUPERVISED:
                row[f"{name}_action_supervised"] = interval([r["action_supervised"][split][METRICS[name]] for r in runs])
            row["selectivity_action_supervised"] = interval(
                [r["action_supervised"][split]["searches_unknown"] - r["action_supervised"][split]["searches_known"] for r in runs]
            )
        if all("last" in r for r in runs):  # with --select-checkpoint: the last checkpoint beside the one chosen
            for name in LAST:
                row[f"{name}_last"] = interval([r["last"][split][METRICS[name]] for r in runs])
            row["selectivity_last"] = interval([r["last"][split]["searches_unknown"] - r["last"][split]["searches_known"] for r in runs])
        decisions = [r.get("search_decision", {}) for r in runs]
        for tag in ("before", "after", "action_supervised"):  # the lean of the choice, wherever greedy play's threshold falls
            if all(split in d.get(tag, {}) for d in decisions):
                for name in DECISION:
                    row[f"{name}_{tag}"] = interval([d[tag][split][name] for d in decisions])
        out[SPLITS.get(split, split)] = row
    return out


#: the collaborative game's figures (test split, every seat the model) in the report
COLLABORATIVE = ("f1", "searches", "searches_known", "searches_unknown", "reward")


def side_tables(runs: list[dict]) -> dict:
    """The collaborative game's test figures and the relay probe per hop, before and after, over seeds."""
    probes = [k for k in ("relay_probe", "relay_probe_held_out_wording") if k in runs[0]]
    out: dict = {"collaborative_test": {}, **{k: {} for k in probes}}
    for tag in ("before", "after"):
        for key in COLLABORATIVE:
            values = [r["collaborative"][tag].get(key) for r in runs]
            if all(v is not None for v in values):
                out["collaborative_test"][f"{key}_{tag}"] = interval(values)
        for probe in probes:
            for hop in runs[0][probe][tag]:
                out[probe][f"{hop}_{tag}"] = interval([r[probe][tag][hop] for r in runs])
    return out


def interval(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "ci95": ci95(values), "values": values}


def checks(table: dict) -> dict:
    """The paper's shape, per split: searches at least halved, F1 not lower within the interval, selective AUC up."""
    out = {}
    for split, row in table.items():
        sb, sa = row["searches_per_question_before"]["mean"], row["searches_per_question_after"]["mean"]
        out[split] = {
            "searches_halved": bool(sa <= sb / 2),
            "search_reduction_x": float(sb / sa) if sa > 0 else float("inf"),
            # paired over seeds: the mean change of F1 from before to after is not negative
            "f1_not_lower": bool(row["f1_change"]["mean"] >= 0),
            "selective_auc_improved": bool(row["selective_auc_after"]["mean"] > row["selective_auc_before"]["mean"]),
            "selective_auc_p_improved": bool(row["selective_auc_p_after"]["mean"] > row["selective_auc_p_before"]["mean"]),
            "n_questions_at_least_200": bool(min(row["n_questions_after"]["values"]) >= 200),
            # the targets: searches where unknown exceed those where known by 0.5 (test) / 0.3 (ood)
            "selective_searching": bool(row["selectivity_after"]["mean"] >= (0.5 if split == "in_distribution" else 0.3)),
            "reward_beats_never_and_always_search": bool(
                row["reward_after"]["mean"] > max(row["reward_never_search"]["mean"], row["reward_always_search"]["mean"])
            ),
        }
        if "reward_action_supervised" in row:  # the paper's supervised-actions baseline, beside self-play
            out[split]["reward_beats_action_supervised"] = bool(row["reward_after"]["mean"] > row["reward_action_supervised"]["mean"])
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--first-seed", type=int, default=0, help="the seeds run are FIRST_SEED .. FIRST_SEED+SEEDS-1 (more seeds for a kept set: --keep the same DIR)"
    )
    ap.add_argument("--quick", action="store_true", help="1 seed, 2 training rounds, the first 16 questions of each split")
    ap.add_argument("--limit", type=int, default=None, help="only the first N questions of each split")
    ap.add_argument("--no-deanonymised", action="store_true", help="skip the de-anonymised variant")
    ap.add_argument("--keep", metavar="DIR", default=None, help="keep the runs (episodes, checkpoints, MLflow store) in DIR instead of a temporary directory")
    ap.add_argument(
        "--evaluate-kept",
        action="store_true",
        help="with --keep DIR holding the runs of an earlier call with the same arguments: evaluate those runs again, without training",
    )
    ap.add_argument("--no-action-supervised", action="store_true", help="skip the action-supervised baseline (built once per seed's warm start, then cached)")
    ap.add_argument(
        "--select-checkpoint",
        action="store_true",
        help="the trained model is the run's checkpoint with the best isolated reward on the train split (round 0, the warm start, "
        "included), not its last one; the last one's figures are reported with a _last suffix",
    )
    ap.add_argument("--config", default=None, help="a run config to reproduce instead of the quick start's (its collab_qa entries)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    args = ap.parse_args(argv)
    if args.evaluate_kept and not (args.keep and Path(args.keep).is_dir()):
        ap.error("--evaluate-kept needs --keep DIR naming the directory an earlier call kept its runs in")
    seeds = 1 if args.quick else args.seeds
    overrides = list(args.overrides)
    limit = args.limit
    if args.quick:
        overrides = ["trainer.rounds=2", "episodes_per_matchup=4", *overrides]
        limit = limit or 16
    splits = list(SPLITS)
    started = time.perf_counter()
    from arena.config import load_config

    base = load_config(args.config, overrides)
    variants = {"anonymous": []}
    if not args.no_deanonymised:
        # the collaborative entries with each helper's corpus shown to the asker
        games = [g.model_dump(mode="json") for g in base.games]
        for g in games:
            if g["kwargs"].get("helpers", 2) > 0:
                g["kwargs"]["reveal_helpers"] = True
        variants["deanonymised"] = [f"games={json.dumps(games)}"]
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory(prefix="csp-") as tmp:
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        for seed in range(args.first_seed, args.first_seed + seeds):
            seeded = [f"seed={seed}", f"model.warm_start.seed={seed}", *overrides]
            baseline = not args.no_action_supervised  # built from the warm start, which both variants share
            for v, extra in variants.items():
                print(f"seed {seed}, {v}: {'evaluating' if args.evaluate_kept else 'training and evaluating'}", file=sys.stderr, flush=True)
                runs[v].append(
                    one_run(
                        [*seeded, *extra],
                        splits,
                        limit,
                        Path(tmp) / f"{v}-{seed}",
                        args.config,
                        args.evaluate_kept,
                        baseline and v == "anonymous",
                        args.select_checkpoint,
                    )
                )
                # each run's own figures as soon as it ends: a later failure loses nothing
                print(f"run {json.dumps({'variant': v, 'seed': seed, **runs[v][-1]})}", file=sys.stderr, flush=True)
    table = aggregate(runs["anonymous"], splits)
    report = {
        "benchmark": "csp_reproduction",
        "setting": "isolated (one agent, the search tool of the question's corpus), greedy",
        "seeds": seeds,
        "first_seed": args.first_seed,
        "config": args.config or "the quick start",
        "overrides": overrides,
        "evaluated_kept_runs": bool(args.evaluate_kept),
        "limit": limit,
        "checkpoint": "best isolated train-split reward" if args.select_checkpoint else "last",
        **({"selected_round": [r.get("selection", {}).get("round") for r in runs["anonymous"]]} if args.select_checkpoint else {}),
        **{key: interval([r[key] for r in runs["anonymous"]]) for key in PROBES},
        "reading_probe_target": 0.9,
        **table,
        "checks": checks(table),
        **side_tables(runs["anonymous"]),
        "seconds": {v: [r["seconds"] for r in rs] for v, rs in runs.items()},
        "total_seconds": time.perf_counter() - started,
    }
    if "deanonymised" in runs:
        deanon = aggregate(runs["deanonymised"], splits)
        report["deanonymised"] = {**deanon, "checks": checks(deanon)}
        # the paper's ablation: with the helpers' tools shown, the trained model calibrates worse (isolated, test)
        report["deanonymised_calibrates_worse"] = {
            key: bool(deanon["in_distribution"][f"{key}_after"]["mean"] < table["in_distribution"][f"{key}_after"]["mean"])
            for key in ("selective_auc", "selective_auc_p")
        }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
