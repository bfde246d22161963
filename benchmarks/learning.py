"""Does self-play training learn? Before/after evaluations over several seeds.

Each experiment trains the warm-started tiny model with the real `arena run`
machinery (in process), evaluates it on fixed seeds before and after, and
repeats over seeds. Prints one JSON object per experiment with ``before``,
``after``, ``ci95`` (95% t-interval of the per-seed change, over seeds) and
``minutes`` (mean wall-clock per seed on this machine).

    python benchmarks/learning.py                      # every experiment, 3 seeds
    python benchmarks/learning.py --experiments pd_vs_tit_for_tat --seeds 0 1 2
    python benchmarks/learning.py --quick              # a smoke run: few rounds, 1 seed
    python benchmarks/learning.py --runtime ray ...    # on Ray: 2 rollout workers, 2 engines, a 2-worker learner
    python benchmarks/learning.py --experiments negotiation_seller_vs_fair_buyer --max-staleness 0 1
                                                       # synchronous and asynchronous rollouts, same seeds;
                                                       # then one line comparing their changes
    python benchmarks/learning.py --experiments negotiation_seller_vs_fair_buyer --adapter full lora
                                                       # full fine-tuning and a LoRA adapter (model.adapter),
                                                       # same seeds; then one line comparing their changes
    python benchmarks/learning.py --experiments negotiation_seller_and_buyer --adapter lora --lora-lr 2.5e-3 --rounds 30 \
        --seeds 0 1 2 3 4 5 6 7                        # seller and buyer as two adapters: both improve significantly
                                                       # over eight seeds (at lr 5e-3 and 20 rounds, the buyer does not)
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from arena.config import RunConfig
from arena.experiment import RunResult, run

PD = "repeated_matrix-v0"
NEG = "negotiation-v0"


def pd_vs_tit_for_tat(rounds: int) -> dict[str, Any]:
    return {
        "name": "pd_vs_tit_for_tat",
        "episodes_per_matchup": 32,
        "games": [{"id": PD, "kwargs": {"matrix": "prisoners_dilemma", "rounds": 10}, "matchups": [{"player_0": "main", "player_1": "scripted/tit_for_tat"}]}],
        "trainer": {"recipe": "pg", "rounds": rounds, "group_size": 4, "groups_per_matchup": 8, "advantage": "group_mean", "lr": 1e-3, "kl_coef": 0.02},
    }


def negotiation_seller(rounds: int) -> dict[str, Any]:
    return {
        "name": "negotiation_seller_vs_fair_buyer",
        "episodes_per_matchup": 32,
        "games": [{"id": NEG, "matchups": [{"seller": "main", "buyer": "scripted/fair_buyer"}]}],
        "trainer": {"recipe": "pg", "rounds": rounds, "group_size": 4, "groups_per_matchup": 8, "advantage": "group_mean", "lr": 1e-3, "kl_coef": 0.02},
    }


def negotiation_seller_and_buyer(rounds: int) -> dict[str, Any]:
    """Two trained policies in one run, a seller and a buyer, each against the other role's fair bot
    (with ``--adapter lora``: two adapters of one base, served by one engine)."""
    return {
        "name": "negotiation_seller_and_buyer",
        "episodes_per_matchup": 32,
        "games": [
            {"id": NEG, "matchups": [{"seller": "main/seller", "buyer": "scripted/fair_buyer"}, {"seller": "scripted/fair_seller", "buyer": "main/buyer"}]}
        ],
        "trainer": {"recipe": "pg", "rounds": rounds, "group_size": 4, "groups_per_matchup": 8, "advantage": "group_mean", "lr": 1e-3, "kl_coef": 0.02},
    }


def negotiation_selfplay(rounds: int, role_baseline: bool) -> dict[str, Any]:
    return {
        "name": f"negotiation_selfplay_role_baseline_{'on' if role_baseline else 'off'}",
        "episodes_per_matchup": 16,
        "games": [
            {"id": NEG, "name": "selfplay", "matchups": [{"seller": "main", "buyer": "main"}]},
            {
                "id": NEG,
                "name": "vs_bots",
                "eval_only": True,
                "matchups": [{"seller": "main", "buyer": "scripted/fair_buyer"}, {"seller": "scripted/fair_seller", "buyer": "main"}],
            },
            # the trained policy in each role against its own starting weights (snapshot = main@0 in evaluation)
            {"id": NEG, "name": "vs_start", "eval_only": True, "matchups": [{"seller": "main", "buyer": "snapshot"}, {"seller": "snapshot", "buyer": "main"}]},
        ],
        # no group baseline: the comparison is a running baseline per (game, role) against one per game
        "trainer": {
            "recipe": "pg",
            "rounds": rounds,
            "group_size": 1,
            "groups_per_matchup": 32,
            "advantage": "none",
            "baseline": "per_role" if role_baseline else "per_game",
            "lr": 5e-4,
            "kl_coef": 0.05,
            "snapshot_every": 10_000,
        },
    }


def seat_mean(episodes, player: str, value: Callable) -> float:
    vals = [value(ep) for ep in episodes if ep.matchup.seats.get(player, "").startswith("main")]
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def measure_pd(res: RunResult) -> dict[str, float]:
    per_round = lambda ep: ep.returns["player_0"] / ep.metrics.get("rounds_played", 10) if ep.metrics.get("rounds_played") else ep.returns["player_0"] / 10
    return {"before": seat_mean(res.before, "player_0", per_round), "after": seat_mean(res.after, "player_0", per_round)}


def measure_seller(res: RunResult) -> dict[str, float]:
    price = lambda ep: ep.metrics.get("price") if ep.metrics.get("deal") else None
    deal = lambda ep: ep.metrics.get("deal", 0.0)
    return {
        "before": seat_mean(res.before, "seller", price),
        "after": seat_mean(res.after, "seller", price),
        "deal_rate_before": seat_mean(res.before, "seller", deal),
        "deal_rate_after": seat_mean(res.after, "seller", deal),
    }


def measure_two_roles(res: RunResult) -> dict[str, float]:
    """Each trained role's return against the other role's bot; the headline is their mean."""
    out = {}
    for role in ("seller", "buyer"):
        for when, eps in (("before", res.before), ("after", res.after)):
            out[f"{role}_{when}"] = seat_mean(eps, role, lambda ep, r=role: ep.returns[r])
    out["before"] = (out["seller_before"] + out["buyer_before"]) / 2
    out["after"] = (out["seller_after"] + out["buyer_after"]) / 2
    return out


def measure_selfplay(res: RunResult) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    out: dict[str, Any] = {}
    for role in ("seller", "buyer"):
        hist = sorted(client.get_metric_history(res.run_id, f"train/selfplay/return/{role}/main"), key=lambda m: m.step)
        out[f"curve_{role}"] = [round(m.value, 4) for m in hist]
        vs = [e for e, lab in zip(res.before, res.labels) if lab == "vs_bots"]
        va = [e for e, lab in zip(res.after, res.labels) if lab == "vs_bots"]
        out[f"{role}_vs_bot_before"] = seat_mean(vs, role, lambda ep, r=role: ep.returns[r])
        out[f"{role}_vs_bot_after"] = seat_mean(va, role, lambda ep, r=role: ep.returns[r])
        for when, eps in (("before", res.before), ("after", res.after)):
            vs = [e for e, lab in zip(eps, res.labels) if lab == "vs_start"]
            out[f"{role}_vs_start_{when}"] = seat_mean(vs, role, lambda ep, r=role: ep.returns[r])
    # headline: the model's mean return over both roles against its own starting weights
    out["before"] = (out["seller_vs_start_before"] + out["buyer_vs_start_before"]) / 2
    out["after"] = (out["seller_vs_start_after"] + out["buyer_vs_start_after"]) / 2
    out["vs_bots_before"] = (out["seller_vs_bot_before"] + out["buyer_vs_bot_before"]) / 2
    out["vs_bots_after"] = (out["seller_vs_bot_after"] + out["buyer_vs_bot_after"]) / 2
    return out


SD = "social_deduction-v0"
#: the published 5-player game's seats with the scripted crew and impostor: warm-start demonstrations
SD_DEMO_SEATS = {**{f"crew_{i}": "scripted/crew" for i in range(1, 5)}, "impostor": "scripted/impostor"}


def social_deduction_crew(rounds: int) -> dict[str, Any]:
    return {
        "name": "social_deduction_crew",
        "episodes_per_matchup": 32,
        "games": [{"id": SD, "kwargs": {"quick": True}, "matchups": [{"crew_1": "main", "crew_2": "main", "crew_3": "main", "impostor": "scripted/impostor"}]}],
        # the run plays only this game, so the warm start imitates its scripted crew and impostor
        # (demonstrations carry no game kwargs: they come from the published game, play is quick)
        "model": {"warm_start": {"steps": 300, "batch_size": 16, "episodes_per_seating": 8, "seatings": [[SD, SD_DEMO_SEATS]]}},
        "sampling": {"max_new_tokens": 32},
        "trainer": {"recipe": "pg", "rounds": rounds, "group_size": 4, "groups_per_matchup": 8, "advantage": "group_mean", "lr": 1e-3, "kl_coef": 0.02},
    }


def measure_crew(res: RunResult) -> dict[str, float]:
    win = lambda ep: ep.metrics["crew_win"]
    votes = lambda ep: ep.metrics.get("vote_accuracy")
    return {
        "before": seat_mean(res.before, "crew_1", win),
        "after": seat_mean(res.after, "crew_1", win),
        "vote_accuracy_before": seat_mean(res.before, "crew_1", votes),
        "vote_accuracy_after": seat_mean(res.after, "crew_1", votes),
    }


DEBATE = "debate-v0"
#: the debate bots against each other: warm-start demonstrations (as in configs/debate_dpo.yaml, so the two share a cache)
DEBATE_DEMO_SEATINGS = [
    [DEBATE, {"debater_0": f"scripted/{a}", "debater_1": f"scripted/{b}"}]
    for a, b in [
        ("honest", "stubborn_wrong"),
        ("sycophant", "stubborn_wrong"),
        ("stubborn_wrong", "honest"),
        ("sycophant", "honest"),
        ("honest", "sycophant"),
        ("stubborn_wrong", "sycophant"),
    ]
]


def debate_dpo(rounds: int) -> dict[str, Any]:
    return {
        "name": "debate_dpo",
        "episodes_per_matchup": 32,
        # binary questions, one debate round: the trained debater's reply after the openings is its final answer
        "games": [
            {
                "id": DEBATE,
                "kwargs": {"question_kinds": ["true_false"], "rounds": 1},
                "matchups": [{"debater_0": "main", "debater_1": "scripted/stubborn_wrong"}],
            }
        ],
        "model": {"warm_start": {"steps": 200, "batch_size": 16, "episodes_per_seating": 8, "seatings": DEBATE_DEMO_SEATINGS}},
        "sampling": {"max_new_tokens": 40, "temperature": 0.7},
        # after the branch only the scripted opponent moves: one rollout per continuation scores it exactly
        "trainer": {
            "recipe": "dpo",
            "rounds": rounds,
            "group_size": 1,
            "groups_per_matchup": 16,
            "tree_branches": 4,
            "tree_rollouts": 1,
            "dpo_beta": 0.1,
            "lr": 5e-4,
            "batch_size": 32,
        },
    }


def measure_debate(res: RunResult) -> dict[str, float]:
    def mean(episodes, name: str) -> float:
        return seat_mean(episodes, "debater_0", lambda ep: ep.metrics.get(f"{name}/debater_0"))

    return {
        "before": mean(res.before, "final_correct"),
        "after": mean(res.after, "final_correct"),
        "initial_accuracy_before": mean(res.before, "initial_correct"),
        "initial_accuracy_after": mean(res.after, "initial_correct"),
        "flips_to_wrong_before": mean(res.before, "flips_to_wrong"),
        "flips_to_wrong_after": mean(res.after, "flips_to_wrong"),
        "flips_to_right_before": mean(res.before, "flips_to_right"),
        "flips_to_right_after": mean(res.after, "flips_to_right"),
    }


EXPERIMENTS: dict[str, tuple[Callable[[int], dict], Callable[[RunResult], dict], str]] = {
    "pd_vs_tit_for_tat": (pd_vs_tit_for_tat, measure_pd, "mean payoff per round of the trained player vs tit-for-tat"),
    "negotiation_seller_vs_fair_buyer": (negotiation_seller, measure_seller, "mean deal price of the trained seller vs a fair buyer"),
    "negotiation_seller_and_buyer": (
        negotiation_seller_and_buyer,
        measure_two_roles,
        "two trained policies in one run (seller, buyer), each vs the other role's fair bot: mean return of both (each role's change alongside)",
    ),
    "negotiation_selfplay_role_baseline_off": (
        lambda r: negotiation_selfplay(r, False),
        measure_selfplay,
        "shared-policy self-play, one running baseline per game: mean return of both roles vs the starting policy (vs bots alongside)",
    ),
    "negotiation_selfplay_role_baseline_on": (
        lambda r: negotiation_selfplay(r, True),
        measure_selfplay,
        "shared-policy self-play, one running baseline per role: mean return of both roles vs the starting policy (vs bots alongside)",
    ),
    "social_deduction_crew": (social_deduction_crew, measure_crew, "crew win rate of the trained crew (3 seats, quick setting) vs the scripted impostor"),
    "debate_dpo": (
        debate_dpo,
        measure_debate,
        "final accuracy of the debater trained by DPO from debate trees (true/false questions) vs a stubborn wrong debater, oracle judge",
    ),
}


def _ci95(values: list[float]) -> float:
    n = len(values)
    if n < 2:
        return float("nan")
    t = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}.get(n, 1.96)
    return float(t * np.std(values, ddof=1) / math.sqrt(n))


#: cluster settings of ``--runtime ray``: the Ray runtime on this machine (arena.distributed)
RAY_CLUSTER = {"mode": "ray", "rollout_workers": 2, "engines": 2, "learner_workers": 2}


#: model.lora of ``--adapter lora`` (the config's default shape)
LORA = {"rank": 8, "alpha": 16}


def run_experiment(
    name: str,
    seeds: list[int],
    rounds: int,
    workdir: Path,
    runtime: str = "local",
    max_staleness: int = 0,
    adapter: str = "full",
    lora_lr: float | None = None,
    eval_episodes: int | None = None,
) -> dict[str, Any]:
    build, measure, what = EXPERIMENTS[name]
    per_seed, minutes = [], []
    for seed in seeds:
        data = build(rounds)
        data["trainer"]["max_staleness"] = max_staleness
        if eval_episodes is not None:
            data["episodes_per_matchup"] = eval_episodes
        if adapter == "lora":  # every trained policy a LoRA adapter of the frozen base
            data["model"] = {**data.get("model", {}), "adapter": "lora", "lora": dict(LORA)}
            if lora_lr is not None:
                data["trainer"]["lr"] = lora_lr
        data.update(
            seed=seed,
            runs_dir=str(workdir / "runs"),
            tracking={"uri": f"sqlite:///{workdir / 'mlflow.db'}", "experiment": "learning-benchmark", "traces_per_round": 4},
        )
        if runtime == "ray":
            data["cluster"] = dict(RAY_CLUSTER)
        cfg = RunConfig.model_validate(data)
        t0 = time.perf_counter()
        res = run(cfg, Console(quiet=True))
        minutes.append((time.perf_counter() - t0) / 60)
        per_seed.append({"seed": seed, **measure(res)})
    change = [s["after"] - s["before"] for s in per_seed]
    out = {
        "experiment": name,
        "measure": what,
        "seeds": seeds,
        "rounds": rounds,
        "before": round(float(np.mean([s["before"] for s in per_seed])), 4),
        "after": round(float(np.mean([s["after"] for s in per_seed])), 4),
        "change": round(float(np.mean(change)), 4),
        "ci95": round(_ci95(change), 4),
        "minutes": round(float(np.mean(minutes)), 2),
        "runtime": runtime,
        "max_staleness": max_staleness,
        "adapter": adapter,
        "lr": data["trainer"]["lr"],
        "eval_episodes_per_matchup": data.get("episodes_per_matchup", 8),
        "per_seed": per_seed,
    }
    for key in sorted(k[: -len("_before")] for k in per_seed[0] if k.endswith("_before") and f"{k[: -len('_before')]}_after" in per_seed[0]):
        parts = [s[f"{key}_after"] - s[f"{key}_before"] for s in per_seed]  # each part of the headline, its own interval
        out[f"{key}_change"], out[f"{key}_ci95"] = round(float(np.mean(parts)), 4), round(_ci95(parts), 4)
    out["change_exceeds_ci95"] = bool(len(change) > 1 and out["change"] > out["ci95"])
    if name == "negotiation_seller_vs_fair_buyer":
        b = np.mean([s["deal_rate_before"] for s in per_seed])
        a = np.mean([s["deal_rate_after"] for s in per_seed])
        out.update(deal_rate_before=round(float(b), 4), deal_rate_after=round(float(a), 4), deal_rate_kept=bool(a >= 0.8 * b))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", nargs="*", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="3 rounds, 1 seed: checks the script, measures nothing")
    ap.add_argument("--runtime", choices=["local", "ray"], default="local", help="ray: rollout workers, engine actors and a Ray Train learner")
    ap.add_argument(
        "--max-staleness", nargs="*", type=int, default=[0], help="trainer.max_staleness: 0 = synchronous, 1 = round k+1 plays while round k learns"
    )
    ap.add_argument("--adapter", nargs="*", choices=["full", "lora"], default=["full"], help="model.adapter: full fine-tuning, or a LoRA adapter per policy")
    ap.add_argument("--lora-lr", type=float, default=5e-3, help="trainer.lr of --adapter lora runs (full runs keep the experiment's)")
    ap.add_argument("--eval-episodes", type=int, help="episodes_per_matchup of the before/after evaluation (default: the experiment's)")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.rounds = args.seeds[:1], 3
    variants = [(s, a) for a in args.adapter for s in args.max_staleness]
    with tempfile.TemporaryDirectory(prefix="arena-learning-") as tmp:
        for name in args.experiments:
            results = []
            for staleness, adapter in variants:
                workdir = Path(tmp) / f"{name}-staleness{staleness}-{adapter}"
                results.append(run_experiment(name, args.seeds, args.rounds, workdir, args.runtime, staleness, adapter, args.lora_lr, args.eval_episodes))
                print(json.dumps(results[-1]), flush=True)
            base = results[0]
            for other in results[1:]:  # each other variant's change against the first one's interval
                gap = other["change"] - base["change"]
                label = lambda r: f"max_staleness {r['max_staleness']}, {r['adapter']}"
                print(
                    json.dumps(
                        {
                            "experiment": name,
                            "compare": f"{label(other)} vs {label(base)}",
                            "change": [base["change"], other["change"]],
                            "ci95": [base["ci95"], other["ci95"]],
                            "difference": round(gap, 4),
                            "within_base_ci95": bool(abs(gap) <= base["ci95"]),
                            "per_seed_change": [[round(s["after"] - s["before"], 4) for s in r["per_seed"]] for r in (base, other)],
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
