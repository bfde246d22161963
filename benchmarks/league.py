"""Does a league make self-play improve? Negotiation self-play with a rated opponent pool.

The warm-started tiny model, one policy per role (or one shared, ``--shared``), plays ``negotiation-v0``
against ``league`` seats: each training group draws its opponent from a growing pool of the other
role's past snapshots plus the scripted bots of that role, by prioritized fictitious self-play (``pfsp``) or uniformly
(``uniform``, the comparison). Every evaluated and trained episode updates OpenSkill ratings.

Reported per variant, over seeds (95% t-intervals, per-seed values): the latest policy's rating
and its round-0 self's, their gap, and the latest policy's mean return (both roles) against its
round-0 self and against the bots, before and after training. Prints one JSON object.

    python benchmarks/league.py [--seeds 0 1 2] [--rounds 20] [--groups 8] [--variants pfsp uniform] [--shared]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from arena.config import RunConfig
from arena.experiment import run

NEG = "negotiation-v0"


def config(seed: int, rounds: int, matchmaking: str, per_role: bool, workdir: Path, groups: int = 4) -> dict[str, Any]:
    seller, buyer = ("main/seller", "main/buyer") if per_role else ("main", "main")
    return {
        "name": f"league_{matchmaking}_{'per_role' if per_role else 'shared'}_s{seed}",
        "seed": seed,
        "episodes_per_matchup": 16,
        "runs_dir": str(workdir / "runs"),
        "model": {"games": ["repeated_matrix-v0", "negotiation-v0"]},  # the tiny model the other benchmarks use
        "games": [
            # training: each role against the league; in evaluation the league seat is the round-0 snapshot
            {"id": NEG, "name": "vs_league", "matchups": [{"seller": seller, "buyer": "league"}, {"seller": "league", "buyer": buyer}]},
            {
                "id": NEG,
                "name": "vs_bots",
                "eval_only": True,
                "matchups": [{"seller": seller, "buyer": "scripted/fair_buyer"}, {"seller": "scripted/fair_seller", "buyer": buyer}],
            },
        ],
        "league": {
            "matchmaking": matchmaking,
            "snapshot_every": 2,
            "max_snapshots": 6,
            "bots": {"buyer": ["scripted/fair_buyer", "scripted/hard_buyer"], "seller": ["scripted/fair_seller", "scripted/hard_seller"]},
        },
        "trainer": {"recipe": "pg", "rounds": rounds, "group_size": 4, "groups_per_matchup": groups, "advantage": "group_mean", "lr": 1e-3, "kl_coef": 0.02},
        "tracking": {"uri": f"sqlite:///{workdir / 'mlflow.db'}", "experiment": "league_benchmark", "traces_per_round": 4},
    }


def trained_return(episodes, labels, entry: str, trained: set[str]) -> float:
    """Mean return of the trained seats (both roles) in one entry's episodes."""
    values = [ep.returns[p] for ep, label in zip(episodes, labels) if label == entry for p, pid in ep.matchup.seats.items() if pid in trained]
    return float(np.mean(values))


def one_seed(seed: int, rounds: int, matchmaking: str, per_role: bool, groups: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig.model_validate(config(seed, rounds, matchmaking, per_role, Path(tmp), groups))
        tick = time.perf_counter()
        result = run(cfg, Console(quiet=True))
        minutes = (time.perf_counter() - tick) / 60
    trained = {"main/seller", "main/buyer"} if per_role else {"main"}
    ratings = result.ratings
    out: dict[str, Any] = {"seed": seed, "minutes": round(minutes, 2)}
    gaps = []
    for pid in sorted(trained):
        latest, start = ratings.get(f"{pid}@{rounds}"), ratings.get(f"{pid}@0")
        out[f"rating_latest/{pid}"] = latest.as_dict()
        out[f"rating_round0/{pid}"] = start.as_dict()
        gaps.append(latest.mu - start.mu)
    out["rating_gap_mu"] = float(np.mean(gaps))
    out["ordinal_latest_above_round0_mu_plus_3sigma"] = all(
        ratings.get(f"{pid}@{rounds}").ordinal > ratings.get(f"{pid}@0").mu + 3 * ratings.get(f"{pid}@0").sigma for pid in trained
    )
    for entry in ("vs_league", "vs_bots"):  # vs_league in evaluation = against the round-0 snapshot
        name = "vs_round0" if entry == "vs_league" else entry
        out[f"return_{name}_before"] = trained_return(result.before, result.labels, entry, trained)
        out[f"return_{name}_after"] = trained_return(result.after, result.labels, entry, trained)
    out["top_ratings"] = [(k, round(r.mu, 2), round(r.sigma, 2)) for k, r in ratings.ranked()[:8]]
    return out


#: two-sided 95% quantiles of Student's t, by degrees of freedom 1..10
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def interval(values: list[float]) -> dict[str, Any]:
    a = np.asarray(values, dtype=float)
    t = _T975[len(a) - 2] if 2 <= len(a) <= 11 else 1.96
    half = float(t * a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")
    return {"mean": round(float(a.mean()), 4), "ci95": round(half, 4), "values": [round(float(v), 4) for v in a]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--variants", nargs="+", default=["pfsp", "uniform"], choices=["pfsp", "uniform", "latest"])
    parser.add_argument("--shared", action="store_true", help="one policy for both roles instead of one per role (main/seller, main/buyer)")
    parser.add_argument("--groups", type=int, default=8, help="training groups of 4 episodes per seating and round")
    args = parser.parse_args()
    out: dict[str, Any] = {
        "game": NEG,
        "rounds": args.rounds,
        "groups_per_matchup": args.groups,
        "seeds": args.seeds,
        "per_role": not args.shared,
        "machine": platform.platform(),
    }
    for variant in args.variants:
        per_seed = [one_seed(s, args.rounds, variant, not args.shared, args.groups) for s in args.seeds]
        summary = {
            key: interval([p[key] for p in per_seed])
            for key in ("rating_gap_mu", "return_vs_round0_before", "return_vs_round0_after", "return_vs_bots_before", "return_vs_bots_after")
        }
        gap = summary["rating_gap_mu"]
        summary["latest_outrates_round0_beyond_ci95"] = gap["mean"] - gap["ci95"] > 0
        summary["minutes_per_seed"] = round(float(np.mean([p["minutes"] for p in per_seed])), 2)
        out[variant] = {"summary": summary, "per_seed": per_seed}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
